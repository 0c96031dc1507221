//! Section 11: `[files]` — writing then reading 1 MiB and 4 KiB files through the
//! guest (`std::fs` in `components/test-files` on `/data`: wasi:filesystem,
//! the sandboxed resolver and the quota's lock and charge on every write),
//! timed inside the guest, vs the same loop with `std::fs` natively on a
//! folder of the same disk.

use crate::harness::{Host, manifest};
use std::{path::Path, time::Instant};

/// (file size, files per run).
const CASES: [(usize, usize); 2] = [(1 << 20, 64), (4096, 2000)];

/// Writes then reads `count` files of `size` bytes under `dir`: (write ns, read ns).
fn native(dir: &Path, size: usize, count: usize) -> (u64, u64) {
    let data = vec![7u8; size];
    std::fs::create_dir_all(dir.join("bench")).unwrap();
    let started = Instant::now();
    for i in 0..count {
        std::fs::write(dir.join(format!("bench/{i}")), &data).unwrap();
    }
    let wrote = started.elapsed().as_nanos() as u64;
    let started = Instant::now();
    for i in 0..count {
        assert_eq!(
            std::fs::read(dir.join(format!("bench/{i}"))).unwrap().len(),
            size
        );
    }
    let read = started.elapsed().as_nanos() as u64;
    for i in 0..count {
        std::fs::remove_file(dir.join(format!("bench/{i}"))).unwrap();
    }
    (wrote, read)
}

pub fn files() {
    println!("\n## 11. [files]: write then read through the guest vs std::fs natively");
    let host = Host::up(&[(
        "files",
        manifest(
            "files",
            "test-files",
            "[[routes]]\nhost = \"files.bench\"\n[files]\nquota = \"1GiB\"\n[resources]\nrequest_timeout = \"120s\"",
        ),
    )]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let native_dir = host.dir.path().join("native");
    println!("| files | op | guest | native std::fs | ratio |");
    println!("|---|---|---|---|---|");
    for (size, count) in CASES {
        // One warm-up run each, then the best of three.
        let mut guest = (u64::MAX, u64::MAX);
        let mut local = (u64::MAX, u64::MAX);
        for _ in 0..4 {
            let reply = runtime
                .block_on(host.get("files.bench", &format!("/bench?size={size}&count={count}")));
            assert_eq!(reply.status, 200, "{}", reply.text());
            let text = reply.text();
            let (w, r) = text.split_once(' ').unwrap();
            guest = (
                guest.0.min(w.parse().unwrap()),
                guest.1.min(r.parse().unwrap()),
            );
            let (w, r) = native(&native_dir, size, count);
            local = (local.0.min(w), local.1.min(r));
        }
        let label = if size >= 1 << 20 {
            format!("{count} × {} MiB", size >> 20)
        } else {
            format!("{count} × {} KiB", size >> 10)
        };
        for (op, g, n) in [("write", guest.0, local.0), ("read", guest.1, local.1)] {
            let per = |ns: u64| ns as f64 / count as f64 / 1000.0;
            println!(
                "| {label} | {op} | {:.1} µs/file | {:.1} µs/file | {:.2}× |",
                per(g),
                per(n),
                g as f64 / n as f64
            );
        }
    }
}
