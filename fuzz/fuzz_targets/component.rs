//! F2: deploy validation of arbitrary and mutated components: the byte checks,
//! compilation with the host's engine settings, the import grants and linking
//! against the host's capabilities. Oracle: no panic and no abort; anything
//! refused is refused with an error. The corpus is seeded with the repository's
//! built guests, so libFuzzer mutates real components; wasm-smith modules check
//! the core-module refusal.
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
    let (runtime, _) = &*RUNTIME;
    let path = Path::new("fuzz.wasm");
    // One input in 16 is read as a wasm-smith core module, which must be refused.
    if data.first().is_some_and(|b| b & 0x0f == 0) {
        let mut u = Unstructured::new(&data[1..]);
        if let Ok(module) = wasm_smith::Module::arbitrary(&mut u) {
            let bytes = module.to_bytes();
            let error =
                validate::check_bytes(path, &bytes).expect_err("a core module is not a component");
            assert!(error.to_string().contains("core WebAssembly module"));
        }
        return;
    }
    if validate::check_bytes(path, data).is_err() {
        return;
    }
    let Ok(component) = wasmtime::component::Component::new(&runtime.engine, data) else {
        return;
    };
    let imports: Vec<String> = component
        .component_type()
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let _ = validate::warnings(path, &MANIFEST, &imports);
    if validate::check_granted(path, &MANIFEST, &imports).is_ok() {
        let _ = validate::check_linkable(path, &runtime.linker, &component);
    }
});
