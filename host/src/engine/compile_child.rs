//! Compiling a component in a child process, bounded in memory and time.
//!
//! Cranelift's working memory for a large component (the 18 MB Python one) is
//! hundreds of MiB, and an allocator seldom gives all of it back: compiled in
//! the host, every deploy would leave the host fatter. So the host runs itself
//! again with a hidden subcommand ([`SUBCOMMAND`]) that reads the component
//! from its file, compiles it with an engine of the same compilation settings (no
//! pooling allocator: it only compiles), writes the artifact to the file the
//! compile cache names, and exits — its memory goes back to the system whole.
//! The child runs under an address-space limit ([`MEMORY_LIMIT`], `RLIMIT_AS`)
//! and is killed past [`TIME_LIMIT`]. The host then maps the artifact from the
//! cache, as it would after a restart.
//!
//! Only the `alorig-host` binary can be its own compiler: it says so with
//! [`use_current_exe`] at start. Anything else embedding the library (tests,
//! the benchmark) compiles in-process, as before.

use anyhow::{Context as _, Result, bail};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

/// The hidden subcommand of `alorig-host` that compiles one component.
pub const SUBCOMMAND: &str = "__compile-component";
/// Address space the compiling child may map (heap, stacks, code).
pub const MEMORY_LIMIT: u64 = 4 << 30;
/// How long one compilation may take.
pub const TIME_LIMIT: Duration = Duration::from_secs(300);

static EXE: OnceLock<PathBuf> = OnceLock::new();

/// Makes compilations run in a child process of this executable.
pub fn use_current_exe() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = EXE.set(exe);
    }
}

/// The executable to compile with, when [`use_current_exe`] was called.
pub fn compiler() -> Option<&'static Path> {
    EXE.get().map(PathBuf::as_path)
}

/// In the host: compiles the component in `input` into `output` in a child process.
pub async fn compile(exe: &Path, input: &Path, output: &Path) -> Result<()> {
    let child = tokio::process::Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(input)
        .arg(output)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the compiler process {}", exe.display()))?;
    let output_status = match tokio::time::timeout(TIME_LIMIT, child.wait_with_output()).await {
        Ok(result) => result.context("the compiler process failed")?,
        Err(_) => bail!(
            "compiling took longer than {}s and was stopped",
            TIME_LIMIT.as_secs()
        ),
    };
    if output_status.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(output);
    let stderr = String::from_utf8_lossy(&output_status.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let last = last.strip_prefix("error: ").unwrap_or(last);
    if last.contains("memory allocation")
        || (last.is_empty() && output_status.status.code().is_none_or(|c| c != 1))
    {
        bail!(
            "compiling needed more than the compiler's memory limit of {} (or the compiler was killed: {})",
            crate::config::ByteSize(MEMORY_LIMIT),
            output_status.status
        );
    }
    bail!("{last}")
}

/// In the child: limits itself, reads the component from `input`, compiles it
/// and writes the artifact to `output`.
pub fn child_main(
    engine: impl FnOnce() -> Result<wasmtime::Engine>,
    input: &Path,
    output: &Path,
) -> Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    // A compiler whose host died (SIGKILL mid-deploy) must not outlive it and
    // write into the compile cache after the next host cleaned it.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(MEMORY_LIMIT),
            maximum: Some(MEMORY_LIMIT),
        },
    )
    .context("cannot limit the compiler's memory")?;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let engine = engine()?;
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(anyhow::Error::from)
        .context("component does not compile")?;
    let mut file = std::fs::File::create(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    file.write_all(&compiled)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}
