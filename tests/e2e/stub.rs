//! Stub servers for the outside APIs the Alorig apps call (MetaApi, Claude,
//! OpenAI): plain HTTP/1.1 on a loopback port, answering each request with what
//! the test's closure says and keeping every request it saw.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    sync::{Arc, Mutex},
};

/// One request a stub received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct Stub {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    /// `http://127.0.0.1:<port>`: what a manifest's `allowed_hosts` lists.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Starts a stub answering `(status, JSON body)` for each request.
    pub fn start(answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (answer, log) = (answer.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                        let mut headers = Vec::new();
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                            }
                        }
                        let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
                        let mut body = Vec::new();
                        if chunked {
                            loop {
                                let mut size = String::new();
                                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                                    return;
                                }
                                let Ok(size) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else { return };
                                let mut chunk = vec![0; size + 2];
                                if reader.read_exact(&mut chunk).is_err() {
                                    return;
                                }
                                body.extend_from_slice(&chunk[..size]);
                                if size == 0 {
                                    break;
                                }
                            }
                        } else {
                            let length: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                            body = vec![0; length];
                            if reader.read_exact(&mut body).is_err() {
                                return;
                            }
                        }
                        let request = Seen { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() };
                        let (status, reply) = answer(&request);
                        log.lock().unwrap().push(request);
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        if reader.get_mut().write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Stub { port, seen }
    }
}
