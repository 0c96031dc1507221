//! Journal text sealed at rest: AES-256-GCM (RustCrypto `aes-gcm`) inside the
//! guest, so PostgreSQL — and every dump and backup of it — holds only
//! ciphertext. The key is the secret `JOURNAL_KEY` (64 hex digits) under the
//! id `JOURNAL_KEY_ID` (default 1); after a rotation the old keys stay
//! readable as `JOURNAL_KEY_<id>`. Each seal has a fresh 96-bit nonce from
//! `wasi:random` and binds what it belongs to as associated data (e.g.
//! `journal:<user>:<entry>`), so a ciphertext moved to another row or user
//! fails to open, and a tampered row fails alone.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// A sealed value: which key, the nonce, the ciphertext with its 16-byte tag.
pub struct Sealed {
    pub key_id: i16,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn current_id() -> i16 {
    std::env::var("JOURNAL_KEY_ID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn key(id: i16) -> Result<Aes256Gcm, String> {
    let name = if id == current_id() {
        "JOURNAL_KEY".to_string()
    } else {
        format!("JOURNAL_KEY_{id}")
    };
    let text = std::env::var(&name).map_err(|_| format!("no secret {name} for key {id}"))?;
    let bytes: Option<Vec<u8>> = (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match bytes {
        Some(bytes) if bytes.len() == 32 && text.len() == 64 => {
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| format!("{name}: bad key"))
        }
        _ => Err(format!("{name} must be 64 hex digits (32 bytes)")),
    }
}

pub fn seal(plaintext: &[u8], aad: &str) -> Result<Sealed, String> {
    let id = current_id();
    let cipher = key(id)?;
    let nonce = guest_kit::wasip2::random::random::get_random_bytes(12);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| "encryption failed".to_string())?;
    Ok(Sealed {
        key_id: id,
        nonce,
        ciphertext,
    })
}

pub fn open(sealed: &Sealed, aad: &str) -> Result<Vec<u8>, String> {
    let cipher = key(sealed.key_id)?;
    if sealed.nonce.len() != 12 {
        return Err("cannot be decrypted: bad nonce".into());
    }
    cipher
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| "cannot be decrypted: altered, or sealed under another key".to_string())
}
