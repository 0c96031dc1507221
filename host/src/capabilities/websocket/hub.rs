//! The host's WebSocket connections and groups, and their fan-out to other hosts.
//!
//! One [`Hub`] per host process. A connection here is a few hundred bytes: its
//! app, the sender of its bounded outgoing queue, a kill switch, and the groups
//! it is in. The socket itself is owned by its connection task
//! (`connection.rs`), which drains the queue.
//!
//! Ids are `<host id>-<n>`: the host id (16 random hex digits, new at every
//! start) tells every host where a connection lives. Another app's id is as
//! unknown as a closed one (`closed`).
//!
//! Across hosts (with the host config's `redis_url`, through the host's own
//! Redis connection, not an app's ACL user):
//! * a group is the channel `alorig:ws:<app>:<group>`, which a host subscribes to
//!   for as long as it holds at least one local member. `send-group` delivers to
//!   the local members at once, then publishes; each host skips what it
//!   published itself.
//! * each host subscribes to `alorig:ws-host:<host id>`, which carries `send`,
//!   `close`, `join` and `leave` for the connections it holds.
//!
//! Without `redis_url`, groups and sends work on the one host.

use super::Error;
use crate::metrics::WsMetrics;
use redis::{AsyncCommands as _, aio::ConnectionManager};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// Bound on one Redis call (publish, subscribe).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection task is asked to write, in order.
#[derive(Debug)]
pub enum Outgoing {
    Message(Message),
    Close(u16, String),
}

/// One local connection, as the hub sees it.
pub struct Conn {
    pub app: Arc<str>,
    tx: mpsc::Sender<Outgoing>,
    /// Set (with the reason's index) when the host drops the connection.
    killed: Notify,
    kill_reason: AtomicUsize,
    metrics: WsMetrics,
}

/// No kill reason set.
const ALIVE: usize = usize::MAX;

impl Conn {
    /// Tells the connection task to drop the connection; the first reason wins.
    pub fn kill(&self, reason: usize) {
        if self.kill_reason.compare_exchange(ALIVE, reason, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.metrics.dropped(reason);
            tracing::info!(app = %self.app, reason = super::DROP_REASONS[reason], "WebSocket connection dropped by the host");
            self.killed.notify_one();
        }
    }

    /// Resolves once [`Conn::kill`] was called.
    pub async fn killed(&self) {
        self.killed.notified().await;
    }

    /// Queues a message; a full queue means the client is not reading: dropped.
    fn push(&self, item: Outgoing) -> Result<(), Error> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kill(super::DROP_SLOW_CONSUMER);
                Err(Error::Closed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }
}

struct Entry {
    conn: Arc<Conn>,
    /// The group channels (`alorig:ws:<app>:<group>`) it is in.
    groups: Vec<Box<str>>,
}

#[derive(Default)]
struct Registry {
    conns: HashMap<u64, Entry>,
    /// Local members of each group, by channel name.
    groups: HashMap<Box<str>, HashSet<u64>>,
}

pub struct Hub {
    host_id: String,
    next: AtomicU64,
    registry: Mutex<Registry>,
    redis_url: Mutex<Option<String>>,
    /// Made at the first connection when the host has a `redis_url`.
    fanout: OnceLock<Option<Fanout>>,
    me: Weak<Hub>,
}

/// A parsed connection id.
enum Target {
    Local(u64),
    Remote { host: String, seq: u64 },
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

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection of `app` with an outgoing queue of `queue`
    /// messages: its id, its handle and the queue's receiving end.
    pub fn open(&self, app: Arc<str>, metrics: WsMetrics, queue: usize) -> (String, u64, Arc<Conn>, mpsc::Receiver<Outgoing>) {
        self.fanout();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue);
        let conn = Arc::new(Conn { app, tx, killed: Notify::new(), kill_reason: AtomicUsize::new(ALIVE), metrics });
        self.registry().conns.insert(seq, Entry { conn: conn.clone(), groups: Vec::new() });
        (format!("{}-{seq}", self.host_id), seq, conn, rx)
    }

    /// With Redis: waits until this host listens on its own channel, so that
    /// a send from another host to a connection about to open is not missed.
    /// Without Redis returns at once; with Redis away, waits at most 250 ms
    /// (the subscription is retried in the background).
    pub async fn ready(&self) {
        if let Some(fanout) = self.fanout() {
            let channel = host_channel(&self.host_id);
            let _ = tokio::time::timeout(Duration::from_millis(250), fanout.sync(self, &channel)).await;
        }
    }

    /// Forgets a connection: it leaves all its groups (and the host stops
    /// listening to a group's channel it was the last local member of).
    pub async fn remove(&self, seq: u64) {
        let emptied: Vec<Box<str>> = {
            let mut registry = self.registry();
            let Some(entry) = registry.conns.remove(&seq) else { return };
            entry
                .groups
                .into_iter()
                .filter(|channel| {
                    let members = registry.groups.get_mut(channel).expect("a member's group exists");
                    members.remove(&seq);
                    let empty = members.is_empty();
                    if empty {
                        registry.groups.remove(channel);
                    }
                    empty
                })
                .collect()
        };
        if let Some(fanout) = self.fanout() {
            for channel in emptied {
                let _ = fanout.sync(self, &channel).await;
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

    fn target(&self, id: &str) -> Result<Target, Error> {
        let (host, seq) = id.split_once('-').ok_or(Error::Closed)?;
        let seq: u64 = seq.parse().map_err(|_| Error::Closed)?;
        if host == self.host_id {
            Ok(Target::Local(seq))
        } else if host.len() == self.host_id.len() && host.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Target::Remote { host: host.to_string(), seq })
        } else {
            Err(Error::Closed)
        }
    }

    /// The local connection `seq`, if it is `app`'s.
    fn local(&self, app: &str, seq: u64) -> Result<Arc<Conn>, Error> {
        match self.registry().conns.get(&seq) {
            Some(entry) if &*entry.conn.app == app => Ok(entry.conn.clone()),
            _ => Err(Error::Closed),
        }
    }

    pub async fn send(&self, app: &str, id: &str, message: Message) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.local(app, seq)?.push(Outgoing::Message(message)),
            Target::Remote { host, seq } => self.forward(&host, Op::Send(message), app, seq).await,
        }
    }

    pub async fn close(&self, app: &str, id: &str, code: u16, reason: String) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.local(app, seq)?.push(Outgoing::Close(code, reason)),
            Target::Remote { host, seq } => self.forward(&host, Op::Close(code, reason), app, seq).await,
        }
    }

    pub async fn join(&self, app: &str, id: &str, group: &str) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.join_local(app, seq, group).await,
            Target::Remote { host, seq } => self.forward(&host, Op::Join(group.to_string()), app, seq).await,
        }
    }

    pub async fn leave(&self, app: &str, id: &str, group: &str) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.leave_local(app, seq, group).await,
            Target::Remote { host, seq } => self.forward(&host, Op::Leave(group.to_string()), app, seq).await,
        }
    }

    async fn join_local(&self, app: &str, seq: u64, group: &str) -> Result<(), Error> {
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

    async fn leave_local(&self, app: &str, seq: u64, group: &str) -> Result<(), Error> {
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
        self.deliver_local(&channel, &message);
        match self.fanout() {
            Some(fanout) => fanout.publish(&channel, encode_group(&self.host_id, &message)).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Queues `message` to this host's members of a group channel. A member
    /// whose queue is full is dropped (slow consumer); the others are not held up.
    fn deliver_local(&self, channel: &str, message: &Message) {
        let registry = self.registry();
        let Some(members) = registry.groups.get(channel) else { return };
        for seq in members {
            if let Some(entry) = registry.conns.get(seq) {
                let _ = entry.conn.push(Outgoing::Message(message.clone()));
            }
        }
    }

    /// Members of a group on this host.
    pub fn local_members(&self, app: &str, group: &str) -> usize {
        self.registry().groups.get(group_channel(app, group).as_str()).map_or(0, HashSet::len)
    }

    /// An operation on a connection held by another host, through its channel.
    async fn forward(&self, host: &str, op: Op, app: &str, seq: u64) -> Result<(), Error> {
        let fanout = self.fanout().ok_or(Error::Closed)?;
        let receivers = fanout.publish(&host_channel(host), encode_op(&op, app, seq)).await?;
        // No host listening on that channel: the host, and so the connection, is gone.
        if receivers == 0 { Err(Error::Closed) } else { Ok(()) }
    }

    /// Applies what arrived on one of this host's channels.
    fn dispatch(&self, channel: &[u8], payload: &[u8]) {
        let Ok(channel) = std::str::from_utf8(channel) else { return };
        if channel.starts_with(GROUP_CHANNEL) {
            if let Some((origin, message)) = decode_group(payload)
                && origin != self.host_id.as_bytes()
            {
                self.deliver_local(channel, &message);
            }
        } else if channel == host_channel(&self.host_id) {
            let Some((op, app, seq)) = decode_op(payload) else { return };
            match op {
                Op::Send(message) => {
                    if let Ok(conn) = self.local(&app, seq) {
                        let _ = conn.push(Outgoing::Message(message));
                    }
                }
                Op::Close(code, reason) => {
                    if let Ok(conn) = self.local(&app, seq) {
                        let _ = conn.push(Outgoing::Close(code, reason));
                    }
                }
                // Joins wait for Redis: off the Redis reader's path.
                Op::Join(group) => {
                    if let Some(hub) = self.me.upgrade() {
                        tokio::spawn(async move { hub.join_local(&app, seq, &group).await });
                    }
                }
                Op::Leave(group) => {
                    if let Some(hub) = self.me.upgrade() {
                        tokio::spawn(async move { hub.leave_local(&app, seq, &group).await });
                    }
                }
            }
        }
    }

    /// The Redis fan-out, made on first use when the host has a `redis_url`.
    fn fanout(&self) -> Option<&Fanout> {
        self.fanout
            .get_or_init(|| {
                let url = self.redis_url.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
                match Fanout::new(&url, self.me.clone(), &self.host_id) {
                    Ok(fanout) => Some(fanout),
                    Err(err) => {
                        tracing::error!("WebSocket groups stay on this host: redis_url cannot be used: {err}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Asks every open connection (of `app`, or of all apps) to close with
    /// `code`: 1001 when the host shuts down or the app is removed.
    pub fn close_all(&self, app: Option<&str>, code: u16, reason: &str) {
        for entry in self.registry().conns.values().filter(|e| app.is_none_or(|app| *e.conn.app == *app)) {
            let _ = entry.conn.tx.try_send(Outgoing::Close(code, reason.to_string()));
        }
    }
}

/// Prefix of every group channel.
const GROUP_CHANNEL: &str = "alorig:ws:";

pub fn group_channel(app: &str, group: &str) -> String {
    format!("{GROUP_CHANNEL}{app}:{group}")
}

fn host_channel(host: &str) -> String {
    format!("alorig:ws-host:{host}")
}

/// The host's Redis connection for WebSocket fan-out: one connection manager
/// (RESP3: publishes and subscriptions on one socket), re-made by the redis
/// crate when it breaks; the retry task below subscribes again after that.
struct Fanout {
    manager: ConnectionManager,
    /// Channels subscribed now; the lock also puts subscription changes in order.
    subscribed: tokio::sync::Mutex<HashSet<String>>,
    /// A subscription change failed (Redis down): retried every second.
    behind: AtomicBool,
    /// The connection to Redis broke: every subscription is made again.
    lost: AtomicBool,
}

impl Fanout {
    fn new(url: &str, hub: Weak<Hub>, host_id: &str) -> redis::RedisResult<Fanout> {
        use redis::IntoConnectionInfo as _;
        let info = url.into_connection_info()?;
        let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
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
                    && let [redis::Value::BulkString(channel), redis::Value::BulkString(payload)] = push.data.as_slice()
                    && let Some(hub) = receiver.upgrade()
                {
                    hub.dispatch(channel, payload);
                }
                Ok(())
            });
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        let fanout = Fanout { manager, subscribed: Default::default(), behind: AtomicBool::new(true), lost: AtomicBool::new(false) };
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
                let mut wanted: Vec<String> = hub.registry().groups.keys().map(|c| c.to_string()).collect();
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
    async fn sync(&self, hub: &Hub, channel: &str) -> Result<(), Error> {
        let mut subscribed = self.subscribed.lock().await;
        let wanted = channel == host_channel(&hub.host_id) || hub.registry().groups.contains_key(channel);
        let result = match (wanted, subscribed.contains(channel)) {
            (true, false) => {
                let done = self.call(|mut m| async move { m.subscribe(channel).await }).await;
                if done.is_ok() {
                    subscribed.insert(channel.to_string());
                }
                done
            }
            (false, true) => {
                let done = self.call(|mut m| async move { m.unsubscribe(channel).await }).await;
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

    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<i64, Error> {
        self.call(|mut m| {
            let payload = payload.clone();
            async move { m.publish(channel, payload).await }
        })
        .await
    }

    async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(REDIS_TIMEOUT, op(self.manager.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                tracing::warn!("WebSocket fan-out: Redis unavailable: {err}");
                Err(Error::Unavailable)
            }
            Err(_) => {
                tracing::warn!("WebSocket fan-out: Redis did not answer within {REDIS_TIMEOUT:?}");
                Err(Error::Unavailable)
            }
        }
    }
}

/// An operation on a connection held by another host.
#[derive(Debug, PartialEq)]
enum Op {
    Send(Message),
    Close(u16, String),
    Join(String),
    Leave(String),
}

/// `t`/`b` then the bytes.
fn encode_message(out: &mut Vec<u8>, message: &Message) {
    match message {
        Message::Text(text) => {
            out.push(b't');
            out.extend_from_slice(text.as_bytes());
        }
        _ => {
            out.push(b'b');
            out.extend_from_slice(&message.clone().into_data());
        }
    }
}

fn decode_message(bytes: &[u8]) -> Option<Message> {
    let (kind, data) = bytes.split_first()?;
    match kind {
        b't' => Some(Message::Text(Utf8Bytes::try_from(Bytes::copy_from_slice(data)).ok()?)),
        b'b' => Some(Message::Binary(Bytes::copy_from_slice(data))),
        _ => None,
    }
}

/// A group message: the sending host's id, then the message.
fn encode_group(host_id: &str, message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(host_id.len() + 1 + message.len());
    out.extend_from_slice(host_id.as_bytes());
    encode_message(&mut out, message);
    out
}

fn decode_group(payload: &[u8]) -> Option<(&[u8], Message)> {
    const ID: usize = 16;
    if payload.len() <= ID {
        return None;
    }
    let (origin, rest) = payload.split_at(ID);
    Some((origin, decode_message(rest)?))
}

/// `op` byte, app name length (u8) and name, connection number (u64 BE), then
/// the operation's data.
fn encode_op(op: &Op, app: &str, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + app.len());
    out.push(match op {
        Op::Send(_) => b's',
        Op::Close(..) => b'c',
        Op::Join(_) => b'j',
        Op::Leave(_) => b'l',
    });
    out.push(app.len() as u8);
    out.extend_from_slice(app.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    match op {
        Op::Send(message) => encode_message(&mut out, message),
        Op::Close(code, reason) => {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(reason.as_bytes());
        }
        Op::Join(group) | Op::Leave(group) => out.extend_from_slice(group.as_bytes()),
    }
    out
}

fn decode_op(payload: &[u8]) -> Option<(Op, Arc<str>, u64)> {
    let (&kind, rest) = payload.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let app = std::str::from_utf8(rest.get(..len as usize)?).ok()?;
    let rest = &rest[len as usize..];
    let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let data = &rest[8..];
    let text = || String::from_utf8(data.to_vec()).ok();
    let op = match kind {
        b's' => Op::Send(decode_message(data)?),
        b'c' => {
            let code = u16::from_be_bytes(data.get(..2)?.try_into().ok()?);
            Op::Close(code, String::from_utf8(data[2..].to_vec()).ok()?)
        }
        b'j' => Op::Join(text()?),
        b'l' => Op::Leave(text()?),
        _ => return None,
    };
    Some((op, app.into(), seq))
}

fn random(bytes: &mut [u8]) {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(bytes)).expect("reading /dev/urandom");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_survive_their_encoding() {
        let ops = [
            Op::Send(Message::Text("héllo".into())),
            Op::Send(Message::Binary(Bytes::from_static(&[0, 255, 10]))),
            Op::Close(4001, "bye".into()),
            Op::Join("user:42".into()),
            Op::Leave("prices".into()),
        ];
        for op in ops {
            let (back, app, seq) = decode_op(&encode_op(&op, "psydge", u64::MAX - 1)).unwrap();
            assert_eq!((back, &*app, seq), (op, "psydge", u64::MAX - 1));
        }
        assert!(decode_op(b"").is_none() && decode_op(b"s\x09ab").is_none() && decode_op(b"x\x00\0\0\0\0\0\0\0\0").is_none());
        let group = encode_group("0123456789abcdef", &Message::Text("tick".into()));
        let (origin, message) = decode_group(&group).unwrap();
        assert_eq!((origin, message), (b"0123456789abcdef".as_slice(), Message::Text("tick".into())));
        assert!(decode_group(b"0123456789abcdefz").is_none());
    }

    #[tokio::test]
    async fn groups_hold_exactly_their_members_and_apps_are_kept_apart() {
        let hub = Hub::new();
        let metrics = crate::metrics::Metrics::new();
        let (a1, s1, _c1, mut r1) = hub.open("a".into(), metrics.websocket("a"), 4);
        let (a2, _s2, _c2, mut r2) = hub.open("a".into(), metrics.websocket("a"), 4);
        let (b1, _s3, _c3, mut r3) = hub.open("b".into(), metrics.websocket("b"), 4);
        hub.join("a", &a1, "g").await.unwrap();
        hub.join("b", &b1, "g").await.unwrap();
        // Another app's connection is as unknown as a closed one.
        assert!(matches!(hub.join("a", &b1, "g").await, Err(Error::Closed)));
        assert!(matches!(hub.send("b", &a2, Message::Text("x".into())).await, Err(Error::Closed)));
        hub.send_group("a", "g", Message::Text("to a:g".into())).await.unwrap();
        assert!(matches!(r1.try_recv(), Ok(Outgoing::Message(Message::Text(t))) if t == "to a:g"));
        assert!(r2.try_recv().is_err() && r3.try_recv().is_err());
        hub.leave("a", &a1, "g").await.unwrap();
        assert_eq!(hub.local_members("a", "g"), 0);
        hub.send_group("a", "g", Message::Text("nobody".into())).await.unwrap();
        assert!(r1.try_recv().is_err());
        hub.remove(s1).await;
        assert!(matches!(hub.send("a", &a1, Message::Text("x".into())).await, Err(Error::Closed)));
        assert!(matches!(hub.send("a", "nonsense", Message::Text("x".into())).await, Err(Error::Closed)));
        assert_eq!(hub.len(), 2);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_connection() {
        let hub = Hub::new();
        let metrics = crate::metrics::Metrics::new();
        let (id, _seq, conn, _rx) = hub.open("a".into(), metrics.websocket("a"), 2);
        for _ in 0..2 {
            hub.send("a", &id, Message::Text("x".into())).await.unwrap();
        }
        assert!(matches!(hub.send("a", &id, Message::Text("x".into())).await, Err(Error::Closed)));
        tokio::time::timeout(Duration::from_secs(1), conn.killed()).await.expect("the connection is told to go");
        assert!(metrics.encode().contains("alorig_app_ws_dropped_total{app=\"a\",reason=\"slow_consumer\"} 1"));
    }
}
