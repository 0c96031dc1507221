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
//! | what | where | bound |
//! |---|---|---|
//! | PostgreSQL messages from the server (rows, notices) | `capabilities/postgres/guard.rs` | each message over 8 KiB charged before it is forwarded; a message that does not fit is cut off unread (`too-large`) |
//! | PostgreSQL result rows converted for the guest | `capabilities/postgres.rs` | charged row by row for the call; also within the instance's headroom |
//! | PostgreSQL parameters, SQL text | `capabilities/postgres.rs` | copied from guest memory: at most `instance_memory` per call, one call per instance at a time |
//! | Redis replies | `capabilities/redis_guard.rs` | charged on the wire in 64 KiB steps before redis-rs reads them; a value that does not fit is replaced by an error (`invalid`) and dropped unread by the client, the connection kept |
//! | request bodies | `ingress/body.rs` | streamed to the guest; `max_body` per request |
//! | response bodies | `ingress/body.rs` | buffered only up to 64 KiB (coalescing), then streamed with back-pressure |
//! | outbound response bodies | wasi-http | streamed to the guest with back-pressure, never buffered whole |
//! | header maps (in/out) | hyper / wasi-http | hyper's 100 headers and 16 KiB+ head limit inbound; outbound headers live in guest-created `fields` resources (≤ 10 000 per instance) |
//! | log lines (guest stdout/stderr) | `capabilities/wasi.rs` | written through as they come, not accumulated |
//! | metric labels | `metrics/labels.rs` | only app names, manifest entries (timers, outbound destinations) and fixed reasons: never guest strings |
//! | job payloads | `capabilities/timers/worker.rs` | stored in PostgreSQL (≤ 1 MiB each, `max_pending` per app); charged while the job runs, a job that does not fit is rejected (`memory_budget`) and retried after its backoff |
//! | timer arguments | `capabilities/timers/worker.rs` | the timer's name and time, from the manifest: not guest input |
//! | Redis pub/sub messages (trigger) | `capabilities/redis/subscriber.rs` | charged on the wire by the relay, then while the handler runs (≤ 64 at once); one that does not fit is dropped with a warning |
//! | WebSocket send queues | `capabilities/websocket/hub.rs` | `send_queue` messages of ≤ `max_message` per connection; each queued message charged until written (a group message once for all its copies); a send that does not fit is `invalid` |
//! | deploy uploads | `deploy/upload.rs` | streamed to a file; at most two at once |
//! | compiling a component | `engine/compile_child.rs` | in a child process with an address-space and time limit |

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
