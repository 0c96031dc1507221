//! Deployed versions on disk, so a restart brings every app back:
//!
//! ```text
//! <data_dir>/apps/<app>/<version>/manifest.toml   the manifest as deployed
//! <data_dir>/apps/<app>/<version>/component.wasm  the component as deployed
//! <data_dir>/apps/<app>/current                   the version in force, e.g. "3\n"
//! ```
//!
//! Invariant: `current` only ever names a complete version folder. A version is
//! written into `<version>.tmp`, its files fsynced, then renamed into place (and
//! the parent fsynced) before `current` is replaced the same way: write
//! `current.tmp`, fsync, rename, fsync the folder. A crash or SIGKILL at any
//! moment leaves `current` naming the old version or the new one, and at worst a
//! `*.tmp` leftover that the next start deletes.

use crate::config::Manifest;
use anyhow::{Context as _, Result};
use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    /// Versions kept per app (the current one always among them).
    keep: usize,
}

impl Store {
    pub fn new(data_dir: &Path, keep: usize) -> Self {
        Self {
            dir: data_dir.join("apps"),
            keep: keep.max(1),
        }
    }

    fn app_dir(&self, app: &str) -> PathBuf {
        self.dir.join(app)
    }

    pub fn version_dir(&self, app: &str, version: u32) -> PathBuf {
        self.app_dir(app).join(version.to_string())
    }

    /// Apps with a version in force, in name order.
    pub fn apps(&self) -> Result<Vec<String>> {
        let mut apps = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(apps),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", self.dir.display()));
            }
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("current").is_file() {
                apps.push(name);
            }
        }
        apps.sort();
        Ok(apps)
    }

    /// The version in force, if the app is deployed.
    pub fn current(&self, app: &str) -> Result<Option<u32>> {
        let path = self.app_dir(app).join("current");
        match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .with_context(|| format!("{}: not a version number", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Complete versions on disk, oldest first.
    pub fn versions(&self, app: &str) -> Result<Vec<u32>> {
        let mut versions = Vec::new();
        let Ok(entries) = fs::read_dir(self.app_dir(app)) else {
            return Ok(versions);
        };
        for entry in entries {
            let entry = entry?;
            if let Some(v) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                versions.push(v);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The number a new version gets: one past the highest ever kept.
    pub fn next_version(&self, app: &str) -> Result<u32> {
        let highest = self.versions(app)?.last().copied().unwrap_or(0);
        let current = self.current(app)?.unwrap_or(0);
        Ok(highest.max(current) + 1)
    }

    /// Writes a complete version folder (not yet in force).
    pub fn write_version(
        &self,
        app: &str,
        version: u32,
        manifest: &str,
        component: &[u8],
    ) -> Result<()> {
        self.write_version_with(app, version, manifest, |path| write_synced(path, component))
    }

    /// Like [`Self::write_version`], copying the component from a file.
    pub fn write_version_file(
        &self,
        app: &str,
        version: u32,
        manifest: &str,
        component: &Path,
    ) -> Result<()> {
        self.write_version_with(app, version, manifest, |path| {
            fs::copy(component, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            File::open(path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", path.display()))
        })
    }

    fn write_version_with(
        &self,
        app: &str,
        version: u32,
        manifest: &str,
        component: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let dir = self.version_dir(app, version);
        let tmp = dir.with_extension("tmp");
        let _ = fs::remove_dir_all(&tmp);
        // A same-numbered folder is another version (a cache refreshed from
        // PostgreSQL): the new one replaces it.
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        write_synced(&tmp.join("manifest.toml"), manifest.as_bytes())?;
        component(&tmp.join("component.wasm"))?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, &dir).with_context(|| format!("cannot write {}", dir.display()))?;
        sync_dir(&self.app_dir(app))?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Puts `version` in force, atomically.
    pub fn set_current(&self, app: &str, version: u32) -> Result<()> {
        let dir = self.app_dir(app);
        let tmp = dir.join("current.tmp");
        write_synced(&tmp, format!("{version}\n").as_bytes())?;
        fs::rename(&tmp, dir.join("current"))
            .with_context(|| format!("cannot write {}", dir.join("current").display()))?;
        sync_dir(&dir)
    }

    /// The stored manifest of a version, its `component` pointing at the stored file.
    pub fn manifest(&self, app: &str, version: u32) -> Result<(Manifest, String)> {
        let dir = self.version_dir(app, version);
        let path = dir.join("manifest.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut manifest = Manifest::parse(&path, &text)?;
        manifest.component = dir.join("component.wasm");
        Ok((manifest, text))
    }

    /// The sha256 (hex) of a stored version's component and its manifest text,
    /// or None when the version is not on disk.
    pub fn fingerprint(&self, app: &str, version: u32) -> Result<Option<(String, String)>> {
        use sha2::{Digest as _, Sha256};
        let dir = self.version_dir(app, version);
        let manifest = match fs::read_to_string(dir.join("manifest.toml")) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", dir.display()));
            }
        };
        let path = dir.join("component.wasm");
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Some((hex::encode(hasher.finalize()), manifest)))
    }

    /// Deletes the oldest versions past the kept count, never `current`.
    pub fn prune(&self, app: &str, current: u32) -> Result<()> {
        let versions = self.versions(app)?;
        let mut others: Vec<u32> = versions.into_iter().filter(|v| *v != current).collect();
        let excess = others.len().saturating_sub(self.keep - 1);
        for version in others.drain(..excess) {
            let dir = self.version_dir(app, version);
            fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))?;
        }
        Ok(())
    }

    /// Removes an app: `current` goes first (so a crash midway leaves it removed),
    /// then its versions.
    pub fn remove(&self, app: &str) -> Result<()> {
        let dir = self.app_dir(app);
        match fs::remove_file(dir.join("current")) {
            Ok(()) => sync_dir(&dir)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot delete {}", dir.join("current").display()));
            }
        }
        fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))
    }

    /// Deletes what an interrupted deploy left behind (`*.tmp`), and apps whose
    /// removal was interrupted (no `current`).
    pub fn clean(&self) -> Result<()> {
        let Ok(apps) = fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for app in apps {
            let app = app?.path();
            if !app.join("current").is_file() {
                tracing::info!(path = %app.display(), "deleting an app folder with no version in force");
                let _ = fs::remove_dir_all(&app);
                continue;
            }
            for entry in fs::read_dir(&app)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    tracing::info!(path = %path.display(), "deleting what an interrupted deploy left");
                    let _ = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                }
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "name = \"a\"\ncomponent = \"elsewhere.wasm\"\n";

    #[test]
    fn versions_go_in_force_and_are_pruned_but_never_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), 2);
        assert_eq!(store.apps().unwrap(), Vec::<String>::new());
        assert_eq!(store.next_version("a").unwrap(), 1);
        store.write_version("a", 1, MANIFEST, b"one").unwrap();
        assert_eq!(
            store.apps().unwrap(),
            Vec::<String>::new(),
            "written but not in force"
        );
        store.set_current("a", 1).unwrap();
        assert_eq!(store.apps().unwrap(), vec!["a".to_string()]);
        for v in 2..=4 {
            assert_eq!(store.next_version("a").unwrap(), v);
            store.write_version("a", v, MANIFEST, b"x").unwrap();
        }
        store.set_current("a", 1).unwrap();
        store.prune("a", 1).unwrap();
        assert_eq!(store.versions("a").unwrap(), vec![1, 4]);
        assert_eq!(store.next_version("a").unwrap(), 5);
        let (manifest, _) = store.manifest("a", 4).unwrap();
        assert_eq!(
            manifest.component,
            store.version_dir("a", 4).join("component.wasm")
        );
    }

    #[test]
    fn leftovers_of_interrupted_deploys_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), 5);
        store.write_version("a", 1, MANIFEST, b"one").unwrap();
        store.set_current("a", 1).unwrap();
        fs::create_dir_all(store.version_dir("a", 2).with_extension("tmp")).unwrap();
        fs::write(store.app_dir("a").join("current.tmp"), "2").unwrap();
        store
            .write_version("b", 1, MANIFEST, b"never in force")
            .unwrap();
        store.clean().unwrap();
        assert_eq!(store.versions("a").unwrap(), vec![1]);
        assert!(!store.app_dir("a").join("current.tmp").exists());
        assert!(!store.app_dir("b").exists());
        assert_eq!(store.current("a").unwrap(), Some(1));
    }
}
