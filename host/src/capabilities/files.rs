//! `[files]`: a private directory for each app, `<data_dir>/files/<app>/`,
//! preopened in the guest as `/data` through standard `wasi:filesystem` (no
//! WIT of our own: Rust's `std::fs` and Python's `open` work as they are).
//!
//! **Confinement** is wasmtime-wasi's: every path a guest names is resolved
//! under the preopened directory handle by the sandboxed resolver wasmtime-wasi
//! 48 carries (cap-std's `cap-primitives`, imported into the crate), so `..`
//! past the root, absolute paths and symlinks leading out (planted by the
//! guest or by anyone else) fail with an error, never reach outside.
//! `read_only = true` preopens it with `FsPerms::ReadOnly`.
//!
//! **The quota** is the host's, enforced by interposing on
//! `wasi:filesystem/types` (`files/descriptor.rs`): every operation that can
//! make the directory hold more — `write`, `write-via-stream`,
//! `append-via-stream`, `set-size`, `open-at` with `create`, `create-directory-at`,
//! `symlink-at` — charges the app's [`Usage`] *before* its bytes land and fails
//! with `insufficient-space` (ENOSPC) past the quota; everything that frees
//! (`unlink-file-at`, `remove-directory-at`, `rename-at` over a file,
//! shrinking `set-size`, `open-at` with `truncate`) gives it back. Reads go
//! straight to wasmtime-wasi. One lock per app serializes the size-changing
//! operations of all its instances (and of its old and new versions during a
//! deploy), each reading the file's size and charging in the same critical
//! section, so concurrent writers cannot both pass a check that only one fits.
//!
//! What counts: each regular file's length (its highest written offset, holes
//! included) plus [`ENTRY_BYTES`] for every file, directory and symlink, so a
//! guest cannot fill the disk's inodes with empty files either. Hard links are
//! refused (`link-at` is `not-permitted`): one file's bytes would otherwise be
//! counted under two names and freed under one. Usage is recomputed from disk
//! when the host first loads the app (a restart cannot reset it); a file the
//! guest deletes while it still holds it open is refunded at the delete, and
//! what it writes to it afterwards stays charged until the next start.
//!
//! Removing an app keeps its directory (`remove --purge` deletes it).

mod descriptor;
mod stream;

pub use descriptor::{FilesView, HasFiles};

use crate::{config::Manifest, metrics::FilesMetrics};
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};
use wasmtime::component::Linker;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What each file, directory and symlink costs besides its contents: one
/// filesystem block, about what the name and its inode take on disk.
pub const ENTRY_BYTES: u64 = 4096;

/// Where the guest sees its directory.
pub const GUEST_PATH: &str = "/data";

/// The host's side: where app directories live and each app's usage, kept for
/// as long as the process runs so every version of an app shares one count.
pub struct FilesHost {
    root: PathBuf,
    usage: Mutex<HashMap<String, Arc<Usage>>>,
}

impl FilesHost {
    /// App directories under `<data_dir>/files/`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("files"),
            usage: Mutex::new(HashMap::new()),
        }
    }

    /// The directory of `app` (it may not exist).
    pub fn dir(&self, app: &str) -> PathBuf {
        self.root.join(app)
    }

    /// The app's usage, read from disk the first time this process asks.
    async fn usage(&self, app: &str, metrics: FilesMetrics) -> std::io::Result<Arc<Usage>> {
        if let Some(usage) = self.lock().get(app) {
            return Ok(usage.clone());
        }
        let dir = self.dir(app);
        let bytes = tokio::task::spawn_blocking(move || {
            create_private_dir(&dir)?;
            disk_usage(&dir)
        })
        .await
        .map_err(std::io::Error::other)??;
        // Two versions loading at once both counted; the first one in wins.
        let usage = self
            .lock()
            .entry(app.to_string())
            .or_insert_with(|| Arc::new(Usage::new(bytes, metrics)))
            .clone();
        usage.publish(usage.bytes());
        Ok(usage)
    }

    /// Deletes the app's directory and forgets its usage (`remove --purge`).
    /// Instances of the removed version still running see their directory gone.
    pub fn purge(&self, app: &str) -> std::io::Result<bool> {
        if let Some(usage) = self.lock().remove(app) {
            usage.publish(0);
        }
        match std::fs::remove_dir_all(self.dir(app)) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Usage>>> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// What the quota counts in `dir` (not following symlinks): lengths of
/// regular files (a hard-linked file once) plus [`ENTRY_BYTES`] per entry.
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            total = total.saturating_add(ENTRY_BYTES);
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.file_type().is_symlink()
                || (meta.is_file() && (meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino()))))
            {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}

/// One app's bytes charged against its quota, shared by all its instances and
/// versions. The lock is held by every size-changing operation from reading
/// the sizes it depends on until its effect is counted.
pub struct Usage {
    pub(super) charged: tokio::sync::Mutex<u64>,
    /// The last published figure, for readers that must not wait for the lock.
    seen: AtomicU64,
    metrics: FilesMetrics,
}

impl Usage {
    fn new(bytes: u64, metrics: FilesMetrics) -> Self {
        Self {
            charged: tokio::sync::Mutex::new(bytes),
            seen: AtomicU64::new(bytes),
            metrics,
        }
    }

    /// Bytes in use, as last counted.
    pub fn bytes(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Call with the lock held, after each change.
    pub(super) fn publish(&self, bytes: u64) {
        self.seen.store(bytes, Ordering::Relaxed);
        self.metrics.bytes.set(bytes.min(i64::MAX as u64) as i64);
    }
}

/// One app version's files: its directory, its quota and the shared usage.
pub struct FilesApp {
    app: Arc<str>,
    dir: PathBuf,
    pub quota: u64,
    pub read_only: bool,
    pub usage: Arc<Usage>,
    metrics: FilesMetrics,
    /// `validate`: nothing on disk is created or preopened.
    offline: bool,
}

impl FilesApp {
    /// The app's `[files]`, if any: its directory is created (0700) and its
    /// usage counted from disk the first time the process loads the app.
    pub async fn load(ctx: &super::LoadContext<'_>) -> Result<Option<Self>, super::LoadError> {
        let host = ctx.files;
        let Some(files) = &ctx.manifest.files else {
            return Ok(None);
        };
        let metrics = ctx.metrics.files(ctx.name);
        let dir = host.dir(ctx.name);
        let usage = if ctx.offline {
            Arc::new(Usage::new(0, metrics.clone()))
        } else {
            host.usage(ctx.name, metrics.clone()).await.map_err(|err| {
                super::LoadError::host(format!(
                    "{}: files: cannot prepare {}: {err}",
                    ctx.source(),
                    dir.display()
                ))
            })?
        };
        Ok(Some(Self {
            app: ctx.name.clone(),
            dir,
            quota: files.quota.bytes(),
            read_only: files.read_only,
            usage,
            metrics,
            offline: ctx.offline,
        }))
    }

    /// Marks this version's quota as the one in force (its limit gauge).
    pub fn activate(&self) {
        self.metrics
            .limit
            .set(self.quota.min(i64::MAX as u64) as i64);
    }

    /// The app was removed: no quota is in force (its files may stay).
    pub fn deactivate(&self) {
        self.metrics.limit.set(0);
    }

    /// Preopens the directory as `/data` in a new instance's WASI context.
    /// A directory removed behind the host's back is made again (empty).
    pub fn preopen(&self, builder: &mut WasiCtxBuilder) {
        if self.offline {
            return;
        }
        let perms = if self.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        let opened = builder
            .preopened_dir(&self.dir, GUEST_PATH, perms)
            .map(|_| ())
            .or_else(|_| {
                create_private_dir(&self.dir).map_err(wasmtime::Error::from)?;
                builder
                    .preopened_dir(&self.dir, GUEST_PATH, perms)
                    .map(|_| ())
            });
        if let Err(err) = opened {
            tracing::warn!(app = %self.app, fault = "host", dir = %self.dir.display(),
                "files: cannot open the app's directory, the instance has no /data: {err}");
        }
    }
}

/// The grants of `[files]` for the deploy diff: the directory itself, its
/// being writable, and the quota (a larger one is a wider grant).
pub fn grants(manifest: &Manifest) -> Vec<super::Grant> {
    let Some(files) = &manifest.files else {
        return Vec::new();
    };
    let mut grants = vec![super::Grant {
        key: "files".into(),
        text: format!("files: a private directory {GUEST_PATH}"),
        amount: None,
    }];
    if !files.read_only {
        grants.push(super::Grant {
            key: "files writable".into(),
            text: format!("files: {GUEST_PATH} writable"),
            amount: None,
        });
    }
    grants.push(super::Grant {
        key: "files quota".into(),
        text: format!("files: quota {}", files.quota),
        amount: Some(files.quota.bytes()),
    });
    grants
}

/// The per-instance state: the app's files, when its manifest has `[files]`.
#[derive(Default)]
pub struct FilesCtx {
    app: Option<Arc<FilesApp>>,
}

impl FilesCtx {
    pub fn new(app: Option<&Arc<FilesApp>>) -> Self {
        Self { app: app.cloned() }
    }
}

/// Links `wasi:filesystem/types` with the quota in front of wasmtime-wasi's
/// implementation, in place of the plain one `wasmtime_wasi::p2::add_to_linker_async`
/// linked (call it after that). `view` projects the store's state onto the
/// WASI filesystem context, its table and this instance's [`FilesCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> FilesView<'_>,
) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let linked =
        wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<T, HasFiles>(linker, view);
    linker.allow_shadowing(false);
    linked?;
    Ok(())
}

#[cfg(test)]
mod tests;
