//! How the host's allocator gives memory back after a spike.
//!
//! The host is glibc-linked and long-running, and its spikes are short (a large
//! result, reply, upload or body, then nothing). With glibc's defaults that
//! memory often stays: a freed large block raises the dynamic mmap threshold
//! (up to 32 MiB), so the next large blocks come from the heap arenas instead
//! of `mmap`; there are up to 8 arenas per core; and only the top of each heap
//! is ever trimmed. So, at start ([`configure`]):
//! * `M_MMAP_THRESHOLD` = 256 KiB, fixed: every large buffer is its own
//!   mapping, unmapped when freed (setting it also turns the dynamic raise off);
//! * `M_TRIM_THRESHOLD` = 4 MiB: free memory at the top of a heap goes back soon;
//! * `M_ARENA_MAX` = 2 per core: fewer heaps to strand free memory in;
//! * a trimmer thread calls `malloc_trim(0)` (which also returns free pages in
//!   the middle of every arena) when the resident size has grown since the
//!   last trim, at most every [`TRIM_EVERY`].
//!
//! Measured against glibc's defaults in BENCHMARKS.md (section 9 of the
//! suite); jemalloc was not measured.
//! `ALORIG_ALLOCATOR=default` leaves glibc's defaults (for that comparison).

use std::time::Duration;

/// How often the trimmer looks at the resident size.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);
/// Growth of the resident size since the last trim that calls for another.
const TRIM_AFTER_GROWTH: u64 = 8 << 20;

/// Tunes the allocator and starts the trimmer; call once, first thing.
pub fn configure() {
    if std::env::var("ALORIG_ALLOCATOR").is_ok_and(|v| v == "default") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as i32;
        // SAFETY: mallopt only sets allocator parameters; called before other threads allocate much.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_ARENA_MAX, 2 * cores);
        }
        let _ = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| {
                let resident = crate::metrics::resident_memory_bytes;
                let mut after_last_trim = resident();
                loop {
                    std::thread::sleep(TRIM_EVERY);
                    let now = resident();
                    if now > after_last_trim + TRIM_AFTER_GROWTH {
                        // SAFETY: malloc_trim is thread-safe; 0 keeps no padding.
                        unsafe { libc::malloc_trim(0) };
                        after_last_trim = resident();
                    } else {
                        after_last_trim = after_last_trim.min(now);
                    }
                }
            });
    }
}
