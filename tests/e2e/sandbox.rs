//! What a guest can see of the host: only its manifest's `[env]` and resolved
//! `[secrets]`; no files, no inherited environment. Its output becomes log lines.

use crate::harness::{Host, manifest};

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_sees_only_its_manifests_env_and_secrets() {
    let extra = "[env]\nLOG_LEVEL = \"debug\"\n[secrets]\nAPI_KEY = { env = \"TEST_ECHO_API_KEY\" }\n[[routes]]\nhost = \"echo.test\"";
    let host = Host::up_full(
        &[("echo", manifest("echo", "test-echo", extra))],
        "",
        &[
            ("TEST_ECHO_API_KEY", "s3cret"),
            ("HOST_ONLY_VARIABLE", "must-not-leak"),
        ],
    );
    assert_eq!(
        host.get("echo.test", "/env/LOG_LEVEL").await.text(),
        "debug"
    );
    assert_eq!(host.get("echo.test", "/env/API_KEY").await.text(), "s3cret");
    assert_eq!(
        host.get("echo.test", "/env/HOST_ONLY_VARIABLE")
            .await
            .status,
        404
    );
    assert_eq!(host.get("echo.test", "/env/PATH").await.status, 404);
    assert_eq!(
        host.get("echo.test", "/env").await.text(),
        "2",
        "exactly the manifest's two variables"
    );
    assert_eq!(
        host.get("echo.test", "/files").await.text(),
        "0",
        "no directory is preopened"
    );
    assert!(
        !host.log().contains("s3cret"),
        "secrets never reach the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_cannot_open_sockets() {
    let host = Host::up(&[(
        "echo",
        manifest("echo", "test-echo", "[[routes]]\nhost = \"echo.test\""),
    )]);
    // Its own host's ingress, on loopback, is as unreachable as anything else.
    let answer = host
        .get("echo.test", &format!("/connect?addr={}", host.ingress))
        .await
        .text();
    assert!(answer.starts_with("refused:"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_output_becomes_log_lines_tagged_with_the_app() {
    let host = Host::up(&[(
        "echo",
        manifest("echo", "test-echo", "[[routes]]\nhost = \"echo.test\""),
    )]);
    assert_eq!(host.get("echo.test", "/log").await.text(), "logged");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = host.log();
        let line = |text: &str| log.lines().find(|l| l.contains(text)).map(str::to_string);
        if let (Some(out), Some(err)) = (
            line("hello from the guest's stdout"),
            line("hello from the guest's stderr"),
        ) {
            assert!(
                out.contains("app=echo") && out.contains("stream=\"stdout\""),
                "{out}"
            );
            assert!(
                err.contains("app=echo") && err.contains("stream=\"stderr\""),
                "{err}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest output not logged:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_stops_up_with_a_clear_error() {
    let (path, stderr) = crate::harness::validate_error(
        "echo",
        "test-echo",
        "[secrets]\nKEY = { env = \"ALORIG_TEST_UNSET_VARIABLE\" }",
    );
    assert_eq!(
        stderr,
        format!(
            "error: {}: secrets.KEY: host environment variable ALORIG_TEST_UNSET_VARIABLE is not set",
            path.display()
        )
    );
}
