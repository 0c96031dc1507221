//! The host's side of PostgreSQL: the admin connection from `postgres_url`,
//! used to create (or verify) each app's role and database and lock them down,
//! to cancel overdue statements, and to size the host-wide connection limit;
//! and the app's password, kept in `<data_dir>/postgres/<role>.password` (0600)
//! — or, given a cluster key, sealed in PostgreSQL for every host ([`super::secrets`])
//! — while the server is sent only its SCRAM verifier (HMAC and base64 from the
//! `hmac`/`base64` crates sqlx already uses).

use super::{CANCEL_GRACE, describe, is_outage};
use crate::{capabilities::LoadError, config::manifest::Postgres as PostgresManifest};
use anyhow::{Context as _, Result, anyhow, bail};
use sqlx::{
    ConnectOptions as _, Executor as _,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use std::{
    path::{Path, PathBuf},
    str::FromStr as _,
    time::Duration,
};

/// The host's side: admin connection, secrets folder and connection limit.
pub struct PostgresHost {
    pub(super) admin_options: PgConnectOptions,
    admin: PgPool,
    secrets_dir: PathBuf,
    /// Where each app's [`super::guard`] relay listens.
    run_dir: PathBuf,
    configured_limit: Option<u32>,
    /// With a cluster key: passwords shared through PostgreSQL, and the role's
    /// connection limit sized for every host up.
    sealer: Option<super::secrets::Sealer>,
    /// This host's `node_name` (not counted twice among the hosts up).
    node: String,
    /// Where this host stands among the hosts up, recounted while apps use
    /// it ([`super::share`]); made at the first app's load.
    standing: tokio::sync::OnceCell<tokio::sync::watch::Receiver<super::share::Standing>>,
}

impl PostgresHost {
    /// Parses `postgres_url`; connects lazily (nothing is opened until an app needs it).
    pub fn new(url: &str, data_dir: &Path, max_connections: Option<u32>) -> Result<Self> {
        // Never echo the URL: it may carry the admin password.
        let admin_options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow!("postgres_url: not a valid postgres:// URL"))?
            .application_name("alorig-host")
            .disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(admin_options.clone());
        Ok(Self {
            admin_options,
            admin,
            secrets_dir: data_dir.join("postgres"),
            run_dir: crate::limits::relay::socket_dir(Some(data_dir)),
            configured_limit: max_connections,
            sealer: None,
            node: String::new(),
            standing: tokio::sync::OnceCell::new(),
        })
    }

    /// One host of several: with `key`, the apps' passwords are shared sealed
    /// in PostgreSQL, and each app's `max_connections` is shared out among
    /// the hosts up ([`super::share`]).
    pub fn with_cluster(mut self, key: Option<&crate::config::ClusterKey>, node: &str) -> Self {
        self.sealer = key.map(super::secrets::Sealer::new);
        self.node = node.to_string();
        self
    }

    /// Where this host stands among the hosts up (alone without a cluster
    /// key): counted now at the first call, then every few seconds for as long
    /// as an app's pool follows it.
    pub(super) async fn standing(&self) -> tokio::sync::watch::Receiver<super::share::Standing> {
        use super::share::{Standing, count, recount};
        if self.sealer.is_none() {
            return tokio::sync::watch::channel(Standing::ALONE).1;
        }
        self.standing
            .get_or_init(|| async {
                // Before any host has written its row: alone, until the recount.
                let now = count(&self.admin, &self.node)
                    .await
                    .unwrap_or(Standing::ALONE);
                let (tx, rx) = tokio::sync::watch::channel(now);
                tokio::spawn(recount(self.admin.clone(), self.node.clone(), tx));
                rx
            })
            .await
            .clone()
    }

    /// The most connections all apps together may hold: `postgres_max_connections`,
    /// or 80% of what the server allows non-superusers.
    pub async fn connection_limit(&self) -> Result<u32> {
        if let Some(limit) = self.configured_limit {
            return Ok(limit);
        }
        let (max, reserved): (String, String) = sqlx::query_as(
            "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')",
        )
        .fetch_one(&self.admin)
        .await
        .map_err(|e| admin_error(&e, "postgres_url: cannot reach PostgreSQL".into()))?;
        let max: u32 = max.parse().unwrap_or(100);
        let reserved: u32 = reserved.parse().unwrap_or(3);
        Ok(max.saturating_sub(reserved) * 4 / 5)
    }

    /// Refuses a set of apps whose pools could together exceed the limit.
    pub async fn check_connections<'a>(
        &self,
        apps: impl Iterator<Item = (&'a str, &'a PostgresManifest)>,
    ) -> Result<()> {
        let apps: Vec<_> = apps.collect();
        if apps.is_empty() {
            return Ok(());
        }
        let total: u32 = apps.iter().map(|(_, pg)| pg.max_connections.get()).sum();
        let limit = self.connection_limit().await?;
        if total > limit {
            let each: Vec<String> = apps
                .iter()
                .map(|(name, pg)| format!("{name} {}", pg.max_connections))
                .collect();
            bail!(
                "the apps' postgres.max_connections add up to {total} ({}), more than the host's limit of {limit} \
                 (postgres_max_connections, by default 80% of PostgreSQL's max_connections)",
                each.join(", ")
            );
        }
        Ok(())
    }

    /// Creates the app's role and database if they do not exist (or verifies
    /// them when the admin may not create them) and locks them down.
    pub async fn provision(
        &self,
        role: &str,
        pg: &PostgresManifest,
        source: &str,
    ) -> Result<String> {
        let at = |what: &str| format!("{source}: postgres: {what}");
        // The hosts' pools share max_connections out, at least one each
        // (`share.rs`); one more for a pool being rebuilt at a new size.
        // (Counted before taking an admin connection: the count needs one.)
        let hosts = self.standing().await.borrow().hosts;
        let limit = pg.max_connections.get().max(hosts) + 1;
        let mut admin = self
            .admin
            .acquire()
            .await
            .map_err(|e| admin_error(&e, at("cannot reach PostgreSQL at postgres_url")))?;
        let (superuser, createrole, createdb): (bool, bool, bool) =
            sqlx::query_as("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&mut *admin)
                .await
                .map_err(|e| admin_error(&e, at("cannot query PostgreSQL")))?;
        let role_exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *admin)
            .await?
            .is_some();
        let owner: Option<(String,)> = sqlx::query_as(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        )
        .bind(&pg.database)
        .fetch_optional(&mut *admin)
        .await?;
        let password_file = self.secrets_dir.join(format!("{role}.password"));
        let qrole = quote_ident(role);
        let qdb = quote_ident(&pg.database);

        if !(superuser || createrole) {
            // Without the rights to manage roles the host can only use what an
            // operator prepared: the role, the database and the password file.
            if !role_exists || owner.is_none() || !password_file.exists() {
                bail!(
                    "{}",
                    at(&format!(
                        "role {role} or database {} does not exist (or {} is missing), and the postgres_url user may not create them",
                        pg.database,
                        password_file.display()
                    ))
                );
            }
            return read_secret(&password_file);
        }
        if let Some((owner,)) = &owner
            && owner != role
            && owner.starts_with("alorig_")
        {
            bail!(
                "{}",
                at(&format!(
                    "database {} already belongs to another app ({owner})",
                    pg.database
                ))
            );
        }
        let password = match &self.sealer {
            // This host's own password (a data dir joining a cluster) is
            // proposed, so the first host's apps keep theirs.
            Some(sealer) => super::secrets::shared_secret(
                &mut admin,
                sealer,
                &format!("postgres:{role}"),
                || match password_file.exists() {
                    true => read_secret(&password_file),
                    false => new_secret(),
                },
            )
            .await
            .map_err(|e| match e.downcast_ref::<sqlx::Error>() {
                Some(e) => admin_error(e, at("cannot read the shared password")),
                None => anyhow!("{}", at(&format!("{e:#}"))),
            })?,
            None => match password_file.exists() {
                true => read_secret(&password_file)?,
                false => {
                    let secret = new_secret()?;
                    write_secret(&password_file, &secret)?;
                    secret
                }
            },
        };
        // Utility statements take no parameters, and statement logs may be on:
        // the server gets only a SCRAM verifier, never the password itself.
        let verifier = scram_verifier(&password, &new_salt()?);
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {limit} PASSWORD '{verifier}'"
        );
        let verb = if role_exists { "ALTER" } else { "CREATE" };
        admin
            .execute(format!("{verb} ROLE {qrole} {attributes}").as_str())
            .await
            .map_err(|e| anyhow!("{}", at(&describe(&e))))?;
        match owner {
            None if createdb || superuser => {
                admin
                    .execute(format!("CREATE DATABASE {qdb} OWNER {qrole}").as_str())
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "{}",
                            at(&format!(
                                "cannot create database {}: {}",
                                pg.database,
                                describe(&e)
                            ))
                        )
                    })?;
            }
            None => bail!(
                "{}",
                at(&format!(
                    "database {} does not exist and the postgres_url user may not create it",
                    pg.database
                ))
            ),
            Some((owner,)) if owner != role => {
                admin
                    .execute(format!("ALTER DATABASE {qdb} OWNER TO {qrole}").as_str())
                    .await?;
            }
            Some(_) => {}
        }
        for sql in [
            format!("REVOKE ALL ON DATABASE {qdb} FROM PUBLIC"),
            format!("GRANT CONNECT, TEMPORARY ON DATABASE {qdb} TO {qrole}"),
        ] {
            admin
                .execute(sql.as_str())
                .await
                .map_err(|e| anyhow!("{}", at(&describe(&e))))?;
        }
        Ok(password)
    }

    /// Cancels, on the server, the app's statements running past `timeout`.
    /// Starts the relay ([`super::guard`]) for one version of an app, to the
    /// server `postgres_url` names, listening where sqlx looks when given a folder.
    pub(super) fn guard(
        &self,
        app: &str,
        budget: std::sync::Arc<crate::limits::MemoryBudget>,
    ) -> Result<crate::limits::relay::Relay> {
        use crate::limits::relay::{Relay, Upstream};
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let o = &self.admin_options;
        let port = o.get_port();
        let upstream = match (o.get_socket(), o.get_host()) {
            (Some(dir), _) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            (None, host) if host.starts_with('/') => {
                Upstream::Unix(Path::new(host).join(format!(".s.PGSQL.{port}")))
            }
            (None, host) => Upstream::Tcp(host.to_string(), port),
        };
        let dir = self.run_dir.join(format!(
            "pg-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        tracing::debug!(app, "postgres relay at {}", dir.display());
        Relay::start(
            dir.join(format!(".s.PGSQL.{port}")),
            upstream,
            budget,
            super::guard::PgFraming::default,
        )
    }

    pub(super) async fn cancel_overdue(&self, role: &str, database: &str, timeout: Duration) {
        let cancel = sqlx::query(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE usename = $1 AND datname = $2 AND state = 'active' \
             AND query_start < now() - make_interval(secs => $3)",
        )
        .bind(role)
        .bind(database)
        .bind(timeout.as_secs_f64())
        .execute(&self.admin);
        match tokio::time::timeout(CANCEL_GRACE, cancel).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                role,
                fault = "dependency",
                "cannot cancel an overdue statement: {}",
                describe(&e)
            ),
            Err(_) => tracing::warn!(
                role,
                fault = "dependency",
                "cannot cancel an overdue statement: the admin connection timed out"
            ),
        }
    }
}

/// An admin statement's failure: a dependency outage ([`LoadError`]) when the
/// server is unreachable or failing, otherwise the operator's to fix.
fn admin_error(e: &sqlx::Error, what: String) -> anyhow::Error {
    let message = format!("{what}: {}", describe(e));
    if is_outage(e) {
        anyhow::Error::new(LoadError::dependency("PostgreSQL", message))
    } else {
        anyhow!(message)
    }
}

/// The app's role: `alorig_<name>` (app names are `[a-z0-9-]`).
pub fn role_name(app: &str) -> String {
    format!("alorig_{}", app.replace('-', "_"))
}

pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow!("cannot get random bytes for a database password: {e}"))?;
    Ok(bytes)
}

fn new_secret() -> Result<String> {
    Ok(hex::encode(random::<24>()?))
}

fn new_salt() -> Result<[u8; 16]> {
    random::<16>()
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn scram_verifier(password: &str, salt: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::{Digest as _, Sha256};
    const ITERATIONS: u32 = 4096;
    // PBKDF2-HMAC-SHA-256 with one 32-byte block (RFC 8018 §5.2, dkLen = hLen).
    let mut u = hmac_sha256(password.as_bytes(), &[salt, &1u32.to_be_bytes()].concat());
    let mut salted = u;
    for _ in 1..ITERATIONS {
        u = hmac_sha256(password.as_bytes(), &u);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    let stored_key = Sha256::digest(hmac_sha256(&salted, b"Client Key"));
    let server_key = hmac_sha256(&salted, b"Server Key");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64(salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

fn read_secret(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.trim().to_string();
    anyhow::ensure!(
        !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}: not a password written by alorig-host",
        path.display()
    );
    Ok(secret)
}

fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{}: not in a folder", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_scram_match_their_test_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(
            scram_verifier("pw", &[0; 16])
                .starts_with("SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAA==$")
        );
        // RFC 7677's example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        use base64::Engine as _;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        assert_eq!(
            scram_verifier("pencil", &salt),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert_eq!(role_name("snap-ify"), "alorig_snap_ify");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
