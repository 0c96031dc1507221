//! The test harness: builds the guest components from source (once per test
//! run), starts the real `alorig-host` binary on free loopback ports with its own
//! data dir, and talks to it over real sockets. Everything it starts is stopped
//! and removed when the test's handle is dropped.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds every guest in `components/` for wasm32-wasip2 (release), once.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
        for entry in std::fs::read_dir(root.join("components")).unwrap() {
            let dir = entry.unwrap().path();
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
            if manifest.contains("cdylib") {
                cmd.arg("-p").arg(dir.file_name().unwrap());
            }
        }
        let status = cmd
            .status()
            .expect("running cargo to build the guest components");
        assert!(status.success(), "building the guest components failed");
    });
    let path = workspace_root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "guest {name} was not built at {}",
        path.display()
    );
    path
}

/// Builds every Python guest in `components/python/` (componentize-py, pinned,
/// in the venv `sdk/python/setup-venv.sh` creates), once per test run; a guest
/// whose sources did not change since the last run is not rebuilt.
pub fn python_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(workspace_root().join("sdk/python/build-guests.sh"))
            .status()
            .expect("running sdk/python/build-guests.sh");
        assert!(status.success(), "building the Python guests failed");
    });
    let path = workspace_root()
        .join("target/python")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "Python guest {name} was not built at {}",
        path.display()
    );
    path
}

/// A manifest for a test app running the Python guest `guest_name`.
pub fn python_manifest(name: &str, guest_name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncomponent = \"{}\"\n{extra}\n",
        python_guest(guest_name).display()
    )
}

pub fn host_binary() -> &'static str {
    env!("CARGO_BIN_EXE_alorig-host")
}

/// A manifest for a test app: `name`, the guest it runs, and extra TOML.
pub fn manifest(name: &str, guest_name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncomponent = \"{}\"\n{extra}\n",
        guest(guest_name).display()
    )
}

/// A running `alorig-host up`.
pub struct Host {
    child: Child,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The host's data dir (versions, compile cache, admin token).
    pub data: PathBuf,
    log: Arc<Mutex<String>>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The whole answer: status, headers and body (empty if it broke off).
    async fn read(resp: http::Response<hyper::body::Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Host {
    /// Starts a host with these manifests (file name stem, text), on free ports.
    pub fn up(manifests: &[(&str, String)]) -> Host {
        Self::up_with(manifests, "")
    }

    /// Like [`Host::up`], with extra `host.toml` lines.
    pub fn up_with(manifests: &[(&str, String)], host_toml: &str) -> Host {
        Self::up_full(manifests, host_toml, &[])
    }

    /// Like [`Host::up_with`], with extra environment variables for the host.
    pub fn up_full(manifests: &[(&str, String)], host_toml: &str, envs: &[(&str, &str)]) -> Host {
        let (args, dir) = Self::up_args(manifests);
        let data = dir.path().join("data");
        Self::start(args, dir, &data, host_toml, envs, true)
    }

    /// Like [`Host::up`], returning as soon as the host listens, while it may
    /// still be loading its apps (its log says `alorig-host: serving` once done).
    pub fn up_listening(manifests: &[(&str, String)]) -> Host {
        let (args, dir) = Self::up_args(manifests);
        let data = dir.path().join("data");
        Self::start(args, dir, &data, "", &[], false)
    }

    fn up_args(manifests: &[(&str, String)]) -> (Vec<String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["up".to_string()];
        for (stem, text) in manifests {
            let path = dir.path().join(format!("{stem}.toml"));
            std::fs::write(&path, text).unwrap();
            args.push(path.display().to_string());
        }
        (args, dir)
    }

    /// Starts `alorig-host serve` on the data dir `data` (which outlives the
    /// host, so a test can restart it), with extra `host.toml` lines.
    pub fn serve(data: &Path, host_toml: &str) -> Host {
        Self::serve_full(data, host_toml, &[])
    }

    pub fn serve_full(data: &Path, host_toml: &str, envs: &[(&str, &str)]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        Self::start(vec!["serve".to_string()], dir, data, host_toml, envs, true)
    }

    fn start(
        mut args: Vec<String>,
        dir: tempfile::TempDir,
        data: &Path,
        host_toml: &str,
        envs: &[(&str, &str)],
        wait_for_apps: bool,
    ) -> Host {
        let config = dir.path().join("host.toml");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{host_toml}\n",
                data.display()),
        )
        .unwrap();
        args.push("--config".into());
        args.push(config.display().to_string());

        let mut child = Command::new(host_binary())
            .args(&args)
            .env_remove("ALORIG_LISTEN")
            .env_remove("ALORIG_ADMIN_LISTEN")
            .env_remove("ALORIG_DATA_DIR")
            .env_remove("ALORIG_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting alorig-host");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let stderr_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                stderr_log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout_log = log.clone();
        std::thread::spawn(move || {
            let mut addrs = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("alorig-host: ingress on http://") {
                    let (ingress, admin) =
                        rest.split_once(", admin and /metrics on http://").unwrap();
                    addrs = Some((
                        ingress.parse::<SocketAddr>().unwrap(),
                        admin.parse::<SocketAddr>().unwrap(),
                    ));
                }
                // The host listens at once and loads its apps meanwhile; a
                // test starts once every app it was given serves.
                if let Some(addrs) = addrs
                    && (!wait_for_apps || line.starts_with("alorig-host: serving "))
                {
                    let _ = tx.send(addrs);
                }
                stdout_log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        // Generous: a Python component (18 MB) compiles in 7-12 s on a quiet machine,
        // several times that when the test run shares two cores with builds.
        let (ingress, admin) = match rx.recv_timeout(Duration::from_secs(400)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "alorig-host did not start serving its apps; its output:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http();
        Host {
            child,
            ingress,
            admin,
            dir,
            data: data.to_path_buf(),
            log,
            client,
        }
    }

    /// The host process's id (for reading its own figures from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin token the host created in its data dir.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs the CLI against this host's admin API and token: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(host_binary())
            .args(args)
            .env("ALORIG_ADMIN", format!("http://{}", self.admin))
            .env("ALORIG_ADMIN_TOKEN", self.token())
            .env("ALORIG_DATA_DIR", self.dir.path().join("cli-data"))
            .output()
            .expect("running alorig-host");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A request to the admin listener.
    pub async fn admin_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .expect("admin request failed");
        Reply::read(resp).await
    }

    /// Like [`Host::request`], but a failed connection is an `Err`, not a panic.
    pub async fn try_get(&self, host: &str, path: &str) -> Result<Reply, String> {
        let req = http::Request::get(format!("http://{}{path}", self.ingress))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Stops the host with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the host has printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub async fn request(&self, method: &str, host: &str, path: &str, body: Vec<u8>) -> Reply {
        self.request_with(method, host, path, &[] as &[(&str, &str)], body)
            .await
    }

    /// Like [`Host::request`], with extra request headers.
    pub async fn request_with<V: AsRef<str>>(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, V)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.ingress))
            .header("host", host);
        for (name, value) in headers {
            req = req.header(*name, value.as_ref());
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = self
            .client
            .request(req)
            .await
            .expect("request to the host failed");
        Reply::read(resp).await
    }

    /// Like [`Host::request`], but a request that fails (connection reset,
    /// closed before the answer) is an `Err` with the reason, not a panic.
    pub async fn try_request(
        &self,
        method: &str,
        host: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.ingress))
            .header("host", host)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        match self.client.request(req).await {
            Ok(resp) => Ok(Reply::read(resp).await),
            Err(err) => Err(format!("{err:?}")),
        }
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.request("GET", host, path, Vec::new()).await
    }

    /// The Prometheus exposition from the admin listener.
    pub async fn metrics(&self) -> String {
        let req = http::Request::get(format!("http://{}/metrics", self.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self
            .client
            .request(req)
            .await
            .expect("scraping /metrics failed");
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    /// The value of one series, e.g. `metric("alorig_app_memory_bytes", "app=\"a\"")`;
    /// 0 when the series does not exist (yet).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Waits (up to 5 s) for a series to reach `value`, returning the last value seen.
    pub async fn wait_metric(&self, name: &str, labels: &str, value: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.metric(name, labels).await;
            if seen == value || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn metric_value(exposition: &str, name: &str, labels: &str) -> f64 {
    let (labelled, bare) = (format!("{name}{{"), format!("{name} "));
    exposition
        .lines()
        .filter(|line| line.starts_with(&labelled) || line.starts_with(&bare))
        .filter(|line| labels.split(',').all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `(file name, text)` pairs into `dir`, returning their paths as strings.
pub fn write_files(dir: &Path, files: &[(&str, String)]) -> Vec<String> {
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        })
        .collect()
}

/// The one line a failing command printed on stderr: it must be exactly one,
/// start with `error: `, and carry no panic or backtrace.
pub fn one_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Backtrace"),
        "{stderr}"
    );
    lines[0].to_string()
}

/// `validate` of a manifest for `guest` with `extra` TOML, which must fail:
/// (the manifest's path, the one line on stderr).
pub fn validate_error(name: &str, guest_name: &str, extra: &str) -> (PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, manifest(name, guest_name, extra)).unwrap();
    let (code, _, stderr) = run_cli(&["validate", path.to_str().unwrap()]);
    assert_ne!(code, 0, "validate of {name} should fail");
    (path, stderr.trim().to_string())
}

/// Runs the host CLI to completion: (exit code, stdout, stderr).
/// Its data dir (compile cache) is a fresh temporary folder.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(host_binary())
        .args(args)
        .env("ALORIG_DATA_DIR", data.path())
        .output()
        .expect("running alorig-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Raises this process's open-files soft limit to its hard limit (the host
/// does the same for itself), which must leave room for `needed` sockets.
pub fn allow_open_files(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard} (raise `ulimit -Hn`)"
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .unwrap();
}

/// Latency percentiles of a set of durations (p50, p99) in milliseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    (at(0.50), at(0.99))
}

/// A shipped manifest (`manifests/<stem>.toml`) for a test: its component is
/// the guest built from source, and each line starting with an edit's first
/// part is replaced by its second (an empty second part drops the line).
pub fn shipped_manifest(stem: &str, guest_name: &str, edits: &[(&str, String)]) -> String {
    let text =
        std::fs::read_to_string(workspace_root().join(format!("manifests/{stem}.toml"))).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let line = match edits.iter().find(|(prefix, _)| line.starts_with(prefix)) {
            Some((_, replacement)) => replacement.clone(),
            None if line.starts_with("component") => {
                format!("component = \"{}\"", guest(guest_name).display())
            }
            None => line.to_string(),
        };
        if !line.is_empty() {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
