//! WASI for guests: granted nothing by default. The interfaces are all linked (so
//! ordinary Rust `wasm32-wasip2` components instantiate), but no directory is
//! preopened (except the app's own `/data` with `[files]`, see `files.rs`), no host environment is inherited, sockets and name lookup are off.
//! What a guest may see: the manifest's `[env]` (and resolved `[secrets]`), clocks
//! and randomness. Its stdout and stderr become `tracing` lines tagged with the
//! app's name, so guest logs land with the host's.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::io::AsyncWrite;
use wasmtime_wasi::{
    WasiCtx, WasiCtxBuilder,
    cli::{IsTerminal, StdoutStream},
};

/// Per-app WASI settings, built once when the app is loaded.
pub struct WasiApp {
    app: Arc<str>,
    env: Vec<(String, String)>,
}

impl WasiApp {
    pub fn new(app: &str, env: Vec<(String, String)>) -> Self {
        Self {
            app: app.into(),
            env,
        }
    }

    pub fn load(ctx: &super::LoadContext<'_>) -> Self {
        Self::new(ctx.name, ctx.env.clone())
    }

    /// A fresh WASI context for one instance, with the app's files directory
    /// preopened when it has one.
    pub fn ctx(&self, files: Option<&super::files::FilesApp>) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        if let Some(files) = files {
            files.preopen(&mut builder);
        }
        builder
            .envs(&self.env)
            .stdout(GuestLog {
                app: self.app.clone(),
                stream: "stdout",
            })
            .stderr(GuestLog {
                app: self.app.clone(),
                stream: "stderr",
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        builder.build()
    }
}

/// A guest output stream that logs each line under the app's name.
#[derive(Clone)]
struct GuestLog {
    app: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            line: Vec::new(),
        })
    }
}

/// Longest line kept before it is logged anyway, so a guest that never writes a
/// newline cannot grow host memory.
const MAX_LINE: usize = 16 * 1024;

struct LineWriter {
    log: GuestLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(target: "guest", app = %self.log.app, stream = self.log.stream, "{}", text.trim_end());
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else {
                self.line.push(byte);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}
