//! The `alorig-host` command line (names fixed by CONTRACT.md). Every failure is
//! one line on stderr saying what is wrong and where, and a non-zero exit.

use alorig_host::{caddyfile, cli::{self, Target}, config::{HostConfig, Manifest}, runtime::Runtime, serve};
use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "alorig-host", version, about = "Run many web apps as sandboxed WebAssembly components on one server")]
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
        Target { admin: self.admin, token: self.token }
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
    /// Stop serving an app and delete its versions.
    Remove {
        app: String,
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
        /// Folder of app manifests.
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// The host's ingress address Caddy proxies to.
        #[arg(long, default_value = "127.0.0.1:8080")]
        upstream: String,
        /// Serve plain HTTP on this port instead of HTTPS (local testing).
        #[arg(long)]
        http_port: Option<u16>,
    },
}

fn main() -> ExitCode {
    alorig_host::limits::allocator::configure();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn,sqlx::postgres::notice=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        return alorig_host::engine::compile_child::child_main(alorig_host::engine::compile_engine, input, output);
    }
    alorig_host::engine::compile_child::use_current_exe();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve::run(HostConfig::load(config.as_deref())?, None).await,
            Command::Up { manifests, config } => serve::run(HostConfig::load(config.as_deref())?, Some(manifests)).await,
            Command::Deploy { manifest, component, yes, target } => cli::deploy(&target.target(), &manifest, component, yes).await,
            Command::Rollback { app, to, target } => cli::rollback(&target.target(), &app, to).await,
            Command::Remove { app, target } => cli::remove(&target.target(), &app).await,
            Command::Apps { json, target } => cli::apps(&target.target(), json).await,
            Command::Status { json, target } => cli::status(&target.target(), json).await,
            Command::Jobs { app, json, target } => cli::jobs(&target.target(), &app, json).await,
            Command::Top { target } => cli::top(&target.target()).await,
            Command::Validate { manifest, component } => validate_offline(manifest, component).await,
            Command::New { name, lang, dir } => {
                let root = alorig_host::template::create(&dir, &name, lang)?;
                println!("{}: new {lang:?} app {name}; see its README.md to build and deploy it", root.display());
                Ok(())
            }
            // Handled before the runtime starts.
            Command::CompileComponent { .. } => Ok(()),
            Command::Caddyfile { manifests, upstream, http_port } => {
                print!("{}", caddyfile::render(&load_manifest_dir(&manifests)?, &upstream, http_port));
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
