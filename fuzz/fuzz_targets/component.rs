//! F2: deploy validation of arbitrary and mutated components: the byte checks,
//! compilation with the host's engine settings, the import grants and linking
//! against the host's capabilities. Oracle: no panic and no abort; anything
//! refused is refused with an error. The corpus is seeded with the repository's
//! built guests, so libFuzzer mutates real components; wasm-smith components
//! (valid, arbitrary imports and exports) go through the same checks, and
//! wasm-smith core modules check the core-module refusal.
#![no_main]

use alorig_host::{config::Manifest, runtime::Runtime, validate};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::{path::Path, sync::LazyLock};

static RUNTIME: LazyLock<(Runtime, tempfile::TempDir)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    (Runtime::new(dir.path(), 4).expect("the host's engine"), dir)
});

static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| {
    Manifest::parse(
        Path::new("fuzz/app.toml"),
        "name = \"fuzz\"\ncomponent = \"fuzz.wasm\"\n[[routes]]\nhost = \"fuzz.test\"\n",
    )
    .expect("the fuzz manifest")
});

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.wasm");
    match data.first().map(|b| b & 0x0f) {
        // One input in 16 is read as a wasm-smith core module, which must be refused.
        Some(0) => {
            let mut u = Unstructured::new(&data[1..]);
            if let Ok(module) = wasm_smith::Module::arbitrary(&mut u) {
                let bytes = module.to_bytes();
                let error = validate::check_bytes(path, &bytes)
                    .expect_err("a core module is not a component");
                assert!(error.to_string().contains("core WebAssembly module"));
            }
        }
        // One in 16 as a wasm-smith component: valid by construction, with
        // arbitrary imports and exports, through every check.
        Some(1) => {
            let mut u = Unstructured::new(&data[1..]);
            if let Ok(component) = wasm_smith::Component::arbitrary(&mut u) {
                deploy_checks(&component.to_bytes());
            }
        }
        // The rest as bytes: mostly mutations of the real guests in the corpus.
        _ => deploy_checks(data),
    }
});

/// What a deploy runs on a component's bytes before it swaps the app in.
fn deploy_checks(bytes: &[u8]) {
    let (runtime, _) = &*RUNTIME;
    let path = Path::new("fuzz.wasm");
    if validate::check_bytes(path, bytes).is_err() {
        return;
    }
    let Ok(component) = wasmtime::component::Component::new(&runtime.engine, bytes) else {
        return;
    };
    let imports: Vec<String> = component
        .component_type()
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let _ = validate::warnings(path, &MANIFEST, &imports);
    if validate::check_granted(path, &MANIFEST, &imports).is_ok()
        && validate::check_linkable(path, &runtime.linker, &component).is_ok()
    {
        let _ = alorig_host::capabilities::check_sections(&MANIFEST, &imports);
    }
}
