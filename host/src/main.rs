//! The `alorig-host` command line (names fixed by CONTRACT.md). Every failure is
//! one line on stderr saying what is wrong and where, and a non-zero exit.

use alorig_host::{
    caddyfile,
    cli::{self, Target},
    config::{HostConfig, Manifest},
    runtime::Runtime,
    serve,
};
use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(
    name = "alorig-host",
    version,
    about = "Run many web apps as sandboxed WebAssembly components on one server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the admin API is (for the commands that talk to a running host).
#[derive(clap::Args)]
struct AdminArgs {
    /// The host's admin URL.
    #[arg(long, env = "ALORIG_ADMIN", default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// The admin token (default: the token file in the data dir).
    #[arg(long, env = "ALORIG_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn target(self) -> Target {
        Target {
            admin: self.admin,
            token: self.token,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Deploy a new version of an app to a running host (`serve`).
    Deploy {
        manifest: PathBuf,
        /// Use this component file instead of the manifest's `component`.
        #[arg(long)]
        component: Option<PathBuf>,
        /// Approve a version that may reach more than the live one.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Put an earlier kept version back in force (default: the one before).
    Rollback {
        app: String,
        #[arg(long)]
        to: Option<u32>,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Stop serving an app and delete its versions (its [files] stay unless --purge).
    Remove {
        app: String,
        /// Delete the app's [files] directory too (kept by default).
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Deployed apps, versions and routes.
    Apps {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Per-app memory used / peak / limit, instances, requests/s, errors, p99.
    Status {
        #[arg(long)]
        json: bool,
        /// Every host sharing this one's PostgreSQL: apps, versions, memory.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// The app's pending, running and dead jobs (dead ones with their last error).
    Jobs {
        app: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// The app's guest output and the host's lines about it (request errors, jobs…).
    Logs {
        app: String,
        /// Keep printing new lines as they come.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines from this long ago on: `90s`, `10m`, `2h`, `1d`.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Back up the data dir, every app's database and the job store into a new folder.
    Backup {
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Restore a backup onto an empty data dir and PostgreSQL (before starting the host).
    Restore {
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// `status`, refreshing in place.
    Top {
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Run the host in the foreground, with the apps deployed in its data dir.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a host with exactly these apps (the development loop).
    Up {
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a manifest and its component offline: everything `up` and a deploy check.
    Validate {
        manifest: PathBuf,
        /// Use this component file instead of the manifest's `component`.
        #[arg(long)]
        component: Option<PathBuf>,
    },
    /// Make a new app project (manifest, code, README with the build command) in ./<NAME>.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: alorig_host::template::Lang,
        /// Make it inside this folder instead of the current one.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Compile the component in INPUT into OUTPUT (the host's own compiler
    /// process, see engine::compile_child).
    #[command(name = "__compile-component", hide = true)]
    CompileComponent { input: PathBuf, output: PathBuf },
    /// Print a Caddyfile that puts Caddy in front of the host for every manifest.
    Caddyfile {
        /// These apps' manifests (production: the apps the host serves, not the demo ones).
        files: Vec<PathBuf>,
        /// Folder of app manifests (all of them), when no files are given.
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// The host's ingress address Caddy proxies to (default: `listen` of host.toml);
        /// several hosts as "a:8080 b:8080" (or commas): Caddy balances them.
        #[arg(long)]
        upstream: Option<String>,
        /// Serve plain HTTP on this port instead of HTTPS (local testing).
        #[arg(long)]
        http_port: Option<u16>,
        /// Host config: `[caddy]`, `[[upstreams]]`, `listen`, `admin_listen`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load it into the running Caddy through its admin API instead of printing it.
        #[arg(long)]
        apply: bool,
        /// Caddy's admin API (default: `[caddy] admin` of host.toml, then http://127.0.0.1:2019).
        #[arg(long)]
        caddy_admin: Option<String>,
    },
}

fn main() -> ExitCode {
    alorig_host::limits::allocator::configure();
    let cli = Cli::parse();
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let printed = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,wasmtime=warn,cranelift=warn,sqlx::postgres::notice=warn".into()
            }),
        );
    // Each app's lines also go to its ring, for `alorig-host logs` (whatever RUST_LOG says).
    let kept =
        alorig_host::logs::LogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(printed)
        .with(kept)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::CompileComponent { input, output } = &cli.command {
        return alorig_host::engine::compile_child::child_main(
            alorig_host::engine::compile_engine,
            input,
            output,
        );
    }
    alorig_host::engine::compile_child::use_current_exe();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => {
                serve::run(HostConfig::load(config.as_deref())?, None).await
            }
            Command::Up { manifests, config } => {
                serve::run(HostConfig::load(config.as_deref())?, Some(manifests)).await
            }
            Command::Deploy {
                manifest,
                component,
                yes,
                target,
            } => cli::deploy(&target.target(), &manifest, component, yes).await,
            Command::Rollback { app, to, target } => {
                cli::rollback(&target.target(), &app, to).await
            }
            Command::Remove { app, purge, target } => {
                cli::remove(&target.target(), &app, purge).await
            }
            Command::Apps { json, target } => cli::apps(&target.target(), json).await,
            Command::Status {
                json,
                cluster: true,
                target,
            } => alorig_host::cluster::status::show(&target.target(), json).await,
            Command::Status { json, target, .. } => cli::status(&target.target(), json).await,
            Command::Jobs { app, json, target } => cli::jobs(&target.target(), &app, json).await,
            Command::Logs {
                app,
                follow,
                since,
                target,
            } => cli::logs(&target.target(), &app, follow, since.as_deref()).await,
            Command::Backup { dir, config } => {
                alorig_host::backup::backup(&HostConfig::load(config.as_deref())?, &dir).await
            }
            Command::Restore { dir, config } => {
                alorig_host::backup::restore(&HostConfig::load(config.as_deref())?, &dir).await
            }
            Command::Top { target } => cli::top(&target.target()).await,
            Command::Validate {
                manifest,
                component,
            } => validate_offline(manifest, component).await,
            Command::New { name, lang, dir } => {
                let root = alorig_host::template::create(&dir, &name, lang)?;
                println!(
                    "{}: new {lang:?} app {name}; see its README.md to build and deploy it",
                    root.display()
                );
                Ok(())
            }
            // Handled before the runtime starts.
            Command::CompileComponent { .. } => Ok(()),
            Command::Caddyfile {
                files,
                manifests,
                upstream,
                http_port,
                config,
                apply,
                caddy_admin,
            } => {
                let config = HostConfig::load(config.as_deref())?;
                let mut options = caddyfile::Options::from_config(&config);
                if let Some(upstream) = upstream {
                    options.upstream = upstream;
                }
                if http_port.is_some() {
                    options.http_port = http_port;
                }
                let admin = caddy_admin.or(config.caddy.admin.clone());
                if let Some(admin) = &admin {
                    options.caddy_admin = Some(
                        admin
                            .trim_start_matches("http://")
                            .trim_end_matches('/')
                            .to_string(),
                    );
                }
                let manifests = match files.is_empty() {
                    true => load_manifest_dir(&manifests)?,
                    false => files
                        .iter()
                        .map(|p| Manifest::load(p))
                        .collect::<Result<Vec<_>>>()?,
                };
                let text = caddyfile::render(&manifests, &options);
                if !apply {
                    print!("{text}");
                    return Ok(());
                }
                let admin = admin.unwrap_or_else(|| "http://127.0.0.1:2019".into());
                caddyfile::apply::load(&admin, &text).await?;
                println!(
                    "Caddy at {admin} now serves the routes of {} app(s)",
                    manifests.len()
                );
                Ok(())
            }
        }
    })
}

/// Every `*.toml` manifest in `dir`, in name order.
fn load_manifest_dir(dir: &std::path::Path) -> Result<Vec<Manifest>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the manifest folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Manifest::load(p)).collect()
}

async fn validate_offline(manifest: PathBuf, component: Option<PathBuf>) -> Result<()> {
    let config = HostConfig::load(None)?;
    let mut parsed = Manifest::load(&manifest)?;
    if let Some(component) = component {
        parsed.component = component;
    }
    alorig_host::deploy::check_budget(config.memory_budget, std::slice::from_ref(&parsed))?;
    let mut runtime = Runtime::new(&config.data_dir, 4)?;
    runtime.offline = true;
    runtime.redis.url = config.redis_url.clone();
    let app = alorig_host::app::App::load(&runtime, parsed).await?;
    for warning in &app.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: ok — app {}, {} route(s), memory cap {}, one instance starts in {}",
        manifest.display(),
        app.name,
        app.manifest.routes.len(),
        app.manifest.resources.memory,
        alorig_host::config::ByteSize(app.startup_memory)
    );
    Ok(())
}
