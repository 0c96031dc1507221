//! A byte-counting relay between a client library and a server, charging what
//! the server sends to the app's memory budget before the library reads it.
//!
//! Client libraries (sqlx, redis-rs) read each message or reply whole, sized
//! by the server, with no hook to bound it. So an app's connections go to a
//! [`Relay`] on a private Unix socket instead, which copies the client's bytes
//! to the server unchanged and reads the server's in 64 KiB chunks through a
//! [`Framing`] that follows the protocol's framing: a message that fits is
//! charged and handed on; one that does not is never held — the framing
//! answers in its place with the protocol's own error. PostgreSQL's framing
//! then has the relay close both sides (the server abandons the statement; the
//! pool discards that one connection); Redis's reads the rest of the refused
//! reply and drops it, keeping the app's one multiplexed connection and the
//! other commands in flight on it. What the host holds for a connection is
//! thus its 64 KiB chunk plus what is charged.

use super::{MemoryBudget, host_memory::HostCharge};
use anyhow::{Context as _, Result};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpStream, UnixListener, UnixStream},
    task::JoinHandle,
};

const CHUNK: usize = 64 << 10;

/// A protocol's server-to-client framing, as the relay sees it.
pub trait Framing: Send + 'static {
    /// Moves the server's `input` into `out` (for the client), charging
    /// `charge` as messages start and clearing it as they end. Bytes of a
    /// message header may be held back until the header is complete. A
    /// message that does not fit is answered in `out` when the framing can
    /// keep the connection in step; otherwise this returns what to send the
    /// client after `out` in its place, and the relay sends both and closes
    /// the connection.
    fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        charge: &mut HostCharge,
    ) -> Result<(), Vec<u8>>;

    /// Handles the client's first bytes before the server is reached (the
    /// PostgreSQL SSL request); the default does nothing.
    fn startup(
        &mut self,
        _client: &mut UnixStream,
    ) -> impl Future<Output = std::io::Result<Vec<u8>>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// Where the real server is.
#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(String, u16),
    Unix(PathBuf),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Upstream {
    async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Upstream::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Upstream::Unix(path) => Box::new(UnixStream::connect(path).await?),
        })
    }
}

/// One app's relay: a listening socket and its accept loop, both gone on drop.
pub struct Relay {
    socket: PathBuf,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on `socket` (its folder is created, private to this user) and
    /// relays each connection to `upstream` through a fresh `framing()`.
    pub fn start<F: Framing>(
        socket: PathBuf,
        upstream: Upstream,
        budget: Arc<MemoryBudget>,
        framing: impl Fn() -> F + Send + 'static,
    ) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = socket.parent().context("a relay socket needs a folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, most likely: try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let (upstream, budget, framing) = (upstream.clone(), budget.clone(), framing());
                tokio::spawn(async move {
                    if let Err(e) = relay(client, &upstream, budget, framing).await {
                        tracing::debug!("relay: connection ended: {e}");
                    }
                });
            }
        });
        Ok(Self { socket, accept })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

async fn relay<F: Framing>(
    mut client: UnixStream,
    upstream: &Upstream,
    budget: Arc<MemoryBudget>,
    mut framing: F,
) -> std::io::Result<()> {
    let first = framing.startup(&mut client).await?;
    let mut server = upstream.connect().await?;
    server.write_all(&first).await?;
    let (mut client_read, client_write) = client.into_split();
    let (server_read, mut server_write) = tokio::io::split(server);
    tokio::select! {
        result = tokio::io::copy(&mut client_read, &mut server_write) => result.map(|_| ()),
        result = pump(server_read, client_write, HostCharge::new(budget), framing) => result,
    }
}

/// Copies the server's bytes to the client through `framing`.
pub async fn pump(
    mut server: impl AsyncRead + Unpin,
    mut client: impl AsyncWrite + Unpin,
    mut charge: HostCharge,
    mut framing: impl Framing,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + 64);
    loop {
        let n = server.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let refused = framing.feed(&buf[..n], &mut out, &mut charge);
        if let Err(replacement) = refused {
            out.extend_from_slice(&replacement);
            client.write_all(&out).await?;
            client.shutdown().await?;
            return Ok(());
        }
        client.write_all(&out).await?;
        out.clear();
    }
}

/// Whether apps' connections go through relays: always, unless the
/// environment says `ALORIG_RELAY=off` — the benchmark's baseline only, which
/// leaves replies unbounded.
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("ALORIG_RELAY").map_or(true, |v| v != "off"))
}

/// The folder of the relays' sockets: one of this process in the temporary
/// directory (private under systemd's `PrivateTmp`). Not under the data dir:
/// hosts may share a data dir (and a test's may be removed under a running
/// host), and a Unix socket's path must stay under 108 bytes.
pub fn socket_dir(_data_dir: Option<&Path>) -> PathBuf {
    std::env::temp_dir().join(format!("alorig-{}", std::process::id()))
}

/// Test helper: pumps `input` (3 bytes per read) through `framing` under a fresh
/// budget of `limit`; answers what came out and the budget.
#[cfg(test)]
pub async fn pump_for_test<F: Framing>(
    input: Vec<u8>,
    limit: u64,
    framing: F,
) -> (Vec<u8>, Arc<MemoryBudget>) {
    use prometheus_client::metrics::gauge::Gauge;
    let budget = Arc::new(MemoryBudget::new(limit, Gauge::default(), Gauge::default()));
    let mut out = Vec::new();
    pump(
        chunked(input),
        &mut out,
        crate::limits::host_memory::HostCharge::new(budget.clone()),
        framing,
    )
    .await
    .unwrap();
    (out, budget)
}

/// Test helper: `input` as a reader that yields 3 bytes per read, so that
/// headers straddle reads.
#[cfg(test)]
pub fn chunked(input: Vec<u8>) -> impl AsyncRead + Unpin {
    struct Chunks(std::collections::VecDeque<Vec<u8>>);
    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(chunk) = self.0.pop_front() {
                buf.put_slice(&chunk);
            }
            std::task::Poll::Ready(Ok(()))
        }
    }
    Chunks(input.chunks(3).map(<[u8]>::to_vec).collect())
}
