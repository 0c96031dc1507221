//! The bytes hosts send each other through Redis: a group message (its origin
//! host, then the message) and an operation on a connection another host holds.

use std::sync::Arc;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// An operation on a connection held by another host.
#[derive(Debug, PartialEq)]
pub(super) enum Op {
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
        b't' => Some(Message::Text(
            Utf8Bytes::try_from(Bytes::copy_from_slice(data)).ok()?,
        )),
        b'b' => Some(Message::Binary(Bytes::copy_from_slice(data))),
        _ => None,
    }
}

/// A group message: the sending host's id, then the message.
pub(super) fn encode_group(host_id: &str, message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(host_id.len() + 1 + message.len());
    out.extend_from_slice(host_id.as_bytes());
    encode_message(&mut out, message);
    out
}

pub(super) fn decode_group(payload: &[u8]) -> Option<(&[u8], Message)> {
    const ID: usize = 16;
    if payload.len() <= ID {
        return None;
    }
    let (origin, rest) = payload.split_at(ID);
    Some((origin, decode_message(rest)?))
}

/// `op` byte, app name length (u8) and name, connection number (u64 BE), then
/// the operation's data.
pub(super) fn encode_op(op: &Op, app: &str, seq: u64) -> Vec<u8> {
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

pub(super) fn decode_op(payload: &[u8]) -> Option<(Op, Arc<str>, u64)> {
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
        assert!(
            decode_op(b"").is_none()
                && decode_op(b"s\x09ab").is_none()
                && decode_op(b"x\x00\0\0\0\0\0\0\0\0").is_none()
        );
        let group = encode_group("0123456789abcdef", &Message::Text("tick".into()));
        let (origin, message) = decode_group(&group).unwrap();
        assert_eq!(
            (origin, message),
            (b"0123456789abcdef".as_slice(), Message::Text("tick".into()))
        );
        assert!(decode_group(b"0123456789abcdefz").is_none());
    }
}
