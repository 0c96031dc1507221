//! `[files]`: the app's private directory as `/data`. Every way out of it fails
//! and changes nothing outside it (the parent tree is hashed before and after);
//! a read-only directory cannot be changed by any operation (wasmtime's
//! FilePerms advisories RUSTSEC-2026-0149 and -0188: truncate, hard link,
//! rename); the quota holds for one writer and for eight instances racing,
//! survives a restart, is freed by deleting; a neighbour keeps serving.

use crate::harness::{Host, guest, manifest};
use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// What the host counts per file, directory and symlink besides contents.
const ENTRY: u64 = 4096;

fn files_app(name: &str, extra: &str) -> String {
    manifest(
        name,
        "test-files",
        &format!("[[routes]]\nhost = \"{name}.test\"\n{extra}"),
    )
}

/// Every entry under `root` but `skip`: path → (kind, mode, contents or link target).
fn tree(root: &Path, skip: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mut h = DefaultHasher::new();
            meta.mode().hash(&mut h);
            if meta.is_dir() {
                pending.push(path.clone());
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&path).unwrap().hash(&mut h);
            } else {
                std::fs::read(&path).unwrap().hash(&mut h);
            }
            out.insert(path.display().to_string(), h.finish());
        }
    }
    out
}

/// The quota's count of `dir`, from the disk: file lengths plus an entry each.
fn counted(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        total += ENTRY;
        if meta.is_dir() {
            total += counted(&path);
        } else {
            total += meta.len();
        }
    }
    total
}

async fn used(host: &Host, app: &str) -> u64 {
    host.metric("alorig_app_files_bytes", &format!("app=\"{app}\""))
        .await as u64
}

fn every_line_refused(report: &str, attacks: usize) {
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), attacks, "{report}");
    for line in lines {
        assert!(
            line.contains(": refused ("),
            "not refused: {line}\n{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_every_way_out_of_data_fails_and_nothing_outside_changes() {
    let quota = "[files]\nquota = \"1MiB\"";
    let host = Host::up(&[
        ("files", files_app("files", quota)),
        ("neighbour", files_app("neighbour", quota)),
    ]);
    let reply = host
        .request(
            "PUT",
            "neighbour.test",
            "/write?name=secret",
            b"neighbour's".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let files = host.data.join("files");
    let own = files.join("files");
    // Planted from outside, while the host runs.
    std::os::unix::fs::symlink("/etc", own.join("etc")).unwrap();
    std::os::unix::fs::symlink("..", own.join("up")).unwrap();
    std::fs::write(own.join("mine.txt"), b"mine").unwrap();
    std::fs::write(host.dir.path().join("outside.txt"), b"outside").unwrap();
    let before = tree(host.dir.path(), &own);
    let passwd = std::fs::read("/etc/passwd").unwrap();

    let report = host.get("files.test", "/attacks?other=neighbour").await;
    assert_eq!(report.status, 200, "{}", report.text());
    every_line_refused(&report.text(), 21);

    assert_eq!(
        tree(host.dir.path(), &own),
        before,
        "something outside /data changed"
    );
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(std::fs::read(own.join("mine.txt")).unwrap(), b"mine");
    let secret = host.get("neighbour.test", "/read?name=secret").await;
    assert_eq!(
        (secret.status, secret.text().as_str()),
        (200, "neighbour's")
    );
    // The app's own files are its own.
    assert_eq!(
        host.get("files.test", "/read?name=mine.txt").await.text(),
        "mine"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_a_read_only_directory_cannot_be_changed_by_truncate_link_rename_or_anything() {
    let host = Host::up(&[(
        "ro",
        files_app("ro", "[files]\nquota = \"1MiB\"\nread_only = true"),
    )]);
    let own = host.data.join("files/ro");
    std::fs::write(own.join("seed.txt"), b"seed").unwrap();
    let before = tree(&host.data.join("files"), Path::new("/nothing"));

    let report = host
        .get("ro.test", "/read-only-attacks?name=seed.txt")
        .await;
    assert_eq!(report.status, 200, "{}", report.text());
    every_line_refused(&report.text(), 13);

    assert_eq!(
        tree(&host.data.join("files"), Path::new("/nothing")),
        before
    );
    assert_eq!(
        host.get("ro.test", "/read?name=seed.txt").await.text(),
        "seed"
    );
    let write = host
        .request("PUT", "ro.test", "/write?name=new", b"x".to_vec())
        .await;
    assert_eq!(write.status, 500, "{}", write.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_one_writer_past_the_quota_gets_no_space_and_deleting_frees_it() {
    let quota: u64 = 256 << 10;
    let host = Host::up(&[("q", files_app("q", "[files]\nquota = \"256KiB\""))]);
    let own = host.data.join("files/q");
    assert_eq!(
        host.metric("alorig_app_files_limit_bytes", "app=\"q\"")
            .await as u64,
        quota
    );

    // At the WASI level a stream write past the quota is `insufficient-space`
    // (wasi-libc turns it into EIO: guest_kit::files asks for the code itself).
    let probe = host.get("q.test", "/stream-error?name=s").await;
    assert!(
        probe.text().contains("insufficient-space"),
        "{}",
        probe.text()
    );
    assert_eq!(host.get("q.test", "/delete?name=s").await.status, 200);
    let reply = host
        .request("PUT", "q.test", "/write?name=a", vec![1; 100 << 10])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(used(&host, "q").await, (100 << 10) + ENTRY);
    let reply = host
        .request("PUT", "q.test", "/write?name=d/b", vec![2; 200 << 10])
        .await;
    assert_eq!((reply.status, reply.text().as_str()), (507, "no-space"));
    let after = used(&host, "q").await;
    assert!(after <= quota, "{after} > {quota}");
    assert_eq!(after, counted(&own), "the count follows the disk");

    // The figures in `status` (JSON and table).
    let (code, json, _) = host.cli(&["status", "--json"]);
    assert_eq!(code, 0);
    let apps: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(apps[0]["files_bytes"].as_u64(), Some(after));
    assert_eq!(apps[0]["files_limit_bytes"].as_u64(), Some(quota));
    let (_, table, _) = host.cli(&["status"]);
    assert!(
        table.contains("FILES / QUOTA") && table.contains("/ 256KiB"),
        "{table}"
    );

    assert_eq!(host.get("q.test", "/delete?name=d/b").await.status, 200);
    assert_eq!(
        used(&host, "q").await,
        (100 << 10) + 2 * ENTRY,
        "a and the folder d"
    );
    let reply = host
        .request("PUT", "q.test", "/write?name=d/b", vec![3; 100 << 10])
        .await;
    assert_eq!(reply.status, 200, "freed room is usable: {}", reply.text());
    assert_eq!(used(&host, "q").await, counted(&own));
}

#[tokio::test(flavor = "multi_thread")]
async fn files_eight_instances_racing_past_the_quota_end_under_it_and_a_neighbour_keeps_serving() {
    let quota: u64 = 1 << 20;
    let host = Arc::new(Host::up(&[
        (
            "race",
            files_app(
                "race",
                "[files]\nquota = \"1MiB\"\n[resources]\nmax_concurrency = 16",
            ),
        ),
        (
            "echo",
            manifest("echo", "test-echo", "[[routes]]\nhost = \"echo.test\""),
        ),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let neighbour = {
        let (host, stop, served, failed) =
            (host.clone(), stop.clone(), served.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match host.try_get("echo.test", "/count").await {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let racers: Vec<_> = (0..8)
        .map(|n| {
            let host = host.clone();
            tokio::spawn(async move {
                host.get("race.test", &format!("/fill?name=f{n}&chunk=8192"))
                    .await
            })
        })
        .collect();
    let mut written = 0;
    for racer in racers {
        let reply = racer.await.unwrap();
        let text = reply.text();
        assert_eq!(reply.status, 507, "{text}");
        written += text
            .strip_prefix("no-space ")
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    neighbour.await.unwrap();

    let own = host.data.join("files/race");
    let on_disk = counted(&own);
    assert!(on_disk <= quota, "{on_disk} > {quota}");
    assert!(written + 8 * ENTRY <= quota, "{written}");
    assert!(
        on_disk > quota - 8 * (8192 + ENTRY),
        "the quota was used up: {on_disk}"
    );
    assert_eq!(used(&host, "race").await, on_disk);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(host.get("echo.test", "/count").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_usage_survives_a_restart_remove_keeps_files_and_purge_deletes_them() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("keep.toml");
    std::fs::write(
        &manifest_path,
        files_app("keep", "[files]\nquota = \"128KiB\""),
    )
    .unwrap();
    let manifest_path = manifest_path.display().to_string();
    let full;
    {
        let host = Host::serve(data.path(), "");
        let (code, _, err) = host.cli(&["deploy", &manifest_path]);
        assert_eq!(code, 0, "{err}");
        let reply = host.get("keep.test", "/fill?name=big&chunk=4096").await;
        assert_eq!(reply.status, 507, "{}", reply.text());
        full = used(&host, "keep").await;
        assert!(full > (128 << 10) - 4096 - ENTRY, "{full}");
        host.kill();
    }
    let host = Host::serve(data.path(), "");
    assert_eq!(
        used(&host, "keep").await,
        full,
        "recomputed from disk at start"
    );
    let reply = host
        .request("PUT", "keep.test", "/write?name=more", vec![1; 8192])
        .await;
    assert_eq!(
        reply.status,
        507,
        "a restart does not reset the quota: {}",
        reply.text()
    );
    assert_eq!(host.get("keep.test", "/delete?name=big").await.status, 200);
    assert_eq!(used(&host, "keep").await, 0);
    let reply = host
        .request("PUT", "keep.test", "/write?name=more", vec![1; 8192])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Remove keeps the files; a new deploy finds them.
    let (code, out, err) = host.cli(&["remove", "keep"]);
    assert_eq!((code, out.trim()), (0, "keep: removed"), "{err}");
    assert!(host.data.join("files/keep/more").exists());
    let (code, _, err) = host.cli(&["deploy", &manifest_path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        host.get("keep.test", "/read?name=more").await.body.len(),
        8192
    );
    let (code, out, err) = host.cli(&["remove", "keep", "--purge"]);
    assert_eq!(
        (code, out.trim()),
        (0, "keep: removed, its files deleted"),
        "{err}"
    );
    assert!(!host.data.join("files/keep").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_a_larger_quota_or_a_writable_directory_needs_deploy_yes() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::serve(data.path(), "");
    let deploy = |files: &str, yes: bool| {
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"g\"\ncomponent = \"{}\"\n[[routes]]\nhost = \"g.test\"\n{files}",
                guest("test-files").display()
            ),
        )
        .unwrap();
        let path = path.display().to_string();
        let mut args = vec!["deploy", path.as_str()];
        if yes {
            args.push("--yes");
        }
        host.cli(&args)
    };
    let (code, _, err) = deploy("[files]\nquota = \"1MiB\"\nread_only = true", false);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = deploy("[files]\nquota = \"1MiB\"", false);
    assert_ne!(code, 0);
    assert!(out.contains("files: /data writable"), "{out}");
    let (code, out, _) = deploy("[files]\nquota = \"2MiB\"\nread_only = true", false);
    assert_ne!(code, 0);
    assert!(out.contains("files: quota 2MiB"), "{out}");
    let (code, _, err) = deploy("[files]\nquota = \"512KiB\"\nread_only = true", false);
    assert_eq!(code, 0, "a smaller quota is narrower: {err}");
    let (code, _, err) = deploy("[files]\nquota = \"2MiB\"", true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        host.metric("alorig_app_files_limit_bytes", "app=\"g\"")
            .await as u64,
        2 << 20
    );
}
