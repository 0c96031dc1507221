//! `alorig-host backup <dir>` and `restore <dir>`: everything needed to bring a
//! host back on an empty machine (an empty data dir, an empty PostgreSQL).
//!
//! ```text
//! <dir>/backup.json               what is in it: apps, versions, databases, host version
//! <dir>/data/…                    the data dir without compiled/ (recompiled at start):
//!                                 apps/<app>/<version>/ (manifests, components, current),
//!                                 postgres/<role>.password, admin.token, …
//! <dir>/postgres/<database>.dump  each app's database (pg_dump -Fc)
//! <dir>/postgres/alorig_jobs.dump the host's job store (schema alorig_jobs)
//! ```
//!
//! Each database is dumped in one transaction (pg_dump's snapshot), and version
//! folders are immutable once written, so a backup of a serving host is
//! consistent per database. Secrets themselves are not in the data dir (only
//! the names of the environment variables, in the manifests) and so are not
//! in the backup; PostgreSQL role passwords are (postgres/, mode 0600).
//!
//! Restore copies the data dir back, creates each app's role and database the
//! way the host does at deploy, and restores the dump as the app's own role, so
//! the tables are the app's again. `pg_dump`/`pg_restore` come from the newest
//! `/usr/lib/postgresql/<version>/bin`, else from `PATH`.

use crate::{
    capabilities::postgres::{PostgresHost, role_name},
    config::{HostConfig, Manifest},
    deploy::store::Store,
};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Folders of the data dir not worth keeping: rebuilt at start.
const SKIP: &[&str] = &["compiled"];

/// The job store's dump file (under `postgres/`).
const JOBS_DUMP: &str = "alorig_jobs.dump";

pub async fn backup(config: &HostConfig, dir: &Path) -> Result<()> {
    if dir.exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "backup folder {} is not empty: give a new folder (e.g. one named after the date)",
            dir.display()
        );
    }
    fs::create_dir_all(dir.join("postgres"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let apps = current_apps(&config.data_dir)?;

    let mut dumped = Vec::new();
    let databases: Vec<(&str, &str)> = apps
        .iter()
        .filter_map(|(m, _)| Some((m.name.as_str(), m.postgres.as_ref()?.database.as_str())))
        .collect();
    if !databases.is_empty() || config.postgres_url.is_some() {
        let url = postgres_url(config)?;
        for (app, database) in &databases {
            let file = dir.join("postgres").join(format!("{database}.dump"));
            let (target, password) = with_database(url, Some(database), None)?;
            pg_tool("pg_dump", password)?
                .args(["--format=custom", "--file"])
                .arg(&file)
                .arg("--dbname")
                .arg(target)
                .run(&format!("pg_dump of {app}'s database {database}"))?;
            dumped.push(database.to_string());
        }
        if jobs_schema_exists(url).await? {
            let (target, password) = with_database(url, None, None)?;
            pg_tool("pg_dump", password)?
                .args(["--format=custom", "--schema=alorig_jobs", "--file"])
                .arg(dir.join("postgres").join(JOBS_DUMP))
                .arg("--dbname")
                .arg(target)
                .run("pg_dump of the job store (schema alorig_jobs)")?;
        }
    }

    copy_tree(&config.data_dir, &dir.join("data"), true)?;
    let summary = json!({
        "created_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "host_version": env!("CARGO_PKG_VERSION"),
        "apps": apps.iter().map(|(m, v)| json!({
            "name": m.name.as_str(),
            "version": v,
            "database": m.postgres.as_ref().map(|p| p.database.clone()),
        })).collect::<Vec<_>>(),
        "databases": dumped,
        "job_store": dir.join("postgres").join(JOBS_DUMP).exists(),
    });
    fs::write(
        dir.join("backup.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    println!(
        "backed up {} app(s), {} database(s){} to {}",
        apps.len(),
        summary["databases"].as_array().map_or(0, Vec::len),
        if summary["job_store"] == true {
            " and the job store"
        } else {
            ""
        },
        dir.display()
    );
    Ok(())
}

pub async fn restore(config: &HostConfig, dir: &Path) -> Result<()> {
    let summary: Value = serde_json::from_str(
        &fs::read_to_string(dir.join("backup.json"))
            .with_context(|| format!("{}: not a backup (no backup.json)", dir.display()))?,
    )
    .with_context(|| format!("{}: backup.json is not JSON", dir.display()))?;
    if !Store::new(&config.data_dir, 1).apps()?.is_empty() {
        bail!(
            "data dir {} already has deployed apps: restore onto an empty data dir (move it away first)",
            config.data_dir.display()
        );
    }
    copy_tree(&dir.join("data"), &config.data_dir, false)?;
    let apps = current_apps(&config.data_dir)?;

    let databases = summary["databases"].as_array().cloned().unwrap_or_default();
    let jobs = summary["job_store"] == true;
    if !databases.is_empty() || jobs {
        let url = postgres_url(config)?;
        let host = PostgresHost::new(url, &config.data_dir, config.postgres_max_connections)?
            .with_cluster(config.cluster_key.as_ref(), &config.node_name);
        for (manifest, _) in &apps {
            let Some(pg) = &manifest.postgres else {
                continue;
            };
            let file = dir.join("postgres").join(format!("{}.dump", pg.database));
            if !file.exists() {
                continue;
            }
            let role = role_name(manifest.name.as_str());
            // The role and an empty database, as a deploy makes them; then the
            // tables, created by the app's own role so they are the app's.
            let password = host
                .provision(&role, pg, &manifest.source.display().to_string())
                .await?;
            let (target, password) =
                with_database(url, Some(&pg.database), Some((&role, &password)))?;
            pg_tool("pg_restore", password)?
                .args([
                    "--no-owner",
                    "--no-acl",
                    "--clean",
                    "--if-exists",
                    "--exit-on-error",
                    "--dbname",
                ])
                .arg(target)
                .arg(&file)
                .run(&format!(
                    "pg_restore of {}'s database {}",
                    manifest.name, pg.database
                ))?;
        }
        if jobs {
            let (target, password) = with_database(url, None, None)?;
            pg_tool("pg_restore", password)?
                .args([
                    "--no-owner",
                    "--no-acl",
                    "--clean",
                    "--if-exists",
                    "--exit-on-error",
                    "--dbname",
                ])
                .arg(target)
                .arg(dir.join("postgres").join(JOBS_DUMP))
                .run("pg_restore of the job store (schema alorig_jobs)")?;
        }
    }
    println!(
        "restored {} app(s) and {} database(s) into {}; start the host (systemctl start alorig-host) to serve them",
        apps.len(),
        databases.len(),
        config.data_dir.display()
    );
    Ok(())
}

/// Each app in force in the data dir, with its version.
fn current_apps(data_dir: &Path) -> Result<Vec<(Manifest, u32)>> {
    let store = Store::new(data_dir, 1);
    let mut apps = Vec::new();
    for app in store.apps()? {
        if let Some(version) = store.current(&app)? {
            apps.push((store.manifest(&app, version)?.0, version));
        }
    }
    Ok(apps)
}

fn postgres_url(config: &HostConfig) -> Result<&str> {
    config.postgres_url.as_deref().ok_or_else(|| {
        anyhow!(
            "apps use PostgreSQL but the host config has no postgres_url (or ALORIG_POSTGRES_URL)"
        )
    })
}

/// `postgres_url` pointed at `database` (and logging in as `login`, if given),
/// without its password, which goes to the tool in `PGPASSWORD` instead of on
/// its command line (where `ps` shows it).
fn with_database(
    url: &str,
    database: Option<&str>,
    login: Option<(&str, &str)>,
) -> Result<(String, Option<String>)> {
    let mut parsed = url::Url::parse(url).map_err(|e| anyhow!("postgres_url is not a URL: {e}"))?;
    if let Some(database) = database {
        parsed.set_path(&format!("/{database}"));
    }
    let mut password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    if let Some((user, pw)) = login {
        parsed
            .set_username(user)
            .map_err(|_| anyhow!("postgres_url: cannot set the user"))?;
        password = Some(pw.to_string());
    }
    let _ = parsed.set_password(None);
    Ok((parsed.to_string(), password))
}

async fn jobs_schema_exists(url: &str) -> Result<bool> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| anyhow!("cannot reach PostgreSQL at postgres_url: {e}"))?;
    let found: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_namespace WHERE nspname = 'alorig_jobs'")
            .fetch_optional(&mut conn)
            .await?;
    Ok(found.is_some())
}

/// `pg_dump`/`pg_restore` from the newest PostgreSQL under /usr/lib/postgresql, else PATH.
fn pg_tool(name: &str, password: Option<String>) -> Result<Tool> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    Some((
                        e.file_name().to_str()?.parse::<u32>().ok()?,
                        e.path().join("bin").join(name),
                    ))
                })
                .filter(|(_, path)| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    let program = versions
        .pop()
        .map(|(_, path)| path)
        .unwrap_or_else(|| PathBuf::from(name));
    let mut command = Command::new(&program);
    command.env("PGCONNECT_TIMEOUT", "10");
    match password {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    Ok(Tool { command, program })
}

struct Tool {
    command: Command,
    program: PathBuf,
}

impl Tool {
    fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.command.args(args);
        self
    }

    fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    fn run(mut self, what: &str) -> Result<()> {
        let output = self.command.output().with_context(|| {
            format!(
                "{what}: cannot run {} (install PostgreSQL's client tools)",
                self.program.display()
            )
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(no message)");
            bail!("{what} failed: {first}");
        }
        Ok(())
    }
}

/// Copies a folder tree (files keep their mode); at the top level, `skip_cache`
/// leaves out [`SKIP`]. `*.tmp` leftovers of interrupted deploys are not copied.
fn copy_tree(from: &Path, to: &Path, skip_cache: bool) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && skip_cache => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", from.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if (skip_cache && SKIP.contains(&name_text.as_ref())) || name_text.ends_with(".tmp") {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, false)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_the_server_and_change_the_database_and_login() {
        let url = "postgres://admin:s%40cret@127.0.0.1:5433/postgres?sslmode=disable";
        assert_eq!(
            with_database(url, Some("store"), None).unwrap(),
            (
                "postgres://admin@127.0.0.1:5433/store?sslmode=disable".to_string(),
                Some("s@cret".to_string())
            )
        );
        assert_eq!(
            with_database(url, Some("store"), Some(("alorig_store", "p/w"))).unwrap(),
            (
                "postgres://alorig_store@127.0.0.1:5433/store?sslmode=disable".to_string(),
                Some("p/w".to_string())
            )
        );
        assert_eq!(
            with_database(url, None, None).unwrap().0,
            "postgres://admin@127.0.0.1:5433/postgres?sslmode=disable"
        );
    }

    #[test]
    fn the_compile_cache_and_leftovers_stay_out() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join("apps/a/1")).unwrap();
        fs::create_dir_all(from.path().join("compiled")).unwrap();
        fs::create_dir_all(from.path().join("apps/a/2.tmp")).unwrap();
        fs::write(from.path().join("apps/a/1/manifest.toml"), "m").unwrap();
        fs::write(from.path().join("compiled/x"), "x").unwrap();
        copy_tree(from.path(), &to.path().join("data"), true).unwrap();
        assert!(to.path().join("data/apps/a/1/manifest.toml").is_file());
        assert!(!to.path().join("data/compiled").exists());
        assert!(!to.path().join("data/apps/a/2.tmp").exists());
    }
}
