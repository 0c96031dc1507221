//! Where a connection lives, and the guest's operations on it: an id is
//! `<host id>-<n>`, so `send`, `close`, `join` and `leave` act on this host's
//! registry (`hub.rs`) directly, or are forwarded over Redis to the channel of
//! the host that holds the connection (`fanout.rs`, `wire.rs`); what arrives on
//! this host's own channels is applied here ([`Hub::dispatch`]).

use super::{
    Error,
    fanout::{GROUP_CHANNEL, host_channel},
    hub::{Hub, Outgoing},
    wire::{Op, decode_group, decode_op, encode_op},
};
use crate::metrics::WsDropReason;
use tokio_tungstenite::tungstenite::Message;

/// A parsed connection id.
enum Target {
    Local(u64),
    Remote { host: String, seq: u64 },
}

impl Hub {
    fn target(&self, id: &str) -> Result<Target, Error> {
        let (host, seq) = id.split_once('-').ok_or(Error::Closed)?;
        let seq: u64 = seq.parse().map_err(|_| Error::Closed)?;
        if host == self.host_id {
            Ok(Target::Local(seq))
        } else if host.len() == self.host_id.len() && host.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Target::Remote {
                host: host.to_string(),
                seq,
            })
        } else {
            Err(Error::Closed)
        }
    }

    pub async fn send(&self, app: &str, id: &str, message: Message) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.local(app, seq)?.push_message(message),
            Target::Remote { host, seq } => self.forward(&host, Op::Send(message), app, seq).await,
        }
    }

    pub async fn close(&self, app: &str, id: &str, code: u16, reason: String) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.local(app, seq)?.push(Outgoing::Close(code, reason)),
            Target::Remote { host, seq } => {
                self.forward(&host, Op::Close(code, reason), app, seq).await
            }
        }
    }

    pub async fn join(&self, app: &str, id: &str, group: &str) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.join_local(app, seq, group).await,
            Target::Remote { host, seq } => {
                self.forward(&host, Op::Join(group.to_string()), app, seq)
                    .await
            }
        }
    }

    pub async fn leave(&self, app: &str, id: &str, group: &str) -> Result<(), Error> {
        match self.target(id)? {
            Target::Local(seq) => self.leave_local(app, seq, group).await,
            Target::Remote { host, seq } => {
                self.forward(&host, Op::Leave(group.to_string()), app, seq)
                    .await
            }
        }
    }

    /// An operation on a connection held by another host, through its channel.
    async fn forward(&self, host: &str, op: Op, app: &str, seq: u64) -> Result<(), Error> {
        let fanout = self.fanout().ok_or(Error::Closed)?;
        let receivers = fanout
            .publish(&host_channel(host), encode_op(&op, app, seq))
            .await?;
        // No host listening on that channel: the host, and so the connection, is gone.
        if receivers == 0 {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Applies what arrived on one of this host's channels.
    pub(super) fn dispatch(&self, channel: &[u8], payload: &[u8]) {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        if channel.starts_with(GROUP_CHANNEL) {
            if let Some((origin, message)) = decode_group(payload)
                && origin != self.host_id.as_bytes()
            {
                self.deliver_remote(channel, &message);
            }
        } else if channel == host_channel(&self.host_id) {
            let Some((op, app, seq)) = decode_op(payload) else {
                return;
            };
            match op {
                Op::Send(message) => {
                    if let Ok(conn) = self.local(&app, seq)
                        && let Err(Error::Invalid(_)) = conn.push_message(message)
                    {
                        conn.kill(WsDropReason::SlowConsumer);
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
}
