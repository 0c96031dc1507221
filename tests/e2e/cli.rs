//! `validate` and `up` refuse bad input with one clear line and a non-zero exit.

use crate::harness::{guest, manifest, one_error_line, run_cli, workspace_root};

fn one_line_error(args: &[&str]) -> String {
    let (code, stdout, stderr) = run_cli(args);
    assert_ne!(code, 0, "expected failure for {args:?}; stdout: {stdout}");
    one_error_line(&stderr)
}

#[test]
fn validate_accepts_a_good_app() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.toml");
    std::fs::write(
        &path,
        manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&["validate", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(": ok — app hello, 1 route(s), memory cap 128MiB"),
        "{stdout}"
    );
}

#[test]
fn malformed_manifests_are_refused_by_validate_and_up_with_the_line() {
    let fixtures = workspace_root().join("host/tests/fixtures/bad-manifests");
    for name in ["unknown-key", "bad-size", "bad-toml", "instance-over-app"] {
        let path = fixtures.join(format!("{name}.toml"));
        let expected = std::fs::read_to_string(fixtures.join(format!("{name}.err")))
            .unwrap()
            .trim()
            .replace("{file}", path.to_str().unwrap());
        assert_eq!(
            one_line_error(&["validate", path.to_str().unwrap()]),
            format!("error: {expected}")
        );
        assert_eq!(
            one_line_error(&["up", path.to_str().unwrap()]),
            format!("error: {expected}")
        );
    }
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "text.wasm",
            b"this is not wasm",
            "not a WebAssembly component (the file does not start with the \\0asm header)",
        ),
        (
            "module.wasm",
            b"\0asm\x01\0\0\0",
            "is a core WebAssembly module, not a component",
        ),
        (
            "truncated.wasm",
            b"\0asm\x0d\0\x01\0\x01\x05",
            "does not compile",
        ),
    ];
    for (file, bytes, expected) in cases {
        let component = dir.path().join(file);
        std::fs::write(&component, bytes).unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(&path, format!("name = \"app\"\ncomponent = \"{file}\"\n")).unwrap();
        for command in ["validate", "up"] {
            let line = one_line_error(&[command, path.to_str().unwrap()]);
            assert!(
                line.contains(component.to_str().unwrap()) && line.contains(expected),
                "{command} {file}: {line}"
            );
        }
    }
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "name = \"app\"\ncomponent = \"nowhere.wasm\"\n").unwrap();
    let line = one_line_error(&["validate", missing.to_str().unwrap()]);
    assert!(
        line.contains("component: cannot read") && line.contains("nowhere.wasm"),
        "{line}"
    );
}

#[test]
fn components_the_host_cannot_link_or_call_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "foreign-import.wasm",
            r#"(component (import "acme:nope/thing" (instance (export "f" (func)))))"#,
            "imports something alorig-host does not provide",
        ),
        (
            "no-handler.wasm",
            "(component)",
            "does not export a wasi:http/incoming-handler",
        ),
    ];
    for (file, wat, expected) in cases {
        std::fs::write(dir.path().join(file), wat::parse_str(wat).unwrap()).unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(&path, format!("name = \"app\"\ncomponent = \"{file}\"\n")).unwrap();
        for command in ["validate", "up"] {
            let line = one_line_error(&[command, path.to_str().unwrap()]);
            assert!(
                line.contains(file) && line.contains(expected),
                "{command} {file}: {line}"
            );
        }
    }
}

#[test]
fn serve_starts_with_no_apps_and_reports_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(&config, format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nmemory_budget = \"3GiB\"\n",
        dir.path().join("data").display()
    )).unwrap();
    let mut child = std::process::Command::new(crate::harness::host_binary())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let admin = first.trim().rsplit("http://").next().unwrap().to_string();
    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(&admin).unwrap();
        std::io::Write::write_all(
            &mut stream,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    assert!(
        metrics.contains(&format!("alorig_host_memory_budget_bytes {}", 3u64 << 30)),
        "{metrics}"
    );
    assert!(
        crate::harness::metric_value(&metrics, "alorig_host_resident_memory_bytes", "")
            > 1_000_000.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn validate_checks_the_component_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.toml");
    std::fs::write(&path, "name = \"app\"\ncomponent = \"nowhere.wasm\"\n").unwrap();
    let hello = guest("hello");
    let (code, stdout, stderr) = run_cli(&[
        "validate",
        path.to_str().unwrap(),
        "--component",
        hello.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn apps_over_the_hosts_memory_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = crate::harness::write_files(
        dir.path(),
        &[
            (
                "a.toml",
                manifest("a", "hello", "[resources]\nmemory = \"1GiB\""),
            ),
            (
                "b.toml",
                manifest("b", "hello", "[resources]\nmemory = \"1536MiB\""),
            ),
            ("host.toml", "memory_budget = \"2GiB\"\n".to_string()),
        ],
    );
    let line = one_line_error(&["up", &files[0], &files[1], "--config", &files[2]]);
    assert_eq!(
        line,
        "error: the apps' memory caps add up to 2560MiB (a 1GiB, b 1536MiB), more than the host's memory_budget of 2GiB"
    );
}

/// Found by a hostile tenant: durations this large made `validate` exit 101
/// ("overflow when adding duration to instant") or wrapped to 44 s, and a
/// `*.com` route claimed a whole top-level domain. Each is now one line naming
/// the file, the line and the value, and a plain error exit.
#[test]
fn huge_durations_and_public_suffix_wildcards_are_one_clear_line() {
    let cases = [
        (
            "[resources]\nrequest_timeout = \"2562047788015215h\"",
            "\"2562047788015215h\"",
        ),
        (
            "[resources]\nrequest_timeout = \"18446744073709551615s\"",
            "\"18446744073709551615s\"",
        ),
        (
            "[resources]\nrequest_timeout = \"307445734561825861m\"",
            "\"307445734561825861m\"",
        ),
        (
            "[resources]\nmax_body = \"17179869184GiB\"",
            "\"17179869184GiB\"",
        ),
        (
            "[[timers]]\nname = \"t\"\nevery = \"2562047788015215h\"",
            "\"2562047788015215h\"",
        ),
        (
            "[[timers]]\nname = \"t\"\nevery = \"1s\"\ntimeout = \"18446744073709551615s\"",
            "\"18446744073709551615s\"",
        ),
        ("[jobs]\nmax_backoff = \"99999999h\"", "\"99999999h\""),
        ("[[routes]]\nhost = \"*.com\"", "\"*.com\""),
        ("[[routes]]\nhost = \"*.co.uk\"", "\"*.co.uk\""),
    ];
    for (extra, value) in cases {
        let (path, stderr) = crate::harness::validate_error("app", "hello", extra);
        let line = one_error_line(&stderr);
        assert!(
            line.contains(&format!("{}:", path.display())) && line.contains(value),
            "{extra}: {line}"
        );
        assert!(
            line.contains("too long (at most 8784h")
                || line.contains("too large")
                || line.contains("public suffix"),
            "{extra}: {line}"
        );
    }
}
