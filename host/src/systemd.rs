//! Running under systemd (deploy/systemd/): listening sockets handed over by
//! socket activation, readiness and the watchdog.
//!
//! With `alorig-host.socket`, systemd owns the ingress and admin sockets and
//! passes them in (`LISTEN_PID`/`LISTEN_FDS`, from fd 3). They outlive the
//! process: during a restart (a new binary) connections wait in the kernel's
//! backlog instead of being refused, and the new process accepts them. Each
//! inherited socket is matched to `listen` or `admin_listen` by its address
//! (in order when neither matches); a missing one is bound as usual.
//!
//! `Type=notify`: `READY=1` is sent once every app is loaded and both sockets
//! accept; `WATCHDOG=1` every half `WatchdogSec` from the async runtime, so a
//! host whose runtime stops making progress is restarted.

use anyhow::{Context as _, Result};
use sd_notify::NotifyState;
use std::{net::SocketAddr, os::fd::FromRawFd as _, time::Duration};
use tokio::net::TcpListener;

/// Sockets passed in by systemd (or anything speaking its protocol).
pub struct Inherited(Vec<std::net::TcpListener>);

impl Inherited {
    /// Takes the sockets of `LISTEN_FDS` (if it is meant for this process).
    pub fn from_env() -> Result<Self> {
        let fds = sd_notify::listen_fds_with_names(false).context("LISTEN_FDS/LISTEN_PID")?;
        let mut sockets = Vec::new();
        for (fd, name) in fds {
            // SAFETY: systemd's protocol gives this process these descriptors,
            // open, from fd 3 on; nothing else in the process owns them.
            let socket = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            socket
                .set_nonblocking(true)
                .with_context(|| format!("inherited socket {fd} ({name})"))?;
            sockets.push(socket);
        }
        Ok(Inherited(sockets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inherited socket bound to `addr` (or, if none is, the first left
    /// whose address is not `other`); else a fresh one bound to `addr`.
    pub async fn take_or_bind(
        &mut self,
        addr: SocketAddr,
        other: SocketAddr,
        key: &str,
    ) -> Result<TcpListener> {
        let local = |s: &std::net::TcpListener| s.local_addr().ok();
        let position = self
            .0
            .iter()
            .position(|s| local(s) == Some(addr))
            .or_else(|| self.0.iter().position(|s| local(s) != Some(other)));
        match position {
            Some(i) => {
                let socket = self.0.remove(i);
                TcpListener::from_std(socket)
                    .with_context(|| format!("cannot use the inherited socket for {key}"))
            }
            None => TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({key})")),
        }
    }
}

/// Tells systemd the host is serving (no-op outside systemd), and starts the
/// watchdog pings when `WatchdogSec` is set.
pub fn ready(apps: usize) {
    let status = format!("serving {apps} app(s)");
    if let Err(err) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)])
    {
        tracing::warn!("cannot tell systemd the host is ready: {err}");
    }
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
        });
    }
}

/// Tells systemd the host is draining.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}
