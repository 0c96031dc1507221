//! The host's WebSocket connections and groups, and their fan-out to other hosts.
//!
//! One [`Hub`] per host process. A connection here is a few hundred bytes: its
//! app, the sender of its bounded outgoing queue, a kill switch, and the groups
//! it is in. The socket itself is owned by its connection task
//! (`connection.rs`), which drains the queue.
//!
//! Ids are `<host id>-<n>`: the host id (16 random hex digits, new at every
//! start) tells every host where a connection lives (`routing.rs` acts on a
//! connection here or forwards to its host). Another app's id is as unknown as
//! a closed one (`closed`).
//!
//! Across hosts (`fanout.rs`, `wire.rs`; with the host config's `redis_url`, through the host's own
//! Redis connection, not an app's ACL user):
//! * a group is the channel `alorig:ws:<app>:<group>`, which a host subscribes to
//!   for as long as it holds at least one local member. `send-group` delivers to
//!   the local members at once, then publishes; each host skips what it
//!   published itself.
//! * each host subscribes to `alorig:ws-host:<host id>`, which carries `send`,
//!   `close`, `join` and `leave` for the connections it holds.
//!
//! Without `redis_url`, groups and sends work on the one host.

use super::{
    Error,
    fanout::{Fanout, group_channel, host_channel},
    leases::ADMIT_WAIT,
    wire::encode_group,
};
use crate::{
    limits::{
        MemoryBudget,
        host_memory::{HostCharge, NoRoom},
    },
    metrics::{WsDropReason, WsMetrics},
};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// What a connection task is asked to write, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// A message and the charge of its bytes to the app's memory budget:
    /// every queued copy shares both (a group message's bytes are one buffer),
    /// and the charge is given back when the last copy is written or dropped.
    Message(Message, Arc<HostCharge>),
    Close(u16, String),
}

/// One local connection, as the hub sees it.
pub struct Conn {
    pub app: Arc<str>,
    tx: mpsc::Sender<Outgoing>,
    /// The app's memory budget, which queued messages are charged to.
    budget: Arc<MemoryBudget>,
    /// Set (with the reason's index) when the host drops the connection.
    killed: Notify,
    kill_reason: AtomicUsize,
    metrics: WsMetrics,
}

/// No kill reason set.
const ALIVE: usize = usize::MAX;

impl Conn {
    /// Tells the connection task to drop the connection; the first reason wins.
    pub fn kill(&self, reason: WsDropReason) {
        if self
            .kill_reason
            .compare_exchange(ALIVE, reason as usize, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.metrics.dropped(reason);
            tracing::info!(app = %self.app, fault = "guest", reason = reason.label(), "WebSocket connection dropped by the host");
            self.killed.notify_one();
        }
    }

    /// Resolves once [`Conn::kill`] was called.
    pub async fn killed(&self) {
        self.killed.notified().await;
    }

    /// Charges a message's bytes to the app's budget, for as long as it is queued.
    fn charge(&self, message: &Message) -> Result<Arc<HostCharge>, NoRoom> {
        let mut charge = HostCharge::new(self.budget.clone());
        charge.grow(message.len() as u64)?;
        Ok(Arc::new(charge))
    }

    /// Charges and queues one message; one the budget cannot hold is `invalid`.
    pub(super) fn push_message(&self, message: Message) -> Result<(), Error> {
        let charge = self.charge(&message).map_err(too_much)?;
        self.push(Outgoing::Message(message, charge))
    }

    /// Queues a message; a full queue means the client is not reading: dropped.
    pub(super) fn push(&self, item: Outgoing) -> Result<(), Error> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kill(WsDropReason::SlowConsumer);
                Err(Error::Closed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }
}

/// The guest's error for a message its app's memory budget cannot hold.
fn too_much(no_room: NoRoom) -> Error {
    Error::Invalid(format!("the message cannot be queued: {no_room}"))
}

struct Entry {
    conn: Arc<Conn>,
    /// The group channels (`alorig:ws:<app>:<group>`) it is in.
    groups: Vec<Box<str>>,
    /// It holds a place under its app's cluster-wide `max_connections`
    /// (`leases.rs`), given back when it is removed.
    leased: bool,
}

#[derive(Default)]
pub(super) struct Registry {
    conns: HashMap<u64, Entry>,
    /// Local members of each group, by channel name.
    pub(super) groups: HashMap<Box<str>, HashSet<u64>>,
}

pub struct Hub {
    pub(super) host_id: String,
    next: AtomicU64,
    registry: Mutex<Registry>,
    redis_url: Mutex<Option<String>>,
    /// Made at the first connection when the host has a `redis_url`.
    fanout: OnceLock<Option<Fanout>>,
    pub(super) me: Weak<Hub>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        let mut bytes = [0u8; 8];
        random(&mut bytes);
        Arc::new_cyclic(|me| Hub {
            host_id: hex::encode(bytes),
            next: AtomicU64::new(1),
            registry: Mutex::default(),
            redis_url: Mutex::new(None),
            fanout: OnceLock::new(),
            me: me.clone(),
        })
    }

    /// The operator's Redis, for groups and sends across hosts.
    pub fn set_redis_url(&self, url: Option<String>) {
        *self.redis_url.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    pub(super) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection of `app` with an outgoing queue of `queue`
    /// messages, charged to `budget`: its id, its handle and the queue's
    /// receiving end.
    pub fn open(
        &self,
        app: Arc<str>,
        metrics: WsMetrics,
        queue: usize,
        budget: Arc<MemoryBudget>,
    ) -> (String, u64, Arc<Conn>, mpsc::Receiver<Outgoing>) {
        self.fanout();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue);
        let conn = Arc::new(Conn {
            app,
            tx,
            budget,
            killed: Notify::new(),
            kill_reason: AtomicUsize::new(ALIVE),
            metrics,
        });
        self.registry().conns.insert(
            seq,
            Entry {
                conn: conn.clone(),
                groups: Vec::new(),
                leased: false,
            },
        );
        (self.id(seq), seq, conn, rx)
    }

    /// The id guests know local connection `seq` by.
    fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.host_id)
    }

    /// Takes a place for the new connection `seq` of `app` under a
    /// cluster-wide `max` (`leases.rs`); false when every host's connections
    /// together are at it. Without Redis the count on this host (checked
    /// before) is all there is; with Redis not answering within
    /// [`ADMIT_WAIT`], too — and the connection is counted in the cluster
    /// again by the renewal once Redis is back.
    pub async fn lease(&self, app: &str, seq: u64, max: u32) -> bool {
        let Some(fanout) = self.fanout() else {
            return true;
        };
        match tokio::time::timeout(ADMIT_WAIT, fanout.admit(app, &self.id(seq), max)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return false,
            Ok(Err(_)) | Err(_) => tracing::warn!(
                app,
                fault = "dependency",
                "WebSocket max_connections counted on this host only: Redis is unavailable"
            ),
        }
        if let Some(entry) = self.registry().conns.get_mut(&seq) {
            entry.leased = true;
        }
        true
    }

    /// This host's connections that hold a cluster-wide place: (app, id).
    pub(super) fn leased(&self) -> Vec<(String, String)> {
        self.registry()
            .conns
            .iter()
            .filter(|(_, entry)| entry.leased)
            .map(|(seq, entry)| (entry.conn.app.to_string(), self.id(*seq)))
            .collect()
    }

    /// With Redis: waits until this host listens on its own channel, so that
    /// a send from another host to a connection about to open is not missed.
    /// Without Redis returns at once; with Redis away, waits at most 250 ms
    /// (the subscription is retried in the background).
    pub async fn ready(&self) {
        if let Some(fanout) = self.fanout() {
            let channel = host_channel(&self.host_id);
            let _ =
                tokio::time::timeout(Duration::from_millis(250), fanout.sync(self, &channel)).await;
        }
    }

    /// Forgets a connection: it leaves all its groups (and the host stops
    /// listening to a group's channel it was the last local member of), and
    /// gives back its place under a cluster-wide `max_connections`.
    pub async fn remove(&self, seq: u64) {
        let (emptied, leased): (Vec<Box<str>>, Option<Arc<str>>) = {
            let mut registry = self.registry();
            let Some(entry) = registry.conns.remove(&seq) else {
                return;
            };
            let leased = entry.leased.then(|| entry.conn.app.clone());
            let emptied: Vec<Box<str>> = entry
                .groups
                .into_iter()
                .filter(|channel| {
                    // A member's group exists (both change under this lock).
                    let Some(members) = registry.groups.get_mut(channel) else {
                        return false;
                    };
                    members.remove(&seq);
                    let empty = members.is_empty();
                    if empty {
                        registry.groups.remove(channel);
                    }
                    empty
                })
                .collect();
            (emptied, leased)
        };
        if let Some(fanout) = self.fanout() {
            for channel in emptied {
                let _ = fanout.sync(self, &channel).await;
            }
            // Not answered in time: the lease lapses by itself.
            if let Some(app) = leased {
                let id = self.id(seq);
                let _ = tokio::time::timeout(ADMIT_WAIT, fanout.release(&app, &id)).await;
            }
        }
    }

    /// Open connections on this host (all apps).
    pub fn len(&self) -> usize {
        self.registry().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The local connection `seq`, if it is `app`'s.
    pub(super) fn local(&self, app: &str, seq: u64) -> Result<Arc<Conn>, Error> {
        match self.registry().conns.get(&seq) {
            Some(entry) if &*entry.conn.app == app => Ok(entry.conn.clone()),
            _ => Err(Error::Closed),
        }
    }

    pub(super) async fn join_local(&self, app: &str, seq: u64, group: &str) -> Result<(), Error> {
        let channel: Box<str> = group_channel(app, group).into();
        let first = {
            let mut registry = self.registry();
            let entry = match registry.conns.get_mut(&seq) {
                Some(entry) if &*entry.conn.app == app => entry,
                _ => return Err(Error::Closed),
            };
            if entry.groups.contains(&channel) {
                return Ok(());
            }
            entry.groups.push(channel.clone());
            let members = registry.groups.entry(channel.clone()).or_default();
            members.insert(seq);
            members.len() == 1
        };
        match self.fanout() {
            // The subscription is live before `join` returns, so a message sent
            // to the group from another host right after is not missed.
            Some(fanout) if first => fanout.sync(self, &channel).await,
            _ => Ok(()),
        }
    }

    pub(super) async fn leave_local(&self, app: &str, seq: u64, group: &str) -> Result<(), Error> {
        let channel = group_channel(app, group);
        let emptied = {
            let mut registry = self.registry();
            match registry.conns.get_mut(&seq) {
                Some(entry) if &*entry.conn.app == app => entry.groups.retain(|g| **g != *channel),
                _ => return Err(Error::Closed),
            }
            match registry.groups.get_mut(channel.as_str()) {
                Some(members) => {
                    members.remove(&seq);
                    let empty = members.is_empty();
                    if empty {
                        registry.groups.remove(channel.as_str());
                    }
                    empty
                }
                None => false,
            }
        };
        match self.fanout() {
            Some(fanout) if emptied => fanout.sync(self, &channel).await,
            _ => Ok(()),
        }
    }

    /// Sends to every member of `app`'s `group`: the local ones now, the others
    /// through Redis. With Redis unreachable the local members still got it,
    /// and the guest hears `unavailable`.
    pub async fn send_group(&self, app: &str, group: &str, message: Message) -> Result<(), Error> {
        let channel = group_channel(app, group);
        self.deliver_local(&channel, &message).map_err(too_much)?;
        match self.fanout() {
            Some(fanout) => fanout
                .publish(&channel, encode_group(&self.host_id, &message))
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    }

    /// Queues `message` to this host's members of a group channel, charged
    /// once to their app's budget (the copies share its bytes). A member whose
    /// queue is full is dropped (slow consumer); the others are not held up.
    /// A message the budget cannot hold reaches no member.
    pub(super) fn deliver_local(&self, channel: &str, message: &Message) -> Result<(), NoRoom> {
        let registry = self.registry();
        let Some(members) = registry.groups.get(channel) else {
            return Ok(());
        };
        let mut conns = members.iter().filter_map(|seq| registry.conns.get(seq));
        let Some(first) = conns.next() else {
            return Ok(());
        };
        let charge = first.conn.charge(message)?;
        for entry in std::iter::once(first).chain(conns) {
            let _ = entry
                .conn
                .push(Outgoing::Message(message.clone(), charge.clone()));
        }
        Ok(())
    }

    /// A group message from another host that this host's members cannot
    /// queue within their app's budget: rather than miss it unseen, they are
    /// dropped like slow consumers (a client reconnects and catches up).
    pub(super) fn deliver_remote(&self, channel: &str, message: &Message) {
        if self.deliver_local(channel, message).is_err() {
            let registry = self.registry();
            for seq in registry.groups.get(channel).into_iter().flatten() {
                if let Some(entry) = registry.conns.get(seq) {
                    entry.conn.kill(WsDropReason::SlowConsumer);
                }
            }
        }
    }

    /// Members of a group on this host.
    pub fn local_members(&self, app: &str, group: &str) -> usize {
        self.registry()
            .groups
            .get(group_channel(app, group).as_str())
            .map_or(0, HashSet::len)
    }

    /// The Redis fan-out, made on first use when the host has a `redis_url`.
    pub(super) fn fanout(&self) -> Option<&Fanout> {
        self.fanout
            .get_or_init(|| {
                let url = self
                    .redis_url
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()?;
                match Fanout::new(&url, self.me.clone(), &self.host_id) {
                    Ok(fanout) => Some(fanout),
                    Err(err) => {
                        tracing::error!(
                            fault = "operator",
                            "WebSocket groups stay on this host: redis_url cannot be used: {err}"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Asks every open connection (of `app`, or of all apps) to close with
    /// `code`: 1001 when the host shuts down or the app is removed.
    pub fn close_all(&self, app: Option<&str>, code: u16, reason: &str) {
        for entry in self
            .registry()
            .conns
            .values()
            .filter(|e| app.is_none_or(|app| *e.conn.app == *app))
        {
            let _ = entry
                .conn
                .tx
                .try_send(Outgoing::Close(code, reason.to_string()));
        }
    }
}

fn random(bytes: &mut [u8]) {
    // The OS random source; if it fails, the clock and the process id still
    // make the host id unique enough to route between hosts.
    if getrandom::getrandom(bytes).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ u64::from(std::process::id());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> Arc<MemoryBudget> {
        use prometheus_client::metrics::gauge::Gauge;
        Arc::new(MemoryBudget::new(limit, Gauge::default(), Gauge::default()))
    }

    #[tokio::test]
    async fn queued_messages_are_charged_to_the_apps_budget_until_written() {
        let hub = Hub::new();
        let metrics = crate::metrics::Metrics::new();
        let budget = budget(10_000);
        let open = || hub.open("a".into(), metrics.websocket("a"), 8, budget.clone());
        let (a1, _, _c1, mut r1) = open();
        let (a2, _, _c2, mut r2) = open();
        hub.send("a", &a1, Message::Text("x".repeat(6_000).into()))
            .await
            .unwrap();
        assert_eq!(budget.host_held(), 6_000);
        // What is left cannot hold a second one: refused, nothing queued.
        assert!(matches!(
            hub.send("a", &a2, Message::Text("y".repeat(6_000).into())).await,
            Err(Error::Invalid(m)) if m.contains("memory budget")
        ));
        assert!(r2.try_recv().is_err());
        // Written (here: taken off the queue and dropped): given back.
        drop(r1.try_recv().unwrap());
        assert_eq!(budget.host_held(), 0);
        // A group message is charged once for all its members' copies.
        hub.join("a", &a1, "g").await.unwrap();
        hub.join("a", &a2, "g").await.unwrap();
        hub.send_group("a", "g", Message::Binary(vec![0; 4_000].into()))
            .await
            .unwrap();
        assert_eq!(budget.host_held(), 4_000);
        let (one, two) = (r1.try_recv().unwrap(), r2.try_recv().unwrap());
        drop(one);
        assert_eq!(budget.host_held(), 4_000);
        drop(two);
        assert_eq!(budget.host_held(), 0);
        assert!(matches!(
            hub.send_group("a", "g", Message::Binary(vec![0; 20_000].into()))
                .await,
            Err(Error::Invalid(_))
        ));
        assert!(r1.try_recv().is_err() && r2.try_recv().is_err());
    }

    #[tokio::test]
    async fn groups_hold_exactly_their_members_and_apps_are_kept_apart() {
        let hub = Hub::new();
        let metrics = crate::metrics::Metrics::new();
        let (a1, s1, _c1, mut r1) =
            hub.open("a".into(), metrics.websocket("a"), 4, budget(1 << 20));
        let (a2, _s2, _c2, mut r2) =
            hub.open("a".into(), metrics.websocket("a"), 4, budget(1 << 20));
        let (b1, _s3, _c3, mut r3) =
            hub.open("b".into(), metrics.websocket("b"), 4, budget(1 << 20));
        hub.join("a", &a1, "g").await.unwrap();
        hub.join("b", &b1, "g").await.unwrap();
        // Another app's connection is as unknown as a closed one.
        assert!(matches!(hub.join("a", &b1, "g").await, Err(Error::Closed)));
        assert!(matches!(
            hub.send("b", &a2, Message::Text("x".into())).await,
            Err(Error::Closed)
        ));
        hub.send_group("a", "g", Message::Text("to a:g".into()))
            .await
            .unwrap();
        assert!(
            matches!(r1.try_recv(), Ok(Outgoing::Message(Message::Text(t), _)) if t == "to a:g")
        );
        assert!(r2.try_recv().is_err() && r3.try_recv().is_err());
        hub.leave("a", &a1, "g").await.unwrap();
        assert_eq!(hub.local_members("a", "g"), 0);
        hub.send_group("a", "g", Message::Text("nobody".into()))
            .await
            .unwrap();
        assert!(r1.try_recv().is_err());
        hub.remove(s1).await;
        assert!(matches!(
            hub.send("a", &a1, Message::Text("x".into())).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            hub.send("a", "nonsense", Message::Text("x".into())).await,
            Err(Error::Closed)
        ));
        assert_eq!(hub.len(), 2);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_connection() {
        let hub = Hub::new();
        let metrics = crate::metrics::Metrics::new();
        let (id, _seq, conn, _rx) =
            hub.open("a".into(), metrics.websocket("a"), 2, budget(1 << 20));
        for _ in 0..2 {
            hub.send("a", &id, Message::Text("x".into())).await.unwrap();
        }
        assert!(matches!(
            hub.send("a", &id, Message::Text("x".into())).await,
            Err(Error::Closed)
        ));
        tokio::time::timeout(Duration::from_secs(1), conn.killed())
            .await
            .expect("the connection is told to go");
        assert!(
            metrics
                .encode()
                .contains("alorig_app_ws_dropped_total{app=\"a\",reason=\"slow_consumer\"} 1")
        );
    }
}
