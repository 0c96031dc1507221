//! The cross-host side of the hub: the host's own Redis connection (not an
//! app's ACL user) carrying group channels `alorig:ws:<app>:<group>` and each
//! host's `alorig:ws-host:<host id>` channel, re-subscribed after Redis restarts;
//! and the connection leases that make `max_connections` cluster-wide (`leases.rs`).

use super::{Error, hub::Hub};
use redis::{AsyncCommands as _, aio::ConnectionManager};
/// Bound on one Redis call (publish, subscribe).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

use std::{
    collections::HashSet,
    sync::{
        Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// Prefix of every group channel.
pub(super) const GROUP_CHANNEL: &str = "alorig:ws:";

pub fn group_channel(app: &str, group: &str) -> String {
    format!("{GROUP_CHANNEL}{app}:{group}")
}

pub(super) fn host_channel(host: &str) -> String {
    format!("alorig:ws-host:{host}")
}

/// The host's Redis connection for WebSocket fan-out: one connection manager
/// (RESP3: publishes and subscriptions on one socket), re-made by the redis
/// crate when it breaks; the retry task below subscribes again after that.
pub(super) struct Fanout {
    manager: ConnectionManager,
    /// Channels subscribed now; the lock also puts subscription changes in order.
    subscribed: tokio::sync::Mutex<HashSet<String>>,
    /// A subscription change failed (Redis down): retried every second.
    behind: AtomicBool,
    /// The connection to Redis broke: every subscription is made again.
    lost: AtomicBool,
    /// Puts lease changes in order (`leases.rs`): a renewal never re-adds a
    /// lease released while it ran.
    pub(super) leases: tokio::sync::Mutex<()>,
}

impl Fanout {
    pub(super) fn new(url: &str, hub: Weak<Hub>, host_id: &str) -> redis::RedisResult<Fanout> {
        use redis::IntoConnectionInfo as _;
        let info = url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let receiver = hub.clone();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_automatic_resubscription()
            .set_push_sender(move |push: redis::PushInfo| -> Result<(), ()> {
                // A host that only listens sends no command that would notice
                // Redis coming back: the retry task re-subscribes, which reconnects.
                if push.kind == redis::PushKind::Disconnection
                    && let Some(fanout) = receiver.upgrade().as_deref().and_then(Hub::fanout)
                {
                    fanout.lost.store(true, Ordering::Release);
                    fanout.behind.store(true, Ordering::Release);
                }
                if push.kind == redis::PushKind::Message
                    && let [
                        redis::Value::BulkString(channel),
                        redis::Value::BulkString(payload),
                    ] = push.data.as_slice()
                    && let Some(hub) = receiver.upgrade()
                {
                    hub.dispatch(channel, payload);
                }
                Ok(())
            });
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        let fanout = Fanout {
            manager,
            subscribed: Default::default(),
            behind: AtomicBool::new(true),
            lost: AtomicBool::new(false),
            leases: Default::default(),
        };
        super::leases::keep_renewing(hub.clone());
        // Keeps the subscriptions what the registry wants, retrying while Redis is away.
        let host = host_channel(host_id);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(hub) = hub.upgrade() else { return };
                let Some(fanout) = hub.fanout() else { return };
                if !fanout.behind.swap(false, Ordering::AcqRel) {
                    continue;
                }
                if fanout.lost.swap(false, Ordering::AcqRel) {
                    fanout.subscribed.lock().await.clear();
                }
                let mut wanted: Vec<String> = hub
                    .registry()
                    .groups
                    .keys()
                    .map(|c| c.to_string())
                    .collect();
                wanted.push(host.clone());
                let had: Vec<String> = fanout.subscribed.lock().await.iter().cloned().collect();
                for channel in wanted.iter().chain(had.iter()) {
                    let _ = fanout.sync(&hub, channel).await;
                }
            }
        });
        Ok(fanout)
    }

    /// Subscribes to or unsubscribes from `channel`, as the registry now wants.
    pub(super) async fn sync(&self, hub: &Hub, channel: &str) -> Result<(), Error> {
        let mut subscribed = self.subscribed.lock().await;
        let wanted =
            channel == host_channel(&hub.host_id) || hub.registry().groups.contains_key(channel);
        let result = match (wanted, subscribed.contains(channel)) {
            (true, false) => {
                let done = self
                    .call(|mut m| async move { m.subscribe(channel).await })
                    .await;
                if done.is_ok() {
                    subscribed.insert(channel.to_string());
                }
                done
            }
            (false, true) => {
                let done = self
                    .call(|mut m| async move { m.unsubscribe(channel).await })
                    .await;
                if done.is_ok() {
                    subscribed.remove(channel);
                }
                done
            }
            _ => Ok(()),
        };
        if result.is_err() {
            self.behind.store(true, Ordering::Release);
        }
        result
    }

    pub(super) async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<i64, Error> {
        self.call(|mut m| {
            let payload = payload.clone();
            async move { m.publish(channel, payload).await }
        })
        .await
    }

    pub(super) async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(REDIS_TIMEOUT, op(self.manager.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                tracing::warn!(
                    fault = "dependency",
                    "WebSocket fan-out: Redis unavailable: {err}"
                );
                Err(Error::Unavailable)
            }
            Err(_) => {
                tracing::warn!(
                    fault = "dependency",
                    "WebSocket fan-out: Redis did not answer within {REDIS_TIMEOUT:?}"
                );
                Err(Error::Unavailable)
            }
        }
    }
}
