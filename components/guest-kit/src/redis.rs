//! `alorig:host/redis` for guests: the generated import. The host binds it to the
//! app's own Redis database and key prefix; keys are given without the prefix.

wit_bindgen::generate!({
    path: "../../wit/redis.wit",
    inline: "package alorig:guest-kit-redis; world redis-guest { import alorig:host/redis@0.1.0; }",
    world: "alorig:guest-kit-redis/redis-guest",
    generate_all,
});

pub use alorig::host::redis::*;

/// `set` options: no expiry, or this TTL, unconditionally.
pub fn ttl(ms: Option<u64>) -> SetOptions {
    SetOptions {
        ttl_ms: ms,
        condition: SetCondition::Always,
    }
}
