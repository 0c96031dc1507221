//! Checks a component before it may serve: that the bytes are a component (not a
//! core module or something else), that every import is something the host
//! provides and the manifest grants, and that it exports a `wasi:http` handler.
//! Used by `validate`, `up` and deploys alike, so all three refuse the same
//! things with the same words.

use crate::state::InstanceState;
use anyhow::{Result, anyhow, bail};
use std::path::Path;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
/// Component binaries use version 0x0d with layer 1.
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Cheap checks on the raw bytes, before spending time compiling them.
pub fn check_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = path.display();
    // Reachable from the deploy API: the header is read without slicing, so a
    // short upload is this error, never a panic.
    let header = bytes
        .first_chunk::<8>()
        .filter(|h| h.starts_with(WASM_MAGIC));
    let Some(&[_, _, _, _, v0, v1, v2, v3]) = header else {
        bail!(
            "{path}: not a WebAssembly component (the file does not start with the \\0asm header)"
        );
    };
    let version = [v0, v1, v2, v3];
    if version == CORE_MODULE_VERSION {
        bail!(
            "{path}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
        );
    }
    if version != COMPONENT_VERSION {
        bail!(
            "{path}: unsupported WebAssembly binary version {version:02x?}; expected a component (wasm32-wasip2)"
        );
    }
    Ok(())
}

/// One row of [`GRANTED_IMPORTS`].
type GrantedImport = (
    &'static str,
    &'static str,
    fn(&crate::config::Manifest) -> bool,
);

/// Imports that need a manifest grant to be linked at all, each with that grant:
/// (WIT interface without version, the grant's name, whether the manifest grants it).
/// A capability that needs a grant adds its row here.
///
/// `wasi:http/outgoing-handler` is deliberately not here: every standard
/// `wasi:http/proxy` component imports it (componentize-py's, the `wasip2`
/// crate's, Spin's), so importing it is not a grant. It is always linked, and each
/// outgoing request is checked against `[outbound_http] allowed_hosts` at call time
/// (`HttpRequestDenied` when nothing is granted); see [`warnings`].
const GRANTED_IMPORTS: &[GrantedImport] = &[(
    "alorig:host/websocket",
    "a [[routes]] entry with websocket = true",
    |m| m.routes.iter().any(|r| r.websocket),
)];

/// Lines worth an operator's glance that do not stop a component from loading:
/// today, a component that can make outgoing requests while its manifest allows
/// none (each one will be refused with `HttpRequestDenied`).
pub fn warnings(
    path: &Path,
    manifest: &crate::config::Manifest,
    imports: &[String],
) -> Vec<String> {
    let imports_outbound = imports
        .iter()
        .any(|i| i.split('@').next() == Some("wasi:http/outgoing-handler"));
    if imports_outbound && manifest.outbound_http.allowed.is_empty() {
        vec![format!(
            "{}: imports wasi:http/outgoing-handler but {} has no [outbound_http] allowed_hosts: every outgoing request will be refused (HttpRequestDenied)",
            path.display(),
            manifest.source.display()
        )]
    } else {
        Vec::new()
    }
}

/// Every import that needs a manifest grant has it: a component cannot reach
/// what its manifest does not say (refused at deploy, not at the first call).
pub fn check_granted(
    path: &Path,
    manifest: &crate::config::Manifest,
    imports: &[String],
) -> Result<()> {
    for import in imports {
        let interface = import.split('@').next().unwrap_or(import);
        if let Some((_, grant, _)) = GRANTED_IMPORTS
            .iter()
            .find(|(name, _, granted)| *name == interface && !granted(manifest))
        {
            bail!(
                "{}: imports {interface}, which needs {grant} in {}; grant it there or build without it",
                path.display(),
                manifest.source.display()
            );
        }
    }
    Ok(())
}

/// Links the component against what the host provides and checks its export.
pub fn check_linkable(
    path: &Path,
    linker: &Linker<InstanceState>,
    component: &Component,
) -> Result<ProxyPre<InstanceState>> {
    let path = path.display();
    let pre = linker.instantiate_pre(component).map_err(|err| {
        anyhow!(
            "{path}: imports something alorig-host does not provide: {}",
            one_line(err)
        )
    })?;
    ProxyPre::new(pre).map_err(|err| {
        anyhow!("{path}: does not export a wasi:http/incoming-handler (a wasi:http proxy component is needed): {}", one_line(err))
    })
}

fn one_line(err: wasmtime::Error) -> String {
    format!("{:#}", anyhow::Error::from(err)).replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importing_outgoing_handler_is_not_a_grant_but_earns_a_warning() {
        let bare = crate::config::Manifest::parse(
            Path::new("a.toml"),
            "name = \"a\"\ncomponent = \"a.wasm\"\n",
        )
        .unwrap();
        let granted = crate::config::Manifest::parse(
            Path::new("a.toml"),
            "name = \"a\"\ncomponent = \"a.wasm\"\n[outbound_http]\nallowed_hosts = [\"https://x.test\"]\n",
        )
        .unwrap();
        let imports = vec![
            "wasi:io/poll@0.2.6".to_string(),
            "wasi:http/outgoing-handler@0.2.6".to_string(),
        ];
        check_granted(Path::new("a.wasm"), &bare, &imports).unwrap();
        assert_eq!(
            warnings(Path::new("a.wasm"), &bare, &imports),
            [
                "a.wasm: imports wasi:http/outgoing-handler but a.toml has no [outbound_http] allowed_hosts: every outgoing request will be refused (HttpRequestDenied)"
            ]
        );
        assert!(warnings(Path::new("a.wasm"), &granted, &imports).is_empty());
        assert!(warnings(Path::new("a.wasm"), &bare, &imports[..1]).is_empty());
    }

    #[test]
    fn a_websocket_import_needs_a_websocket_route() {
        let bare = crate::config::Manifest::parse(
            Path::new("a.toml"),
            "name = \"a\"\ncomponent = \"a.wasm\"\n",
        )
        .unwrap();
        let imports = vec!["alorig:host/websocket@0.1.0".to_string()];
        let err = check_granted(Path::new("a.wasm"), &bare, &imports)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "a.wasm: imports alorig:host/websocket, which needs a [[routes]] entry with websocket = true in a.toml; grant it there or build without it"
        );
    }

    #[test]
    fn non_components_are_named_for_what_they_are() {
        let p = Path::new("x.wasm");
        assert!(
            check_bytes(p, b"hello world")
                .unwrap_err()
                .to_string()
                .contains("does not start with the \\0asm header")
        );
        let module = wat::parse_str("(module)").unwrap();
        assert!(
            check_bytes(p, &module)
                .unwrap_err()
                .to_string()
                .contains("is a core WebAssembly module, not a component")
        );
        let component = wat::parse_str("(component)").unwrap();
        check_bytes(p, &component).unwrap();
    }
}
