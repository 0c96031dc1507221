//! Traps on every request (a Rust panic compiles to `unreachable`). With `?after=1`
//! it first sends the response headers, so the trap happens mid-body.
//! `?kind=oob` traps on an out-of-bounds memory access instead, and
//! `?kind=recurse` recurses until the wasm stack overflows (no linear-memory
//! frames: the depth is bounded by the engine's `max_wasm_stack` alone).

use guest_kit::wasip2;
use std::sync::atomic::{AtomicU64, Ordering};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Trap;

/// Read at run time, so the compiler cannot see that the recursion never ends.
static LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Not a tail call and not an accumulation LLVM could turn into a loop: every
/// level's result depends on the level below in a non-associative way.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == LIMIT.load(Ordering::Relaxed) {
        return depth;
    }
    let below = recurse(depth + 1);
    below.rotate_left((depth & 63) as u32) ^ depth
}

impl wasip2::exports::http::incoming_handler::Guest for Trap {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if guest_kit::query_param(&request, "after").is_some() {
            guest_kit::respond(out, 200, "text/plain", b"about to trap\n");
            panic!("test-trap: trapping on purpose");
        }
        match guest_kit::query_param(&request, "kind").as_deref() {
            Some("recurse") => {
                let depth = recurse(0);
                guest_kit::respond(out, 200, "text/plain", format!("{depth}\n").as_bytes());
            }
            Some("oob") => {
                // The last bytes of the 4 GiB address space: never inside the memory.
                let far = usize::MAX - 15;
                // SAFETY: not safe at all, on purpose: wasm traps on this access.
                let value = unsafe { std::ptr::read_volatile(far as *const u64) };
                guest_kit::respond(out, 200, "text/plain", format!("{value}\n").as_bytes());
            }
            _ => panic!("test-trap: trapping on purpose"),
        }
    }
}

wasip2::http::proxy::export!(Trap with_types_in wasip2);
