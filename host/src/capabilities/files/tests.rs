//! The quota and confinement of `[files]`, through the `Host` methods the
//! guest's `wasi:filesystem` calls reach, without wasm: each "instance" is a
//! WASI context with the directory preopened, its own table and view.

use super::*;
use crate::metrics::Metrics;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{
    WasiCtx,
    filesystem::{Descriptor, WasiFilesystemCtxView},
    p2::bindings::filesystem::{
        preopens::Host as PreopensHost,
        types::{DescriptorFlags, ErrorCode, HostDescriptor as _, OpenFlags, PathFlags},
    },
};

struct Instance {
    wasi: WasiCtx,
    table: ResourceTable,
    files: FilesCtx,
}

impl Instance {
    fn new(app: &Arc<FilesApp>) -> Self {
        Self {
            wasi: WasiApp::new("t", Vec::new()).ctx(Some(app.as_ref())),
            table: ResourceTable::new(),
            files: FilesCtx::new(Some(app)),
        }
    }

    fn view(&mut self) -> FilesView<'_> {
        FilesView::new(self.wasi.filesystem(), &mut self.table, &self.files)
    }

    /// The preopened `/data`.
    fn root(&mut self) -> Resource<Descriptor> {
        let mut fs = WasiFilesystemCtxView {
            ctx: self.wasi.filesystem(),
            table: &mut self.table,
        };
        let (dir, name) = PreopensHost::get_directories(&mut fs)
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(name, GUEST_PATH);
        dir
    }
}

use super::super::wasi::WasiApp;

fn app(dir: &Path, quota: u64, read_only: bool) -> Arc<FilesApp> {
    let metrics = Metrics::new().files("t");
    Arc::new(FilesApp {
        app: "t".into(),
        dir: dir.to_path_buf(),
        quota,
        read_only,
        usage: Arc::new(Usage::new(disk_usage(dir).unwrap(), metrics.clone())),
        metrics,
        offline: false,
    })
}

fn code(err: wasmtime_wasi::p2::FsError) -> ErrorCode {
    err.downcast().expect("an error code, not a trap")
}

fn rw() -> DescriptorFlags {
    DescriptorFlags::READ | DescriptorFlags::WRITE
}

async fn create(i: &mut Instance, name: &str) -> Result<Resource<Descriptor>, ErrorCode> {
    let root = i.root();
    i.view()
        .open_at(
            root,
            PathFlags::empty(),
            name.into(),
            OpenFlags::CREATE,
            rw(),
        )
        .await
        .map_err(code)
}

async fn write(
    i: &mut Instance,
    fd: &Resource<Descriptor>,
    bytes: &[u8],
    at: u64,
) -> Result<u64, ErrorCode> {
    i.view()
        .write(Resource::new_borrow(fd.rep()), bytes.to_vec(), at)
        .await
        .map_err(code)
}

async fn rename(i: &mut Instance, from: &str, to: &str) {
    let root = i.root();
    let again = Resource::new_borrow(root.rep());
    i.view()
        .rename_at(again, from.into(), root, to.into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_past_the_quota_fails_with_no_space_and_lands_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 64 << 10, false);
    let mut i = Instance::new(&app);
    let fd = create(&mut i, "a").await.unwrap();
    assert_eq!(app.usage.bytes(), ENTRY_BYTES);
    assert_eq!(write(&mut i, &fd, &[1; 40 << 10], 0).await, Ok(40 << 10));
    let room = (64 << 10) - ENTRY_BYTES - (40 << 10);
    // One byte more than the room left: refused whole.
    assert_eq!(
        write(&mut i, &fd, &vec![2; room as usize + 1], 40 << 10).await,
        Err(ErrorCode::InsufficientSpace)
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("a")).unwrap().len(),
        40 << 10
    );
    // Overwriting in place costs nothing; growing past the quota by set-size fails.
    assert_eq!(write(&mut i, &fd, &[3; 1000], 0).await, Ok(1000));
    let grow = i
        .view()
        .set_size(Resource::new_borrow(fd.rep()), 1 << 20)
        .await;
    assert_eq!(code(grow.unwrap_err()), ErrorCode::InsufficientSpace);
    assert_eq!(app.usage.bytes(), disk_usage(dir.path()).unwrap());
    // Exactly the room left fits.
    assert_eq!(
        write(&mut i, &fd, &vec![4; room as usize], 40 << 10).await,
        Ok(room)
    );
    assert_eq!(app.usage.bytes(), 64 << 10);
    assert_eq!(
        create(&mut i, "b").await.unwrap_err(),
        ErrorCode::InsufficientSpace
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_way_of_freeing_gives_back_what_the_disk_no_longer_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("planted"), [0; 5000]).unwrap();
    let app = app(dir.path(), 1 << 20, false);
    assert_eq!(app.usage.bytes(), ENTRY_BYTES + 5000);
    let mut i = Instance::new(&app);
    let same = |app: &FilesApp| assert_eq!(app.usage.bytes(), disk_usage(dir.path()).unwrap());

    let root = i.root();
    i.view()
        .create_directory_at(root, "d".into())
        .await
        .unwrap();
    let fd = create(&mut i, "d/f").await.unwrap();
    write(&mut i, &fd, &[1; 10_000], 0).await.unwrap();
    same(&app);
    i.view()
        .set_size(Resource::new_borrow(fd.rep()), 3000)
        .await
        .unwrap();
    same(&app);
    let root = i.root();
    i.view()
        .symlink_at(root, "d/f".into(), "link".into())
        .await
        .unwrap();
    same(&app);
    // open(TRUNCATE) frees the old contents.
    let root = i.root();
    i.view()
        .open_at(
            root,
            PathFlags::empty(),
            "planted".into(),
            OpenFlags::TRUNCATE,
            rw(),
        )
        .await
        .unwrap();
    same(&app);
    // A rename over a file frees the file it replaces; onto itself, nothing.
    rename(&mut i, "d/f", "planted").await;
    same(&app);
    rename(&mut i, "planted", "planted").await;
    same(&app);
    for name in ["planted", "link"] {
        let root = i.root();
        i.view().unlink_file_at(root, name.into()).await.unwrap();
    }
    let root = i.root();
    i.view()
        .remove_directory_at(root, "d".into())
        .await
        .unwrap();
    same(&app);
    assert_eq!(app.usage.bytes(), 0);
    // A file deleted while open: refunded at the delete, its shrink not again.
    write(&mut i, &fd, &[1; 8000], 0).await.unwrap();
    i.view().set_size(fd, 0).await.unwrap();
    assert_eq!(
        app.usage.bytes(),
        5000,
        "growing a deleted file stays charged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_instances_racing_past_the_quota_end_at_or_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let quota = 256 << 10;
    let app = app(dir.path(), quota, false);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = Instance::new(&app);
            let fd = create(&mut i, &format!("f{n}")).await?;
            let mut at = 0;
            loop {
                match write(&mut i, &fd, &[n as u8; 3000], at).await {
                    Ok(written) => at += written,
                    Err(err) => return Err::<(), _>(err),
                }
            }
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(ErrorCode::InsufficientSpace));
    }
    let on_disk = disk_usage(dir.path()).unwrap();
    assert!(on_disk <= quota, "{on_disk} > {quota}");
    assert_eq!(app.usage.bytes(), on_disk);
    assert!(
        on_disk > quota - 8 * 3000,
        "the quota was used up: {on_disk}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_out_links_and_writes_to_a_read_only_directory_are_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("t");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(parent.path().join("outside"), b"keep").unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    let app = app(&dir, 1 << 20, false);
    let mut i = Instance::new(&app);
    for path in ["../outside", "/etc/passwd", "etc/passwd", "a/../../outside"] {
        let root = i.root();
        let opened = i
            .view()
            .open_at(
                root,
                PathFlags::SYMLINK_FOLLOW,
                path.into(),
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .await;
        assert!(opened.is_err(), "{path} opened");
    }
    assert_eq!(
        create(&mut i, "../new").await.unwrap_err(),
        ErrorCode::NotPermitted
    );
    create(&mut i, "in").await.unwrap();
    let root = i.root();
    let link = i
        .view()
        .link_at(
            Resource::new_borrow(root.rep()),
            PathFlags::empty(),
            "in".into(),
            root,
            "in2".into(),
        )
        .await;
    assert_eq!(code(link.unwrap_err()), ErrorCode::NotPermitted);

    let read_only = app_read_only(&dir);
    let mut r = Instance::new(&read_only);
    let root = r.root();
    let truncated = r
        .view()
        .open_at(
            root,
            PathFlags::empty(),
            "in".into(),
            OpenFlags::TRUNCATE,
            DescriptorFlags::READ,
        )
        .await;
    assert_eq!(code(truncated.unwrap_err()), ErrorCode::NotPermitted);
    assert_eq!(
        create(&mut r, "new").await.unwrap_err(),
        ErrorCode::NotPermitted
    );
    assert_eq!(
        std::fs::read(parent.path().join("outside")).unwrap(),
        b"keep"
    );
}

fn app_read_only(dir: &Path) -> Arc<FilesApp> {
    app(dir, 1 << 20, true)
}

#[test]
fn usage_on_disk_counts_contents_and_entries_and_a_hard_linked_file_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/a"), [0; 100]).unwrap();
    std::fs::hard_link(dir.path().join("d/a"), dir.path().join("b")).unwrap();
    std::os::unix::fs::symlink("d/a", dir.path().join("c")).unwrap();
    assert_eq!(disk_usage(dir.path()).unwrap(), 4 * ENTRY_BYTES + 100 + 3);
}
