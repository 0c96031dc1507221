//! Load from `wrk` (installed by the project's set-up), for the tests and the
//! benchmark suite: requests/s, latency percentiles and errors of one run.

use std::{net::SocketAddr, process::Command};

pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

/// One wrk run against `http://addr{path}` with `connections` connections.
pub fn wrk(
    addr: SocketAddr,
    host_header: &str,
    path: &str,
    connections: u32,
    seconds: u32,
) -> Load {
    let threads = connections.clamp(1, 2).to_string();
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
        ])
        .args(["-H", &format!("Host: {host_header}")])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("running wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let ms = |v: Option<&str>| -> f64 {
        let v = v.unwrap_or("0ms");
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(0.0);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => n,
        }
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    Load {
        rps: value("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: ms(value("50%")),
        p99_ms: ms(value("99%")),
        errors,
    }
}

/// Clients that each send `GET path` again as soon as the last one is answered
/// (a hostile tenant keeping `n` requests in flight), until stopped.
pub struct Spinners {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<(u16, std::time::Duration)>>>,
}

impl Spinners {
    pub fn start(addr: SocketAddr, host_header: &str, path: &str, n: usize) -> Spinners {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n");
        let clients = (0..n)
            .map(|_| {
                let (stop, request) = (stop.clone(), request.clone());
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        answers.push(one_request(addr, &request));
                    }
                    answers
                })
            })
            .collect();
        Spinners { stop, clients }
    }

    /// Stops sending; waits for the requests in flight; every answer's status
    /// and how long it took (status 0: the connection failed).
    pub fn stop(mut self) -> Vec<(u16, std::time::Duration)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::mem::take(&mut self.clients)
            .into_iter()
            .flat_map(|c| c.join().unwrap_or_default())
            .collect()
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One request on its own connection: the status and how long it took from
/// the moment it was sent (not counting the client's own connect).
pub fn one_request(addr: SocketAddr, request: &str) -> (u16, std::time::Duration) {
    use std::io::{Read as _, Write as _};
    let mut started = std::time::Instant::now();
    let status = (|| {
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .ok()?;
        started = std::time::Instant::now();
        stream.write_all(request.as_bytes()).ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        let status = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
        Some(status)
    })()
    .unwrap_or(0);
    (status, started.elapsed())
}

/// A process's CPU time so far (user + system), from /proc.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) are space-separated;
    // utime and stime are the 14th and 15th fields overall.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}
