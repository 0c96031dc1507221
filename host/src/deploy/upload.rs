//! Deploy uploads, streamed to disk.
//!
//! An upload is the manifest's bytes (held, at most [`MAX_MANIFEST`]) and then
//! the component's, written to a file under `<data_dir>/uploads/` as they
//! arrive, so an upload costs the host a read buffer, not its size. At most
//! [`MAX_CONCURRENT`] uploads are read at once: the next waits for a permit
//! without reading its body (TCP holds the client back). The deploy then reads
//! the file once, under the one-deploy-at-a-time lock, and stores the version
//! by copying it.

use super::ApiError;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};
use tokio::{io::AsyncWriteExt as _, sync::Semaphore};

/// Uploads read at the same time.
pub const MAX_CONCURRENT: usize = 2;
/// The largest manifest an upload may carry.
pub const MAX_MANIFEST: usize = 1 << 20;

/// Where uploads are written, and how many may be read at once.
pub struct Spool {
    dir: PathBuf,
    permits: Semaphore,
}

/// An uploaded component file, deleted when dropped.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spool {
    /// Deletes what a killed host left in `<data_dir>/uploads`.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("uploads");
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            dir,
            permits: Semaphore::new(MAX_CONCURRENT),
        }
    }

    /// Reads an upload: the manifest's `manifest_len` bytes, then the component
    /// into a file. Past `limit` bytes in all, or on a cut-off body, it is
    /// refused (413/400) and the file deleted.
    pub async fn receive(
        &self,
        body: &mut Incoming,
        manifest_len: usize,
        limit: u64,
        too_large: impl Fn() -> ApiError,
    ) -> Result<(Vec<u8>, Spooled), ApiError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if manifest_len > MAX_MANIFEST {
            return Err(ApiError::new(
                400,
                "bad_request",
                format!("Alorig-Manifest-Length: a manifest is at most {MAX_MANIFEST} bytes"),
            ));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::new(503, "shutting_down", "the host is stopping"))?;
        let storage = |e: std::io::Error| {
            ApiError::new(
                500,
                "storage",
                format!("cannot write the upload to {}: {e}", self.dir.display()),
            )
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(storage)?;
        let spooled = Spooled {
            path: self.dir.join(format!(
                "{}-{}.part",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )),
        };
        let mut file = tokio::fs::File::create(spooled.path())
            .await
            .map_err(storage)?;
        let mut manifest = Vec::with_capacity(manifest_len);
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(400, "bad_request", format!("the upload was cut off: {e}"))
            })?;
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limit {
                return Err(too_large());
            }
            let head = (manifest_len - manifest.len()).min(data.len());
            manifest.extend_from_slice(&data.split_to(head));
            if !data.is_empty() {
                file.write_all(&data).await.map_err(storage)?;
            }
        }
        if manifest.len() < manifest_len {
            return Err(ApiError::new(
                400,
                "bad_request",
                "Alorig-Manifest-Length is longer than the upload",
            ));
        }
        file.flush().await.map_err(storage)?;
        Ok((manifest, spooled))
    }
}
