//! `[websocket] max_connections` held across every host of a cluster
//! (`max_connections_per = "cluster"`, the default), on what Redis gives: each
//! open connection is a lease in the app's sorted set `alorig:ws-conns:<app>`
//! (member: the connection id, score: when the lease lapses, by Redis's clock).
//! An upgrade is admitted by one script that drops the lapsed leases, counts
//! the rest and adds its own only below the limit, so two hosts cannot both
//! take the last place. Each host renews its connections' leases every
//! [`RENEW`] and removes a lease when its connection ends; the leases of a
//! host that dies without a word (SIGKILL, power loss) stop counting after
//! [`LEASE`]. No membership of hosts is kept: a lease is a connection.
//!
//! Without `redis_url` the app's count on this host is the limit. With Redis
//! not answering within [`ADMIT_WAIT`] an upgrade is judged by this host's
//! count alone (and a warning logged) rather than refused: the limit then
//! holds per host until Redis is back, when the renewal puts every live
//! connection back in the count (which may then be over the limit for a while:
//! only new upgrades are refused).

use super::{Error, fanout::Fanout, hub::Hub};
use std::{collections::HashMap, sync::Weak, time::Duration};

/// How long a lease counts without being renewed.
pub(super) const LEASE: Duration = Duration::from_secs(10);
/// How often a host renews the leases of its connections.
pub(super) const RENEW: Duration = Duration::from_secs(3);
/// Longest an upgrade waits for Redis to admit it.
pub(super) const ADMIT_WAIT: Duration = Duration::from_millis(500);
/// Leases renewed by one script call.
const RENEW_BATCH: usize = 1000;

/// The app's sorted set of connection leases.
pub(super) fn key(app: &str) -> String {
    format!("alorig:ws-conns:{app}")
}

/// KEYS[1] the set; ARGV: limit, lease ms, connection id. 1: admitted.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1] the set; ARGV: lease ms, then the connection ids to renew.
const RENEW_SCRIPT: &str = r"
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
";

impl Fanout {
    /// Takes a place for connection `id` of `app` if fewer than `max` leases
    /// are live across the cluster.
    pub(super) async fn admit(&self, app: &str, id: &str, max: u32) -> Result<bool, Error> {
        let _order = self.leases.lock().await;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ADMIT)
            .arg(1)
            .arg(key(app))
            .arg(max)
            .arg(LEASE.as_millis() as u64)
            .arg(id);
        let admitted: i64 = self
            .call(|mut m| async move { cmd.query_async(&mut m).await })
            .await?;
        Ok(admitted == 1)
    }

    /// Gives connection `id`'s place back.
    pub(super) async fn release(&self, app: &str, id: &str) {
        // After a renewal that may still name this connection, never before it.
        let _order = self.leases.lock().await;
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(key(app)).arg(id);
        // Unreachable Redis: the lease lapses by itself.
        let _: Result<i64, _> = self
            .call(|mut m| async move { cmd.query_async(&mut m).await })
            .await;
    }

    /// Renews the leases of this host's connections (by app), and puts them
    /// back after Redis lost them (a restart, an outage longer than [`LEASE`]).
    async fn renew(&self, hub: &Hub) {
        let _order = self.leases.lock().await;
        let mut by_app: HashMap<String, Vec<String>> = HashMap::new();
        for (app, id) in hub.leased() {
            by_app.entry(app).or_default().push(id);
        }
        for (app, ids) in by_app {
            for batch in ids.chunks(RENEW_BATCH) {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RENEW_SCRIPT)
                    .arg(1)
                    .arg(key(&app))
                    .arg(LEASE.as_millis() as u64)
                    .arg(batch);
                let _: Result<i64, _> = self
                    .call(|mut m| async move { cmd.query_async(&mut m).await })
                    .await;
            }
        }
    }
}

/// Renews this host's leases every [`RENEW`] for as long as the hub lives.
pub(super) fn keep_renewing(hub: Weak<Hub>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RENEW);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            let Some(fanout) = hub.fanout() else { return };
            fanout.renew(&hub).await;
        }
    });
}
