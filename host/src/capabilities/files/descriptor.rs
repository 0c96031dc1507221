//! `wasi:filesystem/types` with the quota in front: operations that can grow
//! or shrink the app's directory are charged here (under the app's lock), the
//! rest go to wasmtime-wasi's implementation unchanged (see `files.rs`).

use super::{ENTRY_BYTES, FilesApp, FilesCtx, Usage, stream::QuotaOutputStream};
use std::{io, os::unix::fs::FileExt as _, os::unix::fs::MetadataExt as _, sync::Arc};
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::{
    filesystem::{Descriptor, WasiFilesystemCtx, WasiFilesystemCtxView},
    p2::{
        DynInputStream, DynOutputStream, FsError, FsResult,
        bindings::filesystem::types::{
            self, DescriptorFlags, ErrorCode, HostDescriptor, HostDirectoryEntryStream, OpenFlags,
            PathFlags,
        },
    },
    runtime::spawn_blocking,
};

/// What the filesystem bindings are implemented on: wasmtime-wasi's view plus
/// this instance's files state.
pub struct FilesView<'a> {
    fs: WasiFilesystemCtxView<'a>,
    files: &'a FilesCtx,
}

impl<'a> FilesView<'a> {
    pub fn new(
        ctx: &'a mut WasiFilesystemCtx,
        table: &'a mut ResourceTable,
        files: &'a FilesCtx,
    ) -> Self {
        Self {
            fs: WasiFilesystemCtxView { ctx, table },
            files,
        }
    }

    /// The app's files, if it may change them.
    fn writable(&self) -> FsResult<Arc<FilesApp>> {
        match &self.files.app {
            Some(app) if !app.read_only => Ok(app.clone()),
            _ => Err(ErrorCode::NotPermitted.into()),
        }
    }

    /// The open file behind `fd`, if the app may write to it.
    fn file(&self, fd: &Resource<Descriptor>) -> FsResult<(Arc<FilesApp>, Arc<std::fs::File>)> {
        let app = self.writable()?;
        match self.fs.table.get(fd)? {
            Descriptor::File(f) if !f.perms.write_not_permitted() => Ok((app, f.file.clone())),
            Descriptor::File(_) => Err(ErrorCode::NotPermitted.into()),
            Descriptor::Dir(_) => Err(ErrorCode::BadDescriptor.into()),
        }
    }
}

pub struct HasFiles;

impl HasData for HasFiles {
    type Data<'a> = FilesView<'a>;
}

/// A second handle on the same table entry (the first is consumed by the call).
fn again<T: 'static>(fd: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(fd.rep())
}

pub(super) fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Charges `bytes` to `charged` if the quota has room.
pub(super) fn charge(charged: &mut u64, quota: u64, bytes: u64) -> io::Result<()> {
    match charged.checked_add(bytes) {
        Some(total) if total <= quota => {
            *charged = total;
            Ok(())
        }
        _ => Err(no_space()),
    }
}

/// One write of `buf` at `at` (the end of the file when `None`), charged
/// before it lands; `all`: until every byte is written (streams), else one
/// `pwrite` (`descriptor.write`). Runs on a blocking thread.
pub(super) fn write_charged(
    usage: &Usage,
    quota: u64,
    file: &std::fs::File,
    buf: &[u8],
    at: Option<u64>,
    all: bool,
) -> io::Result<usize> {
    let mut charged = usage.charged.blocking_lock();
    let size = file.metadata()?.len();
    let start = at.unwrap_or(size);
    let end = start
        .checked_add(buf.len() as u64)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
    let growth = end.saturating_sub(size);
    charge(&mut charged, quota, growth)?;
    let mut written = 0;
    let result = loop {
        match file.write_at(&buf[written..], start + written as u64) {
            Ok(0) if written < buf.len() => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                if !all || written == buf.len() {
                    break Ok(written);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break Err(err),
        }
    };
    let grew = (start + written as u64).saturating_sub(size);
    *charged -= growth - grew;
    usage.publish(*charged);
    result
}

/// Sets a file's length, charging growth first and refunding what a shrink
/// frees (not for a file already deleted: that was refunded at the delete).
fn set_size_charged(usage: &Usage, quota: u64, file: &std::fs::File, size: u64) -> io::Result<()> {
    let mut charged = usage.charged.blocking_lock();
    let meta = file.metadata()?;
    let old = meta.len();
    if size > old {
        charge(&mut charged, quota, size - old)?;
        if let Err(err) = file.set_len(size) {
            *charged -= size - old;
            return Err(err);
        }
    } else {
        file.set_len(size)?;
        if meta.nlink() > 0 {
            *charged = charged.saturating_sub(old - size);
        }
    }
    usage.publish(*charged);
    Ok(())
}

/// What deleting the entry `stat` describes gives back.
fn cost(stat: &types::DescriptorStat) -> u64 {
    match stat.type_ {
        types::DescriptorType::RegularFile if stat.link_count > 1 => ENTRY_BYTES,
        types::DescriptorType::RegularFile | types::DescriptorType::SymbolicLink => {
            ENTRY_BYTES + stat.size
        }
        _ => ENTRY_BYTES,
    }
}

fn is(err: &FsError, code: ErrorCode) -> bool {
    err.downcast_ref().is_some_and(|e: &ErrorCode| *e == code)
}

/// Charges `bytes` now (one new entry), to be refunded if making it fails.
async fn reserve(app: &FilesApp, bytes: u64) -> FsResult<()> {
    let mut charged = app.usage.charged.lock().await;
    charge(&mut charged, app.quota, bytes)?;
    app.usage.publish(*charged);
    Ok(())
}

async fn refund(app: &FilesApp, bytes: u64) {
    let mut charged = app.usage.charged.lock().await;
    *charged = charged.saturating_sub(bytes);
    app.usage.publish(*charged);
}

impl FilesView<'_> {
    async fn set_size_of(&mut self, fd: &Resource<Descriptor>, size: u64) -> FsResult<()> {
        let (app, file) = self.file(fd)?;
        spawn_blocking(move || set_size_charged(&app.usage, app.quota, &file, size)).await?;
        Ok(())
    }

    /// The cost of what `path` under `dir` names now, if anything.
    async fn cost_at(&mut self, dir: &Resource<Descriptor>, path: &str) -> Option<u64> {
        let stat = self
            .fs
            .stat_at(again(dir), PathFlags::empty(), path.to_string())
            .await
            .ok()?;
        Some(cost(&stat))
    }

    /// Which file `path` under `dir` names (not following a last symlink).
    async fn identity(&mut self, dir: &Resource<Descriptor>, path: &str) -> Option<(u64, u64)> {
        let hash = self
            .fs
            .metadata_hash_at(again(dir), PathFlags::empty(), path.to_string())
            .await
            .ok()?;
        Some((hash.lower, hash.upper))
    }

    /// Creates the new file `path` (`oflags` without create, exclusive or
    /// truncate), charging one entry first.
    async fn create(
        &mut self,
        app: &FilesApp,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        reserve(app, ENTRY_BYTES).await?;
        let oflags = oflags | OpenFlags::CREATE | OpenFlags::EXCLUSIVE;
        let created = self.fs.open_at(fd, path_flags, path, oflags, flags).await;
        if created.is_err() {
            refund(app, ENTRY_BYTES).await;
        }
        created
    }
}

impl types::Host for FilesView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        self.fs.convert_error_code(err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        self.fs.filesystem_error_code(err)
    }
}

impl HostDescriptor for FilesView<'_> {
    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let (app, file) = self.file(&fd)?;
        let written = spawn_blocking(move || {
            write_charged(&app.usage, app.quota, &file, &buf, Some(offset), false)
        })
        .await?;
        Ok(written as types::Filesize)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let (app, file) = self.file(&fd)?;
        let stream: DynOutputStream = Box::new(QuotaOutputStream::new(app, file, Some(offset)));
        Ok(self.fs.table.push(stream)?)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let (app, file) = self.file(&fd)?;
        let stream: DynOutputStream = Box::new(QuotaOutputStream::new(app, file, None));
        Ok(self.fs.table.push(stream)?)
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        self.set_size_of(&fd, size).await
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let creates = oflags.contains(OpenFlags::CREATE);
        let truncates = oflags.contains(OpenFlags::TRUNCATE);
        if !creates && !truncates {
            return self.fs.open_at(fd, path_flags, path, oflags, flags).await;
        }
        if oflags.contains(OpenFlags::DIRECTORY) {
            return Err(ErrorCode::Invalid.into());
        }
        // Creating or truncating: for writing (as wasmtime-wasi opens them).
        let app = self.writable()?;
        let flags = flags | DescriptorFlags::WRITE;
        let plain = oflags & !(OpenFlags::CREATE | OpenFlags::EXCLUSIVE | OpenFlags::TRUNCATE);
        if creates && oflags.contains(OpenFlags::EXCLUSIVE) {
            return self.create(&app, fd, path_flags, path, plain, flags).await;
        }
        let opened = match self
            .fs
            .open_at(again(&fd), path_flags, path.clone(), plain, flags)
            .await
        {
            Err(err) if creates && is(&err, ErrorCode::NoEntry) => {
                match self
                    .create(&app, again(&fd), path_flags, path.clone(), plain, flags)
                    .await
                {
                    // Lost a race with another creator: open what it made.
                    Err(err) if is(&err, ErrorCode::Exist) => {
                        self.fs.open_at(fd, path_flags, path, plain, flags).await?
                    }
                    created => return created,
                }
            }
            opened => opened?,
        };
        if oflags.contains(OpenFlags::TRUNCATE)
            && let Err(err) = self.set_size_of(&opened, 0).await
        {
            let _ = self.fs.table.delete(opened);
            return Err(err);
        }
        Ok(opened)
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let app = self.writable()?;
        reserve(&app, ENTRY_BYTES).await?;
        let made = self.fs.create_directory_at(fd, path).await;
        if made.is_err() {
            refund(&app, ENTRY_BYTES).await;
        }
        made
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let app = self.writable()?;
        let bytes = ENTRY_BYTES + src_path.len() as u64;
        reserve(&app, bytes).await?;
        let made = self.fs.symlink_at(fd, src_path, dest_path).await;
        if made.is_err() {
            refund(&app, bytes).await;
        }
        made
    }

    /// Refused: a hard link would count one file's bytes under two names.
    async fn link_at(
        &mut self,
        _fd: Resource<Descriptor>,
        _old_path_flags: PathFlags,
        _old_path: String,
        _new_descriptor: Resource<Descriptor>,
        _new_path: String,
    ) -> FsResult<()> {
        Err(ErrorCode::NotPermitted.into())
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let app = self.writable()?;
        let usage = app.usage.clone();
        let mut charged = usage.charged.lock().await;
        let freed = self.cost_at(&fd, &path).await.unwrap_or(0);
        self.fs.unlink_file_at(fd, path).await?;
        *charged = charged.saturating_sub(freed);
        usage.publish(*charged);
        Ok(())
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let app = self.writable()?;
        let usage = app.usage.clone();
        let mut charged = usage.charged.lock().await;
        self.fs.remove_directory_at(fd, path).await?;
        *charged = charged.saturating_sub(ENTRY_BYTES);
        usage.publish(*charged);
        Ok(())
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let app = self.writable()?;
        let usage = app.usage.clone();
        let mut charged = usage.charged.lock().await;
        // What the rename replaces is freed, unless it is the same file.
        let replaced = match self.cost_at(&new_fd, &new_path).await {
            Some(cost) => {
                let old = self.identity(&fd, &old_path).await;
                let new = self.identity(&new_fd, &new_path).await;
                if old.is_some() && old == new { 0 } else { cost }
            }
            None => 0,
        };
        self.fs.rename_at(fd, old_path, new_fd, new_path).await?;
        *charged = charged.saturating_sub(replaced);
        usage.publish(*charged);
        Ok(())
    }

    // Everything else reads, or changes no sizes: wasmtime-wasi's, unchanged.

    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.fs.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.fs.sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        self.fs.get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        self.fs.get_type(fd).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.read(fd, len, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.fs.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.fs.sync(fd).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.fs.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times_at(fd, path_flags, path, atim, mtim).await
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        self.fs.readlink_at(fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.fs.read_via_stream(fd, offset)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.fs.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash_at(fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for FilesView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.fs.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}
