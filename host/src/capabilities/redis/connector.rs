//! The app's connection to Redis: one multiplexed connection, made lazily and
//! re-made after it breaks, authenticated as the app's own ACL user when the
//! host may manage ACLs; and Redis failures turned into what the guest can act
//! on, with a log line (never keys or values) for the operator.

use super::{CALL_TIMEOUT, CONNECT_TIMEOUT, Error};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;

pub(super) struct Connector {
    /// The operator's connection settings with the app's db.
    pub(super) admin: redis::ConnectionInfo,
    /// `alorig-<app>` and its password, for the ACL wall.
    pub(super) user: String,
    pub(super) password: String,
    pub(super) acl_rules: Vec<String>,
    pub(super) current: ArcSwapOption<MultiplexedConnection>,
    pub(super) connecting: tokio::sync::Mutex<()>,
    /// What the app's reply bytes are charged to.
    pub(super) budget: Arc<crate::limits::MemoryBudget>,
    /// The relay the app's connections go through (none for TLS URLs),
    /// started with the first connection ([`super::super::redis_guard`]).
    pub(super) relay: std::sync::OnceLock<Option<crate::limits::relay::Relay>>,
    pub(super) acl_warned: std::sync::atomic::AtomicBool,
}

impl Connector {
    /// The app's live connection, connecting first if there is none; `true`
    /// when it was made by this call.
    pub(super) async fn connection(
        &self,
        app: &str,
    ) -> Result<(Arc<MultiplexedConnection>, bool), Error> {
        if let Some(conn) = self.current.load_full() {
            return Ok((conn, false));
        }
        // One connection attempt at a time; the others wait and share its result.
        let _turn = self.connecting.lock().await;
        if let Some(conn) = self.current.load_full() {
            return Ok((conn, false));
        }
        let info = self.prepare(app).await?;
        let client = redis::Client::open(info).map_err(|e| Error::Other(e.to_string()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = Arc::new(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| classify(app, e))?,
        );
        self.current.store(Some(conn.clone()));
        tracing::info!(app, "connected to Redis");
        Ok((conn, true))
    }

    /// Drops `conn` as the app's connection (unless another call already
    /// replaced it), so the next call reconnects.
    pub(super) fn forget(&self, conn: &Arc<MultiplexedConnection>) {
        self.current.compare_and_swap(conn, None);
    }

    /// Where the app connects: as its ACL user, (re)created now, or else with the
    /// operator's URL.
    pub(super) async fn prepare(&self, app: &str) -> Result<redis::ConnectionInfo, Error> {
        if self.relay.get().is_none() {
            let started = relay(self.admin.addr(), self.budget.clone()).map_err(|e| {
                tracing::error!(app, "cannot start the Redis relay: {e:#}");
                Error::Unavailable
            })?;
            let _ = self.relay.set(started);
        }
        let through_relay = |info: redis::ConnectionInfo| match self.relay.get() {
            Some(Some(relay)) => {
                info.set_addr(redis::ConnectionAddr::Unix(relay.socket().to_path_buf()))
            }
            _ => info,
        };
        let admin =
            redis::Client::open(self.admin.clone()).map_err(|e| Error::Other(e.to_string()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let mut conn = admin
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(app, e))?;
        let mut setuser = redis::cmd("ACL");
        setuser
            .arg("SETUSER")
            .arg(&self.user)
            .arg(&self.acl_rules)
            .arg(format!(">{}", self.password));
        match setuser.query_async::<()>(&mut conn).await {
            Ok(()) => {
                let settings = self
                    .admin
                    .redis_settings()
                    .clone()
                    .set_username(&self.user)
                    .set_password(&self.password);
                Ok(through_relay(
                    self.admin.clone().set_redis_settings(settings),
                ))
            }
            Err(err) if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() => {
                Err(classify(app, err))
            }
            Err(err) => {
                if !self
                    .acl_warned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        app,
                        fault = "operator",
                        "Redis ACL users not managed (redis_url's user cannot run ACL SETUSER: {}); the app is confined by key prefixing alone",
                        err.code().unwrap_or("error")
                    );
                }
                Ok(through_relay(self.admin.clone()))
            }
        }
    }

    /// Turns a command's failure into the guest's error; drops the connection
    /// when it is broken, so the next call reconnects.
    pub(super) fn failed(
        &self,
        app: &str,
        conn: &Arc<MultiplexedConnection>,
        err: redis::RedisError,
    ) -> Error {
        if broken(&err) {
            self.forget(conn);
        }
        classify(app, err)
    }
}

/// Whether the connection is unusable after this error.
pub(super) fn broken(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

/// Starts the app's relay to the Redis at `addr` ([`super::super::redis_guard`]).
fn relay(
    addr: &redis::ConnectionAddr,
    budget: Arc<crate::limits::MemoryBudget>,
) -> anyhow::Result<Option<crate::limits::relay::Relay>> {
    use crate::limits::relay::{Relay, Upstream};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if !crate::limits::relay::enabled() {
        return Ok(None);
    }
    let upstream = match addr {
        redis::ConnectionAddr::Tcp(host, port) => Upstream::Tcp(host.clone(), *port),
        redis::ConnectionAddr::Unix(path) => Upstream::Unix(path.clone()),
        _ => return Ok(None),
    };
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = crate::limits::relay::socket_dir(None)
        .join(format!("redis-{n}"))
        .join("socket");
    Ok(Some(Relay::start(
        socket,
        upstream,
        budget,
        super::super::redis_guard::RespFraming::default,
    )?))
}

/// The guest's view of a Redis failure. The operator gets a log line for the
/// ones that are the host's or Redis's fault, never with keys or values.
pub(super) fn classify(app: &str, err: redis::RedisError) -> Error {
    // Errors Redis answered, for one command or the first failing one of a
    // pipeline (named by its index).
    let pipeline = err.to_string().starts_with("Pipeline failure");
    if let Some(errors) = err.clone().into_server_errors()
        && let Some((index, first)) = errors.first()
        && first.kind() != Some(redis::ServerErrorKind::NoPerm)
    {
        if first.code() == "WRONGTYPE" {
            return Error::WrongType;
        }
        if first.code() == super::super::redis_guard::TOO_LARGE_CODE {
            return Error::Invalid(
                first
                    .details()
                    .unwrap_or("the reply is too large")
                    .trim_start_matches("alorig-host: ")
                    .to_string(),
            );
        }
        let at = if pipeline {
            format!("command {index}: ")
        } else {
            String::new()
        };
        return Error::Other(
            format!("{at}{} {}", first.code(), first.details().unwrap_or(""))
                .trim_end()
                .to_string(),
        );
    }
    if err.is_timeout() {
        return Error::Timeout;
    }
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        tracing::warn!(
            app,
            fault = "dependency",
            "Redis unavailable: {}",
            err.kind_name()
        );
        return Error::Unavailable;
    }
    match err.kind() {
        redis::ErrorKind::AuthenticationFailed => {
            tracing::error!(
                app,
                fault = "dependency",
                "Redis refused the app's credentials"
            );
            Error::Unavailable
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
            tracing::error!(
                app,
                fault = "host",
                "Redis ACL refused a command the host sent for the app"
            );
            Error::Other("NOPERM: refused by the app's Redis ACL".into())
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => Error::Unavailable,
        _ => Error::Other(match (err.code(), err.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => err.to_string(),
        }),
    }
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> &'static str {
        if self.is_timeout() {
            "timeout"
        } else if self.is_connection_refusal() {
            "connection refused"
        } else if self.is_connection_dropped() {
            "connection dropped"
        } else {
            "I/O error"
        }
    }
}

pub(super) fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        anyhow::anyhow!("cannot get random bytes for the app's Redis password: {e}")
    })?;
    Ok(hex::encode(bytes))
}
