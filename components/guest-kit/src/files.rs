//! `[files]` for guests: the app's private directory, preopened by the host as
//! `/data` (plain `wasi:filesystem`, so `std::fs` works on it as well). Names
//! are relative to `/data`; the host refuses any path that leads out of it. A
//! write past the manifest's quota fails with [`is_quota_exceeded`] (ENOSPC).

use std::{
    fs, io,
    io::Write as _,
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
    let path = path(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes)
}

pub fn append(name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path(name))?
        .write_all(bytes)
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
