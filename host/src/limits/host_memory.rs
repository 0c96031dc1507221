//! What the host holds on an app's behalf counts against the app's `memory`.
//!
//! A [`HostCharge`] is charged to the app's [`MemoryBudget`] *before* the host
//! allocates (result rows, replies, bodies, queued messages) and gives its
//! bytes back when dropped. A charge that does not fit is refused, and the
//! capability answers the guest with its own `too-large`/limit error, so a
//! hostile app costs the machine at most its budget, however many calls it
//! makes at once: concurrent calls charge the same counter.
//!
//! # Audit: host allocations driven by guest input, and their bound
//!
//! "Charged" means held against the app's `memory` (refused when it does not
//! fit); "bounded" means a fixed ceiling that is *not* charged. Sizes of
//! hyper's buffers are its defaults: a connection's read buffer grows to at
//! most 408 KiB (8 KiB + 100 × 4 KiB), and a head may hold 100 headers.
//!
//! | what | where | bound |
//! |---|---|---|
//! | PostgreSQL messages from the server (rows, notices) | `capabilities/postgres/guard.rs` | charged: each message over 8 KiB before it is forwarded, in the relay's 64 KiB chunks; a message that does not fit is cut off unread (`too-large`) |
//! | PostgreSQL result rows converted for the guest | `capabilities/postgres/query.rs` | charged row by row for the call; also refused past the instance's headroom |
//! | PostgreSQL parameters, SQL text | `capabilities/postgres.rs` | lifted from guest memory: at most `instance_memory` per call, one call per instance at a time |
//! | Redis replies | `capabilities/redis_guard.rs` | charged on the wire in 64 KiB steps before redis-rs reads them (protocol lines ≤ 64 KiB); a value that does not fit is replaced by an error (`invalid`) and dropped unread by the client, the connection kept |
//! | Redis command arguments | `capabilities/redis.rs` | lifted from guest memory: at most `instance_memory` per call |
//! | request bodies | `ingress/body.rs`, wasi-http | streamed: read from the client only as the guest reads, one hyper frame (≤ 408 KiB) held at a time; `max_body` caps the total; a body the guest never reads is never read |
//! | response bodies | wasi-http's outgoing body, `ingress/body.rs` | bounded: two chunks of ≤ 1 MiB (wasi-http's channel) per body, ≤ 64 KiB more while coalescing; the guest's writes wait for the client (`write_timeout`) |
//! | outbound request bodies | wasi-http's outgoing body | bounded as response bodies: two 1 MiB chunks per body |
//! | outbound response bodies | `capabilities/outbound_http.rs` | streamed: one frame (≤ 408 KiB) at a time as the guest reads; `max_response` total; ≤ `[outbound_http] max_concurrency` (16) in flight per app |
//! | inbound header maps | `ingress/strict.rs` | bounded: a head ≤ `MAX_HEAD_BYTES` (144 KiB) and 100 headers, per request |
//! | outbound response heads | hyper's client | bounded: 100 headers within the 408 KiB read buffer, per outbound request |
//! | header maps the guest builds (`fields`) | wasi-http | bounded, not charged: each ≤ 128 KiB (wasi-http's field size limit) and ≤ 10,000 resources of any kind per instance (`state.rs`) — about 1.2 GiB per instance at worst, a gap that only charging wasi-http's resources would close |
//! | guest stdout/stderr | `capabilities/wasi.rs`, `logs.rs` | bounded: a partial line ≤ 16 KiB per stream per instance; each app's ring ≤ 2,000 lines of ≤ 4 KiB (their capacity too), ~8 MiB per app, kept for removed apps until restart; not charged |
//! | handler error text (jobs, triggers, WebSocket events) | `trigger.rs` | bounded: its first line, cut at 1 KiB, is what the host keeps (logs, the job store's `last_error`) |
//! | metric labels | `metrics/labels.rs` | only app names, manifest entries (timers, outbound destinations), fixed reasons and the response status (a `u16` the guest chooses: at most ~900 series per app): never guest strings |
//! | job payloads | `capabilities/timers.rs`, `timers/worker.rs` | ≤ 1 MiB each (name ≤ 256 B), `max_pending` per app, stored in PostgreSQL; charged while the job runs, a job that does not fit is rejected (`memory_budget`) and retried after its backoff |
//! | job store rows read back | `capabilities/timers/store.rs` | claimed rows ≤ the worker's free slots (≤ min(`max_concurrency`, 64)) of ≤ 1 MiB + 256 B, read before they are charged; the admin listing reads the payload's length, not the payload |
//! | timer arguments | `capabilities/timers/worker.rs` | the timer's name and time, from the manifest: not guest input |
//! | Redis pub/sub messages (trigger) | `capabilities/redis/subscriber.rs` | charged on the wire by the relay, then while the handler runs (≤ 64 at once); one that does not fit is dropped with a warning |
//! | WebSocket send queues | `capabilities/websocket/hub.rs` | charged: `send_queue` (64) messages of ≤ `max_message` (64 KiB) per connection; each queued message charged until written (a group message once for all its copies); a send that does not fit is `invalid` |
//! | deploy uploads | `deploy/upload.rs` | streamed to a file; at most two at once; manifest ≤ 1 MiB |
//! | compiling a component | `engine/compile_child.rs` | in a child process with a 4 GiB address-space and 300 s limit |

use super::MemoryBudget;
use std::sync::Arc;

/// Bytes the host holds for an app, charged to its budget, given back on drop.
#[derive(Debug)]
pub struct HostCharge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

/// A charge that did not fit: what was asked and what was left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom {
    pub wanted: u64,
    pub left: u64,
    pub limit: u64,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::config::ByteSize;
        write!(
            f,
            "{} is more than the app's memory budget has left ({} of {})",
            ByteSize(self.wanted),
            ByteSize(self.left),
            ByteSize(self.limit)
        )
    }
}

impl HostCharge {
    /// An empty charge against `budget`.
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Charges `bytes` more, or refuses them without changing anything.
    pub fn grow(&mut self, bytes: u64) -> Result<(), NoRoom> {
        if bytes == 0 {
            return Ok(());
        }
        if !self.budget.try_charge_host(bytes) {
            return Err(NoRoom {
                wanted: bytes,
                left: self.budget.left(),
                limit: self.budget.limit(),
            });
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Gives everything back (the charge stays usable).
    pub fn clear(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        if bytes > 0 {
            self.budget.release_host(bytes);
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for HostCharge {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn a_charge_is_refused_past_the_budget_and_given_back_on_drop() {
        let budget = Arc::new(MemoryBudget::new(
            10 << 20,
            Gauge::default(),
            Gauge::default(),
        ));
        let mut a = HostCharge::new(budget.clone());
        a.grow(6 << 20).unwrap();
        let mut b = HostCharge::new(budget.clone());
        let refused = b.grow(6 << 20).unwrap_err();
        assert_eq!(
            refused,
            NoRoom {
                wanted: 6 << 20,
                left: 4 << 20,
                limit: 10 << 20
            }
        );
        assert_eq!(budget.host_held(), 6 << 20);
        drop(a);
        b.grow(6 << 20).unwrap();
        b.clear();
        assert_eq!(budget.host_held(), 0);
        assert_eq!(budget.left(), 10 << 20);
    }
}
