//! Supply chain: `cargo audit` of Cargo.lock against the RustSec advisory
//! snapshot in `../shared/advisory-db` (offline: the network here cannot reach
//! the advisory database upstream), and the dependency that advisory used to
//! flag kept out of the lock file.

use crate::harness::workspace_root;
use std::{path::PathBuf, process::Command};

/// The advisory snapshot: `ALORIG_ADVISORY_DB`, else the first `shared/advisory-db`
/// beside the workspace root or one of its parents (CI: `../shared`).
fn advisory_db() -> PathBuf {
    if let Ok(path) = std::env::var("ALORIG_ADVISORY_DB") {
        return PathBuf::from(path);
    }
    let root = workspace_root();
    root.ancestors()
        .skip(1)
        .map(|dir| dir.join("shared/advisory-db"))
        .find(|db| db.join("crates").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no RustSec advisory snapshot: expected shared/advisory-db beside {} (or set ALORIG_ADVISORY_DB)",
                root.display()
            )
        })
}

#[test]
fn the_lock_file_has_no_known_advisory() {
    let db = advisory_db();
    let snapshot = std::fs::read_to_string(db.join("SNAPSHOT"))
        .unwrap_or_else(|_| "(no SNAPSHOT file)".into());
    eprintln!("cargo audit against {}: {}", db.display(), snapshot.trim());
    // --no-fetch: the snapshot is only read (CI's copy has no write bits).
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args(["audit", "--no-fetch", "--stale", "--db"])
        .arg(&db)
        .args(["--file", "Cargo.lock"])
        .output()
        .expect("running cargo audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("no such command"),
        "cargo-audit is not installed: deploy/quickstart.sh test installs it (cargo install --locked cargo-audit@0.22.2)"
    );
    assert!(
        out.status.success(),
        "cargo audit found advisories in Cargo.lock ({}):\n{stdout}\n{stderr}",
        snapshot.trim()
    );
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.contains("Scanning") || l.contains("Loaded"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// RUSTSEC-2023-0071 (`rsa`, Marvin attack, no fixed release) came in through
/// sqlx's MySQL driver, listed in the lock only because sqlx's `chrono` feature
/// names `sqlx-mysql?/chrono`; the host enables chrono on `sqlx-postgres` instead.
/// If either comes back, this says why it matters.
#[test]
fn the_mysql_driver_and_rsa_stay_out_of_the_lock_file() {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    for name in ["rsa", "sqlx-mysql"] {
        assert!(
            !lock.contains(&format!("\nname = \"{name}\"\n")),
            "{name} is back in Cargo.lock: enable sqlx's chrono support on sqlx-postgres, not on sqlx (RUSTSEC-2023-0071)"
        );
    }
}
