//! The PostgreSQL framing of the app's [`Relay`](crate::limits::relay::Relay).
//!
//! sqlx reads every backend message whole: it reserves the message's length as
//! soon as it has the 5-byte header (type byte, length). So the app's pool
//! connects through a relay that follows that framing: every message larger
//! than [`SMALL`] is charged to the app's memory budget before a byte of it
//! reaches sqlx, and held until the next message starts (by then sqlx has
//! turned it into a row, which `run` charges in its turn). A message that does
//! not fit is never read: sqlx gets an `ErrorResponse` with SQLSTATE
//! [`TOO_LARGE_SQLSTATE`] in its place, the connection is closed (the server
//! abandons the statement and any transaction) and the pool discards it. A
//! 250 MB row asked for by a 64 MiB app costs the host one 64 KiB chunk.

use crate::limits::{host_memory::HostCharge, relay::Framing};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Messages up to this size fit sqlx's standing 8 KiB buffer and pass
/// uncharged (they cost nothing new, and `ReadyForQuery` must always pass).
pub const SMALL: usize = 8 << 10;
/// The SQLSTATE of the refusal: `program_limit_exceeded`.
pub const TOO_LARGE_SQLSTATE: &str = "54000";
/// Marks the host's message, to tell it from a server's own 54000.
pub const TOO_LARGE_MARK: &str = "alorig-host:";

/// Where the parser is in the server's stream of messages.
#[derive(Default)]
pub struct PgFraming {
    header: [u8; 5],
    filled: usize,
    body_left: usize,
}

impl Framing for PgFraming {
    fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        charge: &mut HostCharge,
    ) -> Result<(), Vec<u8>> {
        let mut i = 0;
        while i < input.len() {
            if self.body_left > 0 {
                let take = self.body_left.min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.body_left -= take;
                continue;
            }
            let take = (5 - self.filled).min(input.len() - i);
            self.header[self.filled..self.filled + take].copy_from_slice(&input[i..i + take]);
            self.filled += take;
            i += take;
            if self.filled < 5 {
                continue;
            }
            self.filled = 0;
            let [tag, l0, l1, l2, l3] = self.header;
            let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            // The previous message has been handed on whole: sqlx has it.
            charge.clear();
            if len > SMALL
                && let Err(no_room) = charge.grow(len as u64 + 1)
            {
                return Err(error_response(&format!(
                    "{TOO_LARGE_MARK} a {} from the server of {no_room}; select less (LIMIT, fewer or shorter columns)",
                    kind(tag)
                )));
            }
            out.extend_from_slice(&self.header);
            self.body_left = len.saturating_sub(4);
        }
        Ok(())
    }

    /// An SSL or GSS encryption request is answered "no" here (the hop to the
    /// server is the host's own): the relay must see plain protocol.
    async fn startup(&mut self, client: &mut tokio::net::UnixStream) -> std::io::Result<Vec<u8>> {
        let mut first = [0u8; 8];
        loop {
            client.read_exact(&mut first).await?;
            let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
            let code = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
            if len == 8 && (code == 80877103 || code == 80877104) {
                client.write_all(b"N").await?;
                continue;
            }
            return Ok(first.to_vec());
        }
    }
}

fn kind(tag: u8) -> &'static str {
    match tag {
        b'D' => "row",
        b'N' => "notice",
        b'E' => "error",
        b'A' => "notification",
        b'd' => "copy data",
        _ => "message",
    }
}

/// A backend `ErrorResponse` (severity ERROR, SQLSTATE 54000).
fn error_response(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', TOO_LARGE_SQLSTATE),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MemoryBudget;
    use std::sync::Arc;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    async fn run(input: Vec<u8>, limit: u64) -> (Vec<u8>, Arc<MemoryBudget>) {
        crate::limits::relay::pump_for_test(input, limit, PgFraming::default()).await
    }

    #[tokio::test]
    async fn messages_that_fit_pass_unchanged_and_are_given_back() {
        let mut input = message(b'T', b"cols");
        input.extend(message(b'D', &vec![7u8; 20_000]));
        input.extend(message(b'Z', b"I"));
        let (out, budget) = run(input.clone(), 1 << 20).await;
        assert_eq!(out, input);
        assert_eq!(budget.host_held(), 0);
    }

    #[tokio::test]
    async fn a_row_past_the_budget_is_replaced_by_an_error_before_its_body() {
        let small = message(b'D', b"small");
        let mut input = small.clone();
        input.extend(message(b'D', &vec![7u8; 200_000]));
        input.extend(message(b'Z', b"I"));
        let (out, budget) = run(input, 100_000).await;
        assert_eq!(&out[..small.len()], &small[..]);
        assert_eq!(out[small.len()], b'E');
        let text = String::from_utf8_lossy(&out[small.len()..]);
        assert!(
            text.contains("54000") && text.contains("a row from the server"),
            "{text}"
        );
        assert!(out.len() < 1000, "the refused row is not forwarded");
        assert_eq!(budget.host_held(), 0);
    }
}
