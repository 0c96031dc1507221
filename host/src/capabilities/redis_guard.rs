//! The Redis (RESP2/RESP3) framing of the app's [`Relay`](crate::limits::relay::Relay).
//!
//! redis-rs reads a reply whole, however large another client made the value
//! (a 250 MB string, a list of a million items). So the app's connections go
//! through a relay that follows RESP: each header line (type byte, up to CRLF)
//! is held back until complete; a bulk string's length, plus a fixed cost per
//! element, is added to the reply's running size, which is charged to the
//! app's memory budget in 64 KiB steps (a small reply costs no atomic at all)
//! and given back when the top-level reply ends. A bulk string that does not
//! fit is never read: the client gets a `-TOOLARGE` error in its place (with
//! nulls for the rest of any enclosing arrays, so the reply stays well-formed)
//! and the connection is closed; the guest sees `invalid`.

use crate::limits::{host_memory::HostCharge, relay::Framing};

/// The error code of the refusal.
pub const TOO_LARGE_CODE: &str = "TOOLARGE";
/// Charged per element, for the value it becomes in the client.
const ELEMENT: u64 = 64;
/// The running size is charged in steps of this much.
const STEP: u64 = 64 << 10;
/// Most nulls sent to close the arrays around a refused value.
const MAX_FILL: usize = 1024;
/// Longest header line (a simple string or error included) passed on.
const LINE_MAX: usize = 64 << 10;

#[derive(Default)]
pub struct RespFraming {
    /// The header line being read, held back until its CRLF.
    line: Vec<u8>,
    /// Bytes of a bulk string (and its CRLF) still to pass.
    body_left: u64,
    /// Elements still to come in each open aggregate, and whether it is an
    /// attribute (which annotates the next element instead of being one).
    open: Vec<(u64, bool)>,
    /// Of this reply's running size, what is not yet charged.
    pending: u64,
}

impl RespFraming {
    /// One element ended: counts it in its aggregate, closing those that are
    /// complete; at the end of a top-level reply gives its charge back.
    fn complete(&mut self, charge: &mut HostCharge) {
        loop {
            match self.open.last_mut() {
                None => {
                    charge.clear();
                    self.pending = 0;
                    return;
                }
                Some((left, attribute)) => {
                    *left -= 1;
                    if *left > 0 {
                        return;
                    }
                    let attribute = *attribute;
                    self.open.pop();
                    if attribute {
                        return;
                    }
                }
            }
        }
    }

    fn cost(&mut self, bytes: u64, charge: &mut HostCharge) -> Result<(), Vec<u8>> {
        self.pending += bytes;
        if self.pending < STEP {
            return Ok(());
        }
        match charge.grow(self.pending) {
            Ok(()) => {
                self.pending = 0;
                Ok(())
            }
            Err(no_room) => {
                Err(self.refusal(&format!("alorig-host: a reply of {no_room}"), charge))
            }
        }
    }

    /// The error in place of the current element, then nulls to close every
    /// open aggregate — unless that takes more than [`MAX_FILL`] of them: the
    /// closed connection then ends the reply (the guest sees `unavailable`).
    fn refusal(&mut self, message: &str, charge: &mut HostCharge) -> Vec<u8> {
        let mut bytes = format!(
            "-{TOO_LARGE_CODE} {}\r\n",
            message.replace(['\r', '\n'], " ")
        )
        .into_bytes();
        self.complete(charge);
        let mut fill = 0;
        while !self.open.is_empty() && fill < MAX_FILL {
            bytes.extend_from_slice(b"$-1\r\n");
            self.complete(charge);
            fill += 1;
        }
        charge.clear();
        bytes
    }

    fn line_done(&mut self, out: &mut Vec<u8>, charge: &mut HostCharge) -> Result<(), Vec<u8>> {
        let line = std::mem::take(&mut self.line);
        let tag = line[0];
        let number = || {
            std::str::from_utf8(&line[1..line.len().saturating_sub(2)])
                .ok()
                .and_then(|n| n.trim().parse::<i64>().ok())
                .unwrap_or(-1)
        };
        let (mut cost, mut body, mut aggregate) = (ELEMENT, None, None);
        match tag {
            b'$' | b'!' | b'=' => {
                if let Ok(len) = u64::try_from(number()) {
                    cost += len;
                    body = Some(len + 2);
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if let Ok(count @ 1..) = u64::try_from(number()) {
                    let count = if matches!(tag, b'%' | b'|') {
                        count.saturating_mul(2)
                    } else {
                        count
                    };
                    aggregate = Some((count, tag == b'|'));
                }
            }
            _ => {}
        }
        self.cost(cost, charge)?;
        let done = body.is_none() && aggregate.is_none();
        self.body_left = body.unwrap_or(0);
        self.open.extend(aggregate);
        out.extend_from_slice(&line);
        self.line = line;
        self.line.clear();
        if done {
            self.complete(charge);
        }
        Ok(())
    }
}

impl Framing for RespFraming {
    fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        charge: &mut HostCharge,
    ) -> Result<(), Vec<u8>> {
        let mut i = 0;
        while i < input.len() {
            if self.body_left > 0 {
                let take = (self.body_left as usize).min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.body_left -= take as u64;
                if self.body_left == 0 {
                    self.complete(charge);
                }
                continue;
            }
            match input[i..].iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&input[i..=i + end]);
                    i += end + 1;
                    self.line_done(out, charge)?;
                }
                None => {
                    self.line.extend_from_slice(&input[i..]);
                    i = input.len();
                    if self.line.len() > LINE_MAX {
                        return Err(
                            self.refusal("alorig-host: a reply line longer than 64 KiB", charge)
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MemoryBudget;
    use std::sync::Arc;

    async fn run(input: &[u8], limit: u64) -> (Vec<u8>, Arc<MemoryBudget>) {
        crate::limits::relay::pump_for_test(input.to_vec(), limit, RespFraming::default()).await
    }

    #[tokio::test]
    async fn replies_that_fit_pass_unchanged_and_are_given_back() {
        let big = "x".repeat(100_000);
        let input = format!(
            "+OK\r\n*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n_\r\n$100000\r\n{big}\r\n%1\r\n+k\r\n$-1\r\n"
        );
        let (out, budget) = run(input.as_bytes(), 1 << 20).await;
        assert_eq!(out, input.as_bytes());
        assert_eq!(budget.host_held(), 0);
    }

    #[tokio::test]
    async fn a_value_past_the_budget_is_replaced_and_the_reply_closed() {
        let big = "x".repeat(300_000);
        let input = format!("$2\r\nok\r\n*3\r\n$1\r\na\r\n$300000\r\n{big}\r\n$1\r\nb\r\n");
        let (out, budget) = run(input.as_bytes(), 200_000).await;
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("$2\r\nok\r\n*3\r\n$1\r\na\r\n-TOOLARGE alorig-host: a reply of "),
            "{text}"
        );
        assert!(
            text.ends_with("\r\n$-1\r\n"),
            "the array is closed with a null: {text}"
        );
        assert!(text.len() < 1000);
        assert_eq!(budget.host_held(), 0);
    }

    #[tokio::test]
    async fn many_small_elements_add_up() {
        let mut input = b"*100000\r\n".to_vec();
        for _ in 0..100_000 {
            input.extend_from_slice(b"$1\r\nz\r\n");
        }
        let (out, budget) = run(&input, 1 << 20).await;
        assert!(
            String::from_utf8_lossy(&out).contains("-TOOLARGE"),
            "100 000 elements cost more than 1 MiB"
        );
        assert!(
            out.len() < 200_000,
            "cut short, not filled with 90 000 nulls"
        );
        assert_eq!(budget.host_held(), 0);
    }
}
