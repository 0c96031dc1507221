//! `[files]` for guests: the app's private directory, preopened by the host as
//! `/data` (plain `wasi:filesystem`, so `std::fs` works on it as well). Names
//! are relative to `/data`; the host refuses any path that leads out of it. A
//! write past the manifest's quota fails with [`is_quota_exceeded`] (ENOSPC).
//!
//! [`write`] and [`append`] write through `wasi:filesystem` streams themselves
//! and ask `filesystem-error-code` what a failed write was: wasi-libc (so
//! `std::fs`) reports every failed file-stream write as EIO, the quota's
//! `insufficient-space` included.

use crate::wasip2::{
    filesystem::{
        preopens,
        types::{self, Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags},
    },
    io::streams::{OutputStream, StreamError},
};
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Where the app's directory is, in the guest.
pub const ROOT: &str = "/data";

/// `/data/<name>`.
pub fn path(name: &str) -> PathBuf {
    Path::new(ROOT).join(name.trim_start_matches('/'))
}

pub fn read(name: &str) -> io::Result<Vec<u8>> {
    fs::read(path(name))
}

/// Writes the whole file, making its folders first.
pub fn write(name: &str, bytes: &[u8]) -> io::Result<()> {
    let file = open(name, OpenFlags::CREATE | OpenFlags::TRUNCATE)?;
    let stream = file.write_via_stream(0).map_err(error)?;
    put(&stream, bytes)
}

/// Adds to the end of the file (made if missing), in one step against other
/// instances appending too.
pub fn append(name: &str, bytes: &[u8]) -> io::Result<()> {
    let file = open(name, OpenFlags::CREATE)?;
    let stream = file.append_via_stream().map_err(error)?;
    put(&stream, bytes)
}

fn open(name: &str, oflags: OpenFlags) -> io::Result<Descriptor> {
    let name = name.trim_start_matches('/');
    if let Some((folder, _)) = name.rsplit_once('/') {
        fs::create_dir_all(path(folder))?;
    }
    root()?
        .open_at(PathFlags::empty(), name, oflags, DescriptorFlags::WRITE)
        .map_err(error)
}

fn root() -> io::Result<Descriptor> {
    preopens::get_directories()
        .into_iter()
        .find(|(_, name)| name == ROOT)
        .map(|(dir, _)| dir)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no /data: the manifest has no [files]",
            )
        })
}

/// `blocking-write-and-flush` takes at most 4096 bytes a call.
fn put(stream: &OutputStream, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.chunks(4096) {
        match stream.blocking_write_and_flush(chunk) {
            Ok(()) => {}
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(match types::filesystem_error_code(&err) {
                    Some(code) => error(code),
                    None => io::Error::other(err.to_debug_string()),
                });
            }
            Err(StreamError::Closed) => return Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    Ok(())
}

fn error(code: ErrorCode) -> io::Error {
    let kind = match code {
        ErrorCode::InsufficientSpace => io::ErrorKind::StorageFull,
        ErrorCode::NoEntry => io::ErrorKind::NotFound,
        ErrorCode::Exist => io::ErrorKind::AlreadyExists,
        ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly => {
            io::ErrorKind::PermissionDenied
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, code.message())
}

/// Deletes a file (frees its bytes in the quota).
pub fn remove(name: &str) -> io::Result<()> {
    fs::remove_file(path(name))
}

/// The names in a folder of `/data` (`""`: the top), sorted.
pub fn list(dir: &str) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(path(dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Whether `err` is the host's refusal of a write past the app's quota.
pub fn is_quota_exceeded(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::StorageFull
}
