//! The Redis (RESP2/RESP3) framing of the app's [`Relay`](crate::limits::relay::Relay).
//!
//! redis-rs reads a reply whole, however large another client made the value
//! (a 250 MB string, a list of a million items). So the app's connections go
//! through a relay that follows RESP: each header line (type byte, up to CRLF)
//! is held back until complete; a bulk string's length, plus a fixed cost per
//! element, is added to the reply's running size, which is charged to the
//! app's memory budget in 64 KiB steps (a small reply costs no atomic at all)
//! and given back when the top-level reply ends.
//!
//! A bulk string that does not fit is never held: the client gets a
//! `-TOOLARGE` error in its place (with nulls for the rest of any enclosing
//! aggregates, so the reply stays well-formed) and the guest sees `invalid`.
//! The rest of the refused reply is then read from the server and dropped,
//! 64 KiB at a time, and the connection carries on with the next reply. It is
//! not cut: the app's connection is multiplexed, and cutting it would fail the
//! other commands in flight on it (other requests of the app, answered
//! `unavailable`, or retried on a new connection and so applied twice). Only a
//! refusal deep inside an aggregate that would take more than [`MAX_FILL`]
//! nulls to close ends the connection (the guest sees `unavailable`).

use crate::limits::{host_memory::HostCharge, relay::Framing};

/// The error code of the refusal.
pub const TOO_LARGE_CODE: &str = "TOOLARGE";
/// Charged per element, for the value it becomes in the client.
const ELEMENT: u64 = 64;
/// The running size is charged in steps of this much.
const STEP: u64 = 64 << 10;
/// Most nulls sent to close the aggregates around a refused value.
const MAX_FILL: usize = 1024;
/// Longest header line (a simple string or error included) passed on.
const LINE_MAX: usize = 64 << 10;

#[derive(Default)]
pub struct RespFraming {
    /// The header line being read, held back until its CRLF (while dropping,
    /// at most [`LINE_MAX`] of it is kept: enough for its type and length).
    line: Vec<u8>,
    /// Bytes of a bulk string (and its CRLF) still to pass.
    body_left: u64,
    /// Elements still to come in each open aggregate, and whether it is an
    /// attribute (which annotates the next element instead of being one).
    open: Vec<(u64, bool)>,
    /// Of this reply's running size, what is not yet charged.
    pending: u64,
    /// The current reply was refused: the client has its error; what is left
    /// of the reply is read from the server and dropped until it ends.
    dropping: bool,
}

impl RespFraming {
    /// One element ended: counts it in its aggregate, closing those that are
    /// complete; at the end of a top-level reply gives its charge back (and
    /// ends the dropping of a refused one).
    fn complete(&mut self, charge: &mut HostCharge) {
        if close_element(&mut self.open) {
            charge.clear();
            self.pending = 0;
            self.dropping = false;
        }
    }

    fn cost(&mut self, bytes: u64, charge: &mut HostCharge) -> Result<(), NoFit> {
        self.pending += bytes;
        if self.pending < STEP {
            return Ok(());
        }
        match charge.grow(self.pending) {
            Ok(()) => {
                self.pending = 0;
                Ok(())
            }
            Err(no_room) => Err(NoFit(format!("alorig-host: a reply of {no_room}"))),
        }
    }

    /// What the client gets in place of the current element: the error, then
    /// nulls to close every open aggregate. The server's side of the reply is
    /// left as it is, to be read and dropped. `None` when closing would take
    /// more than [`MAX_FILL`] nulls.
    fn refusal(&mut self, message: &str, charge: &mut HostCharge) -> Option<Vec<u8>> {
        let mut bytes = format!(
            "-{TOO_LARGE_CODE} {}\r\n",
            message.replace(['\r', '\n'], " ")
        )
        .into_bytes();
        let mut client = self.open.clone();
        let mut fill = 0;
        while !close_element(&mut client) {
            if fill == MAX_FILL {
                return None;
            }
            bytes.extend_from_slice(b"$-1\r\n");
            fill += 1;
        }
        charge.clear();
        self.pending = 0;
        self.dropping = true;
        Some(bytes)
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
        if !self.dropping {
            match self.cost(cost, charge) {
                Ok(()) => out.extend_from_slice(&line),
                Err(NoFit(message)) => out.extend(
                    self.refusal(&message, charge)
                        .ok_or_else(|| format!("-{TOO_LARGE_CODE} {message}\r\n").into_bytes())?,
                ),
            }
        }
        let done = body.is_none() && aggregate.is_none();
        self.body_left = body.unwrap_or(0);
        self.open.extend(aggregate);
        self.line = line;
        self.line.clear();
        if done {
            self.complete(charge);
        }
        Ok(())
    }
}

/// A reply that does not fit, and why.
struct NoFit(String);

/// Counts one ended element in `open` (the aggregates it is in), popping those
/// it completes; `true` when it ended the top-level reply.
fn close_element(open: &mut Vec<(u64, bool)>) -> bool {
    loop {
        match open.last_mut() {
            None => return true,
            Some((left, attribute)) => {
                *left -= 1;
                if *left > 0 {
                    return false;
                }
                let attribute = *attribute;
                open.pop();
                if attribute {
                    return false;
                }
            }
        }
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
                if !self.dropping {
                    out.extend_from_slice(&input[i..i + take]);
                }
                i += take;
                self.body_left -= take as u64;
                if self.body_left == 0 {
                    self.complete(charge);
                }
                continue;
            }
            let (end, rest) = match input[i..].iter().position(|b| *b == b'\n') {
                Some(end) => (Some(i + end + 1), &input[i..=i + end]),
                None => (None, &input[i..]),
            };
            i = end.unwrap_or(input.len());
            let room = LINE_MAX.saturating_sub(self.line.len());
            self.line.extend_from_slice(&rest[..rest.len().min(room)]);
            if end.is_some() {
                self.line_done(out, charge)?;
            } else if self.line.len() >= LINE_MAX && !self.dropping {
                // Refused now, its end dropped when it comes: the line is the current element.
                let message = "alorig-host: a reply line longer than 64 KiB";
                let refusal = self.refusal(message, charge);
                out.extend(
                    refusal
                        .ok_or_else(|| format!("-{TOO_LARGE_CODE} {message}\r\n").into_bytes())?,
                );
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
    async fn a_value_past_the_budget_is_replaced_and_the_connection_carries_on() {
        let big = "x".repeat(300_000);
        let input = format!(
            "$2\r\nok\r\n*3\r\n$1\r\na\r\n$300000\r\n{big}\r\n$1\r\nb\r\n$300000\r\n{big}\r\n+after\r\n"
        );
        let (out, budget) = run(input.as_bytes(), 200_000).await;
        let text = String::from_utf8(out).unwrap();
        let (head, rest) = text.split_at(text.find("-TOOLARGE").expect(&text));
        assert_eq!(head, "$2\r\nok\r\n*3\r\n$1\r\na\r\n");
        let lines: Vec<&str> = rest.split("\r\n").collect();
        assert!(
            lines[0].starts_with("-TOOLARGE alorig-host: a reply of ")
                && lines[0].contains("memory budget"),
            "{text}"
        );
        // The array's last element, a null, closes it; the next value is refused
        // too; the reply after them passes: the connection was kept.
        assert_eq!(lines[1], "$-1", "{text}");
        assert!(
            lines[2].starts_with("-TOOLARGE alorig-host: a reply of "),
            "{text}"
        );
        assert_eq!(lines[3..], ["+after", ""], "{text}");
        assert!(text.len() < 1000, "the refused values are dropped");
        assert_eq!(budget.host_held(), 0);
    }

    #[tokio::test]
    async fn the_rest_of_a_refused_aggregate_is_dropped_nested_values_included() {
        let big = "y".repeat(300_000);
        // A map whose second value is refused; its third pair holds an array and a
        // long simple string, all dropped; then the next reply.
        let long = "z".repeat(70_000);
        let input = format!(
            "%3\r\n+k1\r\n:1\r\n+k2\r\n$300000\r\n{big}\r\n+k3\r\n*2\r\n$3\r\nabc\r\n+{long}\r\n:7\r\n"
        );
        let (out, budget) = run(input.as_bytes(), 200_000).await;
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[..4], ["%3", "+k1", ":1", "+k2"], "{text}");
        assert!(lines[4].starts_with("-TOOLARGE"), "{text}");
        assert_eq!(lines[5..], ["$-1", "$-1", ":7", ""], "{text}");
        assert_eq!(budget.host_held(), 0);
    }

    #[tokio::test]
    async fn a_header_line_past_64_kib_is_refused_and_dropped() {
        let long = "w".repeat(100_000);
        let input = format!("+{long}\r\n+next\r\n");
        let (out, budget) = run(input.as_bytes(), 1 << 20).await;
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!("-{TOO_LARGE_CODE} alorig-host: a reply line longer than 64 KiB\r\n+next\r\n")
        );
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
