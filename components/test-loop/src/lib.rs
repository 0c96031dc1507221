//! Never answers: spins in pure computation (no host calls), which only epoch
//! interruption can stop. `?sleep=1` instead blocks in a host call (a long
//! `wasi:clocks` sleep), which only the host's wall-clock timeout can stop.
//! `?iters=N` computes N steps and then answers 200 (a CPU-heavy page).

use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Loop;

impl wasip2::exports::http::incoming_handler::Guest for Loop {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if guest_kit::query_param(&request, "sleep").is_some() {
            wasip2::clocks::monotonic_clock::subscribe_duration(3_600 * 1_000_000_000).block();
        }
        let steps = guest_kit::query_param(&request, "iters").and_then(|n| n.parse::<u64>().ok());
        let mut x: u64 = 1;
        let mut done: u64 = 0;
        while steps.is_none_or(|n| done < n) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            done += 1;
        }
        guest_kit::respond(out, 200, "text/plain", format!("{x}\n").as_bytes());
    }
}

wasip2::http::proxy::export!(Loop with_types_in wasip2);
