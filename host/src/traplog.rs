//! WARN lines for guest traps: one line that keeps the reason, at most a few per
//! app per window.
//!
//! A wasmtime error prints as "error while executing at wasm backtrace:" followed
//! by frames and, last, the cause ("wasm trap: …"); cutting it at the first line
//! kept nothing useful. And a guest that traps on every request (a trap storm)
//! would write a line per request: a 6 s storm wrote 6.4 MB of log. Past
//! [`LINES_PER_WINDOW`] lines an app's traps are counted, and the count is logged
//! once when the next window opens. The metrics count every trap regardless.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

/// Lines per app per window before the rest are only counted.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window over which [`LINES_PER_WINDOW`] applies.
pub const WINDOW: Duration = Duration::from_secs(10);

struct Window {
    opened: Instant,
    logged: u32,
    suppressed: u64,
}

static WINDOWS: LazyLock<Mutex<HashMap<String, Window>>> = LazyLock::new(Default::default);

/// One line saying why a guest failed: the root cause (the trap itself), then
/// the innermost wasm frame when there is one.
pub fn describe(error: &wasmtime::Error) -> String {
    let cause = error.root_cause().to_string();
    let mut line = cause.lines().next().unwrap_or("").trim().to_string();
    if let Some(frame) = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first())
        .and_then(|f| f.func_name().map(str::to_string))
    {
        line.push_str(&format!(" (in {frame})"));
    }
    line
}

/// Whether a WARN line for `app` may be written now; `Some(n)` also says `n`
/// lines were held back in the window that just closed.
pub fn admit(app: &str, now: Instant) -> Option<u64> {
    let Ok(mut windows) = WINDOWS.lock() else {
        return Some(0);
    };
    let window = windows.entry(app.to_string()).or_insert(Window {
        opened: now,
        logged: 0,
        suppressed: 0,
    });
    let mut held_back = 0;
    if now.duration_since(window.opened) >= WINDOW {
        held_back = window.suppressed;
        *window = Window {
            opened: now,
            logged: 0,
            suppressed: 0,
        };
    }
    if window.logged < LINES_PER_WINDOW {
        window.logged += 1;
        Some(held_back)
    } else {
        window.suppressed += 1;
        None
    }
}

/// Logs `what` for `app` at WARN unless the app is past its lines for now.
pub fn warn(app: &str, what: std::fmt::Arguments<'_>) {
    match admit(app, Instant::now()) {
        Some(0) => tracing::warn!(app, "{what}"),
        Some(held_back) => {
            tracing::warn!(
                app,
                "{what} ({held_back} similar lines held back in the last {}s)",
                WINDOW.as_secs()
            )
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_writes_a_few_lines_then_a_count() {
        let start = Instant::now();
        let admitted = (0..1000)
            .filter(|_| admit("storm-test", start).is_some())
            .count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        assert!(
            admit("storm-test-neighbour", start).is_some(),
            "another app has its own window"
        );
        assert_eq!(
            admit("storm-test", start + WINDOW),
            Some(1000 - u64::from(LINES_PER_WINDOW))
        );
    }

    #[test]
    fn the_reason_survives_the_backtrace() {
        let engine = wasmtime::Engine::default();
        let module =
            wasmtime::Module::new(&engine, r#"(module (func (export "boom") unreachable))"#)
                .unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let boom = instance
            .get_typed_func::<(), ()>(&mut store, "boom")
            .unwrap();
        let error = boom.call(&mut store, ()).unwrap_err();
        assert!(format!("{error:#}").starts_with("error while executing at wasm backtrace:"));
        let line = describe(&error);
        assert!(
            line.contains("unreachable") && !line.contains('\n'),
            "{line}"
        );
    }
}
