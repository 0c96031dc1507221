//! The one wasmtime [`Engine`] the host runs every app on, and the compile cache.
//!
//! Choices, and why:
//! * Pooling allocator with copy-on-write memory images: a fresh instance per
//!   request costs microseconds, and memory slots are reused, not re-mapped.
//! * Epoch interruption with one ticker thread for the whole engine: a guest that
//!   computes forever is preempted every tick (so it cannot pin a tokio worker)
//!   and trapped at its deadline.
//! * Components are compiled ahead of time, off the request path, and cached on
//!   disk by content hash, so a restart or a second `up` never recompiles.
//!   The `alorig-host` binary compiles in a bounded child process
//!   ([`compile_child`]), so a deploy never leaves the host fatter.

pub mod compile_child;

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use std::{
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    component::Component,
};

/// Bytes of each linear-memory slot kept resident (reset in place) on reuse.
const KEEP_RESIDENT: usize = 8 << 20;

/// How often the epoch advances; also how often a computing guest yields, and
/// so how long a guest may compute on an ingress thread before it moves to the
/// guest pool ([`crate::limits::cpu`]): short, so a neighbour's request never
/// waits long behind it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Builds the engine, sized for `max_instances` live instances across all apps.
pub fn build_engine(max_instances: u32) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // Rust `wasm32-wasip2` components hold a handful of core instances and at most
    // two memories; these per-component bounds leave room for other toolchains.
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(8))
        .total_memories(max_instances.saturating_mul(2))
        .total_tables(max_instances.saturating_mul(4))
        .total_stacks(max_instances)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(100_000)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        // The per-app accountant enforces the real ceilings; the pool only
        // needs slots as large as the largest possible 32-bit memory.
        .max_memory_size(crate::config::manifest::MAX_INSTANCE_MEMORY.bytes() as usize)
        // Recycling a slot with `madvise` costs a TLB shootdown on every core and
        // page faults on the next request: the profile of a fresh-instance-per-
        // request host is dominated by it. Instead keep the low pages of each
        // slot resident and, where the kernel has PAGEMAP_SCAN (Linux 6.7+),
        // reset only the pages the guest actually dirtied.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = compile_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly engine")
}

/// The settings that shape compiled code, shared by the serving engine and
/// the compiler process (whose artifacts the serving engine loads).
fn compile_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_init_cow(true)
        .wasm_component_model(true);
    config
}

/// An engine that only compiles: no instance pool, so no address space reserved.
pub fn compile_engine() -> Result<Engine> {
    Engine::new(&compile_config())
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly compiler")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, for
/// as long as the process lives.
pub fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Maps a compiled component from the cache so that only the code and data
/// an app touches become resident, 4 KiB at a time.
///
/// The file was written in one piece (by the compiler, or read whole by an
/// earlier load), so its page cache holds large folios, and Linux (6.18 on
/// ext4) maps a whole folio, up to 2 MiB, on the first touch of any page in
/// it: the Python component's 34 MiB of compiled code became ~25 MiB of host
/// RSS after 20 requests. Writing back and dropping the file's cached pages,
/// then advising random access on the mapping, makes each fault read just
/// the page it needs: the host holds the code an app runs, not its neighbours.
/// Pages another loaded component still maps stay cached (the kernel keeps
/// mapped pages); advice that fails costs only the saving.
fn map_lazily(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    use rustix::fs::{Advice, fadvise, fdatasync};
    if let Ok(file) = std::fs::File::open(path) {
        let _ = fdatasync(&file).and_then(|()| fadvise(&file, 0, None, Advice::DontNeed));
    }
    // SAFETY: files in the cache folder are written only by `CompileCache::store`
    // or by the compiler process, via write-then-rename, from
    // `Engine::precompile_component` of this same engine configuration (the
    // file name carries its compatibility hash).
    let component = unsafe { Component::deserialize_file(engine, path) }?;
    let image = component.image_range();
    let page = rustix::param::page_size();
    let start = image.start as usize & !(page - 1);
    let end = image.end as usize;
    // SAFETY: advice only, on pages of the component's own mapping; MADV_RANDOM
    // changes how faults read ahead, never the contents.
    let _ = unsafe {
        rustix::mm::madvise(
            start as *mut std::ffi::c_void,
            end.saturating_sub(start),
            rustix::mm::Advice::Random,
        )
    };
    Ok(component)
}

/// Compiled components on disk, keyed by the component's content hash and the
/// engine's compatibility hash (a wasmtime upgrade or config change misses).
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// A loaded component and where it came from.
pub struct Compiled {
    pub component: Component,
    /// Hex SHA-256 of the component bytes.
    pub digest: String,
    /// Whether it was loaded from the cache rather than compiled now.
    pub cached: bool,
}

impl CompileCache {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("compiled"),
        }
    }

    /// Loads `bytes` as a component, compiling it on a blocking thread unless a
    /// compiled copy is cached. Call only after [`crate::validate::check_bytes`].
    pub async fn load(&self, engine: &Engine, bytes: Arc<Vec<u8>>) -> Result<Compiled> {
        let digest = hex::encode(Sha256::digest(bytes.as_slice()));
        let path = self.path(engine, &digest);
        if let Some(cached) = self.cached(engine, &path, &digest) {
            return Ok(cached);
        }
        let compile_engine = engine.clone();
        let compiled =
            tokio::task::spawn_blocking(move || compile_engine.precompile_component(&bytes))
                .await
                .context("the compiler thread failed")?
                .map_err(anyhow::Error::from)
                .context("component does not compile")?;
        self.store(&path, &compiled)?;
        self.load_compiled(engine, &path, digest)
    }

    /// Like [`Self::load`], for a component in a file: the `alorig-host`
    /// binary compiles it in a child process ([`compile_child`]) and never
    /// holds the component's bytes; anything else reads it and compiles in-process.
    pub async fn load_file(&self, engine: &Engine, file: &Path) -> Result<Compiled> {
        let Some(exe) = compile_child::compiler() else {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            return self.load(engine, Arc::new(bytes)).await;
        };
        let digest = file_digest(file)?;
        let path = self.path(engine, &digest);
        if let Some(cached) = self.cached(engine, &path, &digest) {
            return Ok(cached);
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the compile cache {}", self.dir.display()))?;
        let tmp = partial_path(&path);
        compile_child::compile(exe, file, &tmp).await?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        self.load_compiled(engine, &path, digest)
    }

    /// The cache file of a component: its digest and the engine's compatibility hash.
    fn path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", engine_hash.finish()))
    }

    fn cached(&self, engine: &Engine, path: &Path, digest: &str) -> Option<Compiled> {
        if !path.exists() {
            return None;
        }
        match map_lazily(engine, path) {
            Ok(component) => Some(Compiled {
                component,
                digest: digest.to_string(),
                cached: true,
            }),
            Err(err) => {
                tracing::warn!(path = %path.display(), fault = "host", "recompiling: cached component unusable: {err:#}");
                None
            }
        }
    }

    fn load_compiled(&self, engine: &Engine, path: &Path, digest: String) -> Result<Compiled> {
        let component = map_lazily(engine, path)
            .map_err(anyhow::Error::from)
            .context("cannot load the compiled component")?;
        Ok(Compiled {
            component,
            digest,
            cached: false,
        })
    }

    /// Deletes half-written files a killed process left (`*.tmp<pid>` of other
    /// processes); a cached file itself is only ever complete (write-then-rename).
    pub fn clean_partial(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let own = format!("tmp{}-", std::process::id());
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext.starts_with("tmp") && !ext.starts_with(&own) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the compile cache {}", self.dir.display()))?;
        let tmp = partial_path(path);
        std::fs::write(&tmp, compiled)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Where a compiled file is written before its rename into the cache: named
/// by this process and a count, so two apps of the same component compiling at
/// once (they load side by side) each write their own.
fn partial_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("tmp{}-{n}", std::process::id()))
}

/// Hex SHA-256 of a file, read in 64 KiB pieces.
fn file_digest(file: &Path) -> Result<String> {
    use std::io::Read as _;
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_compiler_process_builds_the_serving_engine_loads() {
        let serving = build_engine(4).unwrap();
        let compiler = compile_engine().unwrap();
        let hash = |e: &Engine| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        assert_eq!(
            hash(&serving),
            hash(&compiler),
            "the cache file name must match"
        );
        let component = wat::parse_str("(component (core module (func (export \"f\"))))").unwrap();
        let compiled = compiler.precompile_component(&component).unwrap();
        // SAFETY: the bytes were just produced by `precompile_component`.
        unsafe { Component::deserialize(&serving, &compiled) }.unwrap();
    }
}
