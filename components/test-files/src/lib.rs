//! Test guest for `[files]` (the app's directory, `/data`). Routes:
//!
//! * `/write?name=`, `/append?name=` (the body), `/read?name=`, `/delete?name=`,
//!   `/list?dir=` — through `guest_kit::files` (`std::fs`); a write past the
//!   quota answers 507 `no-space`;
//! * `/fill?name=&chunk=N` — appends N-byte chunks until a write fails:
//!   507 `no-space <bytes written>` (or 500 with the other error);
//! * `/attacks?other=APP` — every way out of `/data` the tests know, through
//!   raw `wasi:filesystem` calls (so the host sees the path as written, not as
//!   wasi-libc resolved it), one line each: `<attack>: refused (<error>)` or
//!   `<attack>: ESCAPED`. Expects the test to have planted `etc -> /etc`,
//!   `up -> ..` and a file `mine.txt` in the app's directory;
//! * `/read-only-attacks?name=` — every way of changing the file `name` or the
//!   directory of a `read_only` app (wasmtime's FilePerms advisories: truncate,
//!   link and rename), one line each as above;
//! * `/stream-error?name=` — fills `name` through a raw `write-via-stream`
//!   and answers what `filesystem-error-code` says of the failed write;
//! * `/bench?size=N&count=K` — writes then reads K files of N bytes through
//!   `std::fs`, timed in the guest: `write_ns read_ns`.

use guest_kit::{files, wasip2};
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Files;

fn param(req: &IncomingRequest, name: &str) -> String {
    guest_kit::url_decode(&guest_kit::query_param(req, name).unwrap_or_default())
}

fn io_answer(out: ResponseOutparam, result: std::io::Result<Vec<u8>>) {
    match result {
        Ok(body) => guest_kit::respond(out, 200, "application/octet-stream", &body),
        Err(err) if files::is_quota_exceeded(&err) => {
            guest_kit::respond(out, 507, "text/plain", b"no-space")
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            guest_kit::respond(out, 404, "text/plain", err.to_string().as_bytes())
        }
        Err(err) => guest_kit::respond(out, 500, "text/plain", err.to_string().as_bytes()),
    }
}

/// Appends `chunk`-byte blocks to `name` until a write fails.
fn fill(name: &str, chunk: usize) -> (u64, std::io::Error) {
    let block = vec![b'f'; chunk];
    let mut written = 0;
    loop {
        match files::append(name, &block) {
            Ok(()) => written += chunk as u64,
            Err(err) => return (written, err),
        }
    }
}

fn root() -> Descriptor {
    wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, name)| name == files::ROOT)
        .map(|(dir, _)| dir)
        .expect("/data is preopened")
}

fn line<T>(name: &str, result: Result<T, ErrorCode>) -> String {
    match result {
        Ok(_) => format!("{name}: ESCAPED\n"),
        Err(err) => format!("{name}: refused ({err:?})\n"),
    }
}

const READ: DescriptorFlags = DescriptorFlags::READ;
const WRITE: DescriptorFlags = DescriptorFlags::WRITE;
const FOLLOW: PathFlags = PathFlags::SYMLINK_FOLLOW;
const NONE: OpenFlags = OpenFlags::empty();

fn open(
    dir: &Descriptor,
    path: &str,
    oflags: OpenFlags,
    flags: DescriptorFlags,
) -> Result<Descriptor, ErrorCode> {
    dir.open_at(FOLLOW, path, oflags, flags)
}

/// Every way out of `/data`; a descriptor opened outside counts as an escape
/// even before it is used.
fn attacks(other: &str) -> String {
    let d = root();
    let secret = format!("../{other}/secret");
    let mut out = String::new();
    out += &line("dotdot", open(&d, &secret, NONE, READ));
    out += &line(
        "dotdot-deep",
        open(&d, "../../../../../../../../etc/passwd", NONE, READ),
    );
    out += &line("absolute", open(&d, "/etc/passwd", NONE, READ));
    out += &line(
        "absolute-data",
        open(&d, &format!("/data/../{other}/secret"), NONE, READ),
    );
    out += &line(
        "other-app-by-name",
        open(&d, &format!("{other}/secret"), NONE, READ),
    );
    out += &line("planted-symlink", open(&d, "etc/passwd", NONE, READ));
    out += &line(
        "planted-symlink-up",
        open(&d, &format!("up/{other}/secret"), NONE, READ),
    );
    out += &line(
        "planted-symlink-write",
        open(
            &d,
            &format!("up/{other}/secret"),
            OpenFlags::TRUNCATE,
            WRITE,
        ),
    );
    out += &line(
        "create-through-symlink",
        open(&d, &format!("up/{other}/new"), OpenFlags::CREATE, WRITE),
    );
    out += &line("guest-symlink-absolute", d.symlink_at("/etc", "g-abs"));
    // A relative link pointing out may be made (it is only a name in /data);
    // following it must fail.
    let made = d.symlink_at(&format!("../{other}"), "g-out");
    out += &line(
        "guest-symlink-out",
        made.and_then(|()| open(&d, "g-out/secret", NONE, READ)),
    );
    out += &line(
        "hard-link-out",
        d.link_at(
            PathFlags::empty(),
            "mine.txt",
            &d,
            &format!("../{other}/stolen"),
        ),
    );
    out += &line(
        "hard-link-in",
        d.link_at(PathFlags::empty(), "mine.txt", &d, "mine-again.txt"),
    );
    out += &line(
        "hard-link-planted",
        d.link_at(PathFlags::empty(), "etc/passwd", &d, "passwd"),
    );
    out += &line(
        "hard-link-from-outside",
        d.link_at(PathFlags::empty(), &secret, &d, "stolen"),
    );
    out += &line(
        "rename-out",
        d.rename_at("mine.txt", &d, &format!("../{other}/mine.txt")),
    );
    out += &line(
        "rename-through-symlink",
        d.rename_at("mine.txt", &d, &format!("up/{other}/mine.txt")),
    );
    out += &line("rename-in-from-outside", d.rename_at(&secret, &d, "stolen"));
    out += &line("mkdir-out", d.create_directory_at("../evil"));
    out += &line("unlink-out", d.unlink_file_at(&secret));
    out += &line(
        "unlink-through-symlink",
        d.unlink_file_at(&format!("up/{other}/secret")),
    );
    out
}

/// Every way of changing a read-only directory; `name` is a file in it.
fn read_only_attacks(name: &str) -> String {
    let d = root();
    let mut out = String::new();
    out += &line("open-truncate", open(&d, name, OpenFlags::TRUNCATE, READ));
    out += &line(
        "open-truncate-write",
        open(&d, name, OpenFlags::TRUNCATE, WRITE),
    );
    out += &line("open-write", open(&d, name, NONE, WRITE));
    out += &line("open-create", open(&d, "new.txt", OpenFlags::CREATE, READ));
    match open(&d, name, NONE, READ) {
        Ok(file) => {
            out += &line("write", file.write(b"changed", 0));
            out += &line(
                "write-via-stream",
                file.write_via_stream(0).and_then(|s| {
                    s.blocking_write_and_flush(b"changed")
                        .map_err(|_| ErrorCode::Io)
                }),
            );
            out += &line(
                "append-via-stream",
                file.append_via_stream().and_then(|s| {
                    s.blocking_write_and_flush(b"changed")
                        .map_err(|_| ErrorCode::Io)
                }),
            );
            out += &line("set-size", file.set_size(0));
        }
        Err(err) => out += &format!("open-read: failed ({err:?})\n"),
    }
    out += &line("unlink", d.unlink_file_at(name));
    out += &line("rename", d.rename_at(name, &d, "renamed.txt"));
    out += &line(
        "hard-link",
        d.link_at(PathFlags::empty(), name, &d, "linked.txt"),
    );
    out += &line("symlink", d.symlink_at(name, "sym.txt"));
    out += &line("mkdir", d.create_directory_at("dir"));
    out
}

/// Fills `name` through a raw `write-via-stream` until it fails, then asks
/// `filesystem-error-code` what the stream's error was.
fn stream_error(name: &str) -> String {
    let d = root();
    let file = match open(&d, name, OpenFlags::CREATE, WRITE) {
        Ok(file) => file,
        Err(err) => return format!("open: {err:?}"),
    };
    let Ok(stream) = file.write_via_stream(0) else {
        return "no stream".into();
    };
    loop {
        if let Err(err) = stream.blocking_write_and_flush(&[b's'; 4096]) {
            return match err {
                wasip2::io::streams::StreamError::LastOperationFailed(e) => {
                    format!("{:?}", wasip2::filesystem::types::filesystem_error_code(&e))
                }
                wasip2::io::streams::StreamError::Closed => "closed".into(),
            };
        }
    }
}

fn now_ns() -> u64 {
    wasip2::clocks::monotonic_clock::now()
}

/// Writes then reads `count` files of `size` bytes: (write ns, read ns).
fn bench(size: usize, count: usize) -> std::io::Result<(u64, u64)> {
    let data = vec![7u8; size];
    let started = now_ns();
    for i in 0..count {
        files::write(&format!("bench/{i}"), &data)?;
    }
    let wrote = now_ns() - started;
    let started = now_ns();
    for i in 0..count {
        let back = files::read(&format!("bench/{i}"))?;
        if back.len() != size {
            return Err(std::io::Error::other("short read"));
        }
    }
    let read = now_ns() - started;
    for i in 0..count {
        files::remove(&format!("bench/{i}"))?;
    }
    Ok((wrote, read))
}

impl wasip2::exports::http::incoming_handler::Guest for Files {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&request);
        let name = param(&request, "name");
        match path.as_str() {
            "/write" => {
                let body = guest_kit::read_body(&request);
                io_answer(out, files::write(&name, &body).map(|()| b"ok".to_vec()))
            }
            "/append" => {
                let body = guest_kit::read_body(&request);
                io_answer(out, files::append(&name, &body).map(|()| b"ok".to_vec()))
            }
            "/read" => io_answer(out, files::read(&name)),
            "/delete" => io_answer(out, files::remove(&name).map(|()| b"ok".to_vec())),
            "/list" => io_answer(
                out,
                files::list(&param(&request, "dir")).map(|names| names.join("\n").into_bytes()),
            ),
            "/fill" => {
                let chunk = param(&request, "chunk").parse().unwrap_or(4096);
                let (written, err) = fill(&name, chunk);
                let (status, what) = if files::is_quota_exceeded(&err) {
                    (507, "no-space".to_string())
                } else {
                    (500, err.to_string())
                };
                guest_kit::respond(
                    out,
                    status,
                    "text/plain",
                    format!("{what} {written}").as_bytes(),
                )
            }
            "/attacks" => {
                let report = attacks(&param(&request, "other"));
                guest_kit::respond(out, 200, "text/plain", report.as_bytes())
            }
            "/read-only-attacks" => {
                let report = read_only_attacks(&name);
                guest_kit::respond(out, 200, "text/plain", report.as_bytes())
            }
            "/stream-error" => {
                let text = stream_error(&name);
                guest_kit::respond(out, 200, "text/plain", text.as_bytes())
            }
            "/bench" => {
                let size = param(&request, "size").parse().unwrap_or(4096);
                let count = param(&request, "count").parse().unwrap_or(100);
                io_answer(
                    out,
                    bench(size, count).map(|(w, r)| format!("{w} {r}").into_bytes()),
                )
            }
            _ => guest_kit::respond(out, 404, "text/plain", b"no such route"),
        }
    }
}

wasip2::http::proxy::export!(Files);
