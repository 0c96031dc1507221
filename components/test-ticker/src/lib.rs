//! Test guest for timers without a job store: it schedules no jobs (so it does
//! not import `alorig:host/timers`) and needs no database. Each firing prints
//! `fired <name> <scheduled-ms> <started-ms>` on stdout, which the host logs; a
//! timer named `sleep-MS-…` sleeps that long first. HTTP answers `ticker`.

use guest_kit::{timers, wasip2};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Ticker;

impl timers::TimerHandler for Ticker {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        let started = guest_kit::now_ms();
        let sleep: Option<u64> = name
            .strip_prefix("sleep-")
            .and_then(|rest| rest.split('-').next()?.parse().ok());
        if let Some(ms) = sleep {
            wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        println!("fired {name} {scheduled_at_ms} {started}");
        Ok(())
    }
}

impl timers::JobHandler for Ticker {
    fn on_job(_id: u64, name: String, _payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        Err(format!("no job named {name}"))
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Ticker {
    fn handle(_req: IncomingRequest, out: ResponseOutparam) {
        guest_kit::respond(out, 200, "text/plain", b"ticker");
    }
}

timers::export!(Ticker);
wasip2::http::proxy::export!(Ticker with_types_in wasip2);
