//! Escape attempts that the other modules' tests do not already make (hard gate:
//! every one must fail): the admin API from a stranger and from a guest, and
//! outbound HTTP to loopback, private and metadata addresses by every spelling.
//! PostgreSQL and Redis attempts are in postgres.rs and redis.rs.

use crate::{
    deploy::{deploy_ok, echo_manifest},
    harness::{Host, manifest},
    outbound::{ok_response, upstream},
};
use std::{sync::atomic::Ordering, time::Duration};

/// A stranger with no token, a wrong or mangled one, or the right one in the
/// wrong place changes nothing; with the token, path tricks reach no other app.
/// A request from someone without the token: what it tries, its path, its headers.
type Stranger<'a> = (&'a str, String, Vec<(&'a str, String)>);

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_every_token_trick_and_path_trick() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve(data.path(), "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.toml");
    std::fs::write(&path, echo_manifest("echo", "echo.test", "1", "")).unwrap();
    deploy_ok(&host, path.to_str().unwrap(), &[]);
    let token = host.token();
    let before = host
        .admin_request(
            "GET",
            "/v1/apps",
            &[("authorization", format!("Bearer {token}"))],
            vec![],
        )
        .await;
    assert_eq!(before.status, 200);

    let strangers: Vec<Stranger> = vec![
        ("no token", "/v1/apps/echo".into(), vec![]),
        (
            "empty bearer",
            "/v1/apps/echo".into(),
            vec![("authorization", "Bearer ".into())],
        ),
        (
            "wrong token",
            "/v1/apps/echo".into(),
            vec![("authorization", "Bearer wrong".into())],
        ),
        (
            "token plus a byte",
            "/v1/apps/echo".into(),
            vec![("authorization", format!("Bearer {token}x"))],
        ),
        (
            "token less a byte",
            "/v1/apps/echo".into(),
            vec![(
                "authorization",
                format!("Bearer {}", &token[..token.len() - 1]),
            )],
        ),
        (
            "64 KiB token",
            "/v1/apps/echo".into(),
            vec![("authorization", format!("Bearer {}", "a".repeat(60 << 10)))],
        ),
        (
            "token as Basic",
            "/v1/apps/echo".into(),
            vec![("authorization", format!("Basic {token}"))],
        ),
        (
            "token without scheme",
            "/v1/apps/echo".into(),
            vec![("authorization", token.clone())],
        ),
        (
            "token in the query",
            format!("/v1/apps/echo?token={token}"),
            vec![],
        ),
        (
            "access_token in the query",
            format!("/v1/apps/echo?access_token={token}"),
            vec![],
        ),
        (
            "token in a cookie",
            "/v1/apps/echo".into(),
            vec![("cookie", format!("token={token}"))],
        ),
        (
            "token in another header",
            "/v1/apps/echo".into(),
            vec![("x-admin-token", token.clone())],
        ),
    ];
    let mut let_in = Vec::new();
    for (what, path, headers) in &strangers {
        for method in ["DELETE", "GET", "POST"] {
            let target = match (method, path.split_once('?')) {
                ("POST", Some((route, query))) => format!("{route}/rollback?{query}"),
                ("POST", None) => format!("{path}/rollback"),
                _ => path.clone(),
            };
            let reply = host
                .admin_request(method, &target, headers, b"{}".to_vec())
                .await;
            if reply.status != 401 && reply.status != 431 {
                let_in.push(format!("{what}: {method} {target} -> {}", reply.status));
            }
        }
    }
    // With the token: path tricks name no app, or the wrong route.
    let bearer = vec![("authorization", format!("Bearer {token}"))];
    for trick in [
        "/v1/apps/%2e%2e",
        "/v1/apps/..",
        "/v1/apps/echo/..",
        "/v1/apps/echo%2f..%2fother",
        "/v1/apps/ECHO",
        "/v1/apps/echo%00",
        "/V1/apps/echo",
        "//v1/apps/echo",
        "/v1//apps/echo",
        "/v1/apps/./echo",
    ] {
        let reply = host.admin_request("DELETE", trick, &bearer, vec![]).await;
        if (200..300).contains(&reply.status) {
            let_in.push(format!("DELETE {trick} -> {}", reply.status));
        }
    }
    assert!(
        let_in.is_empty(),
        "the admin API let these through: {let_in:#?}"
    );
    let after = host.admin_request("GET", "/v1/apps", &bearer, vec![]).await;
    assert_eq!(after.body, before.body, "the admin state changed");
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "1");
    // The unauthenticated pages show no token.
    for page in ["/metrics", "/dashboard.json", "/"] {
        let reply = host.admin_request("GET", page, &[], vec![]).await;
        assert!(
            !reply.text().contains(&token),
            "{page} shows the admin token"
        );
    }
    eprintln!(
        "admin API: {} stranger attempts and 10 path tricks, 0 let through",
        strangers.len() * 3
    );
}

/// The names /etc/hosts maps to a loopback address, other than `localhost`
/// (which an allow-list may name on purpose).
fn loopback_names() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('#').next()?.split_whitespace();
            let ip: std::net::IpAddr = fields.next()?.parse().ok()?;
            ip.is_loopback()
                .then(|| fields.map(str::to_string).collect::<Vec<_>>())
        })
        .flatten()
        .filter(|name| {
            !name.starts_with("localhost") && name.contains(|c: char| c.is_ascii_alphabetic())
        })
        .collect()
}

/// A guest that may reach one public-looking name and a wildcard tries the
/// host's own admin API, the loopback, private and metadata addresses by every
/// spelling, and names that resolve to loopback: nothing reaches a socket.
#[tokio::test(flavor = "multi_thread")]
async fn outbound_requests_reach_no_internal_address_by_any_spelling() {
    let (sink, sink_hits) = upstream(ok_response(2), Duration::ZERO);
    let names = loopback_names();
    let mut allowed: Vec<String> = vec![
        "https://api.example.com".into(),
        "http://*.example.net".into(),
    ];
    allowed.extend(names.iter().map(|n| format!("http://{n}:{sink}")));
    let allowed = allowed
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let host = Host::up(&[
        (
            "out",
            manifest(
                "out",
                "test-outbound",
                &format!(
                    "[outbound_http]\nallowed_hosts = [{allowed}]\n[[routes]]\nhost = \"out.test\""
                ),
            ),
        ),
        (
            "hello",
            manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
        ),
    ]);
    let admin = host.admin.port();
    let mut urls: Vec<String> = vec![
        format!("http://127.0.0.1:{admin}/v1/apps"),
        format!("http://localhost:{admin}/v1/apps"),
        format!("http://127.1:{admin}/v1/apps"),
        format!("http://0x7f000001:{admin}/v1/apps"),
        format!("http://0177.0.0.1:{admin}/v1/apps"),
        format!("http://2130706433:{admin}/v1/apps"),
        format!("http://[::1]:{admin}/v1/apps"),
        format!("http://[::ffff:7f00:1]:{admin}/v1/apps"),
        format!("http://[0:0:0:0:0:ffff:127.0.0.1]:{admin}/v1/apps"),
        format!("http://0.0.0.0:{admin}/v1/apps"),
        format!("http://127.0.0.1:{sink}/"),
        format!("http://127.0.0.1.:{sink}/"),
        format!("http://[::1]:{sink}/"),
        format!("http://0:{sink}/"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[fd00:ec2::254]/latest/meta-data/".into(),
        "http://metadata.google.internal/computeMetadata/v1/".into(),
        "http://10.0.0.1/".into(),
        "http://192.168.0.1/".into(),
        "http://172.16.0.1/".into(),
        "http://100.64.0.1/".into(),
        format!("http://api.example.com@127.0.0.1:{sink}/"),
        format!("http://127.0.0.1:{sink}#@api.example.com/"),
        format!("https://api.example.com:{sink}/"),
    ];
    urls.extend(names.iter().map(|n| format!("http://{n}:{sink}/")));
    let mut reached = Vec::new();
    for url in &urls {
        let answer = host
            .get("out.test", &format!("/fetch?url={url}"))
            .await
            .text();
        if !answer.starts_with("error=") {
            reached.push(format!("{url}: {answer}"));
        }
    }
    assert!(
        reached.is_empty(),
        "outbound requests got through: {reached:#?}"
    );
    assert_eq!(
        sink_hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the loopback sink"
    );
    assert_eq!(
        host.get("hello.test", "/").await.status,
        200,
        "the neighbour serves"
    );
    eprintln!(
        "outbound: {} spellings tried ({} via names resolving to loopback), 0 reached",
        urls.len(),
        names.len()
    );
}
