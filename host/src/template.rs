//! `alorig-host new <name> --lang python|rust`: writes a project that builds and
//! deploys as it is. The files are the repo's own (`host/templates/`, the Python
//! SDK in `sdk/python/`, the WIT in `wit/`), embedded at compile time so the
//! binary alone can make a project, and a template cannot drift from the SDK.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

/// A project language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Python,
    Rust,
}

/// (path in the project, contents); `{{name}}` and `{{crate}}` are replaced.
type Files = &'static [(&'static str, &'static str)];

macro_rules! embed {
    ($($path:literal => $file:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $file)))),*]
    };
}

const PYTHON: Files = embed![
    "app.py" => "host/templates/python/app.py",
    "{{name}}.toml" => "host/templates/python/manifest.toml",
    "build.sh" => "host/templates/python/build.sh",
    "README.md" => "host/templates/python/README.md",
    "sdk/alorig_build.py" => "sdk/python/alorig_build.py",
    "sdk/alorig/__init__.py" => "sdk/python/alorig/__init__.py",
    "sdk/alorig/app.py" => "sdk/python/alorig/app.py",
    "sdk/alorig/db.py" => "sdk/python/alorig/db.py",
    "sdk/alorig/env.py" => "sdk/python/alorig/env.py",
    "sdk/alorig/errors.py" => "sdk/python/alorig/errors.py",
    "sdk/alorig/files.py" => "sdk/python/alorig/files.py",
    "sdk/alorig/exports.py" => "sdk/python/alorig/exports.py",
    "sdk/alorig/http.py" => "sdk/python/alorig/http.py",
    "sdk/alorig/jobs.py" => "sdk/python/alorig/jobs.py",
    "sdk/alorig/redis.py" => "sdk/python/alorig/redis.py",
    "sdk/alorig/urls.py" => "sdk/python/alorig/urls.py",
    "sdk/alorig/websocket.py" => "sdk/python/alorig/websocket.py",
    "wit/app.wit" => "wit/app.wit",
    "wit/postgres.wit" => "wit/postgres.wit",
    "wit/redis.wit" => "wit/redis.wit",
    "wit/timers.wit" => "wit/timers.wit",
    "wit/websocket.wit" => "wit/websocket.wit",
    "wit/deps/cli/cli.wit" => "wit/deps/cli/cli.wit",
    "wit/deps/clocks/clocks.wit" => "wit/deps/clocks/clocks.wit",
    "wit/deps/filesystem/filesystem.wit" => "wit/deps/filesystem/filesystem.wit",
    "wit/deps/http/http.wit" => "wit/deps/http/http.wit",
    "wit/deps/io/io.wit" => "wit/deps/io/io.wit",
    "wit/deps/random/random.wit" => "wit/deps/random/random.wit",
    "wit/deps/sockets/sockets.wit" => "wit/deps/sockets/sockets.wit",
];

const RUST: Files = embed![
    "Cargo.toml" => "host/templates/rust/Cargo.toml",
    "src/lib.rs" => "host/templates/rust/lib.rs",
    "{{name}}.toml" => "host/templates/rust/manifest.toml",
    "README.md" => "host/templates/rust/README.md",
];

/// Writes project `name` in `dir/name` (which must not exist); returns its path.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<PathBuf> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !name.as_bytes()[0].is_ascii_lowercase()
    {
        bail!(
            "new: app name {name:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter (it is also the manifest's name and a host name)"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "new: {} already exists; choose another name or folder",
            root.display()
        );
    }
    let krate = name.replace('-', "_");
    let files = match lang {
        Lang::Python => PYTHON,
        Lang::Rust => RUST,
    };
    for (path, text) in files {
        let path = root.join(path.replace("{{name}}", name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("new: cannot create {}", parent.display()))?;
        }
        let text = text.replace("{{name}}", name).replace("{{crate}}", &krate);
        std::fs::write(&path, text)
            .with_context(|| format!("new: cannot write {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("new: cannot make {} executable", path.display()))?;
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_module_and_wit_file_is_in_the_python_template() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let embedded: Vec<&str> = PYTHON.iter().map(|(p, _)| *p).collect();
        for entry in std::fs::read_dir(root.join("sdk/python/alorig")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".py") {
                assert!(
                    embedded.contains(&format!("sdk/alorig/{name}").as_str()),
                    "sdk/python/alorig/{name} is not embedded"
                );
            }
        }
        let wit_files = std::fs::read_dir(root.join("wit"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count()
            + std::fs::read_dir(root.join("wit/deps"))
                .unwrap()
                .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
                .sum::<usize>();
        assert_eq!(
            embedded.iter().filter(|p| p.starts_with("wit/")).count(),
            wit_files,
            "a WIT file is missing from the template"
        );
    }

    #[test]
    fn bad_names_and_existing_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "Shop", "1app", "a_b", "a/b"] {
            assert!(
                create(dir.path(), bad, Lang::Rust)
                    .unwrap_err()
                    .to_string()
                    .starts_with("new: app name")
            );
        }
        create(dir.path(), "shop", Lang::Rust).unwrap();
        assert!(
            create(dir.path(), "shop", Lang::Python)
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        let manifest = std::fs::read_to_string(dir.path().join("shop/shop.toml")).unwrap();
        assert!(
            manifest.contains("name      = \"shop\"") && !manifest.contains("{{"),
            "{manifest}"
        );
    }
}
