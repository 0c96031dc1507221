//! Outbound HTTP: allowed destinations work; every other way out is refused
//! before a connection is made; slow and huge upstreams are cut at the limits.

use crate::harness::{Host, manifest};
use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// A local upstream that answers every connection with `response` (after
/// `delay`), counting the connections it accepted.
pub fn upstream(response: Vec<u8>, delay: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let response = response.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let _ = stream.write_all(&response);
            });
        }
    });
    (port, accepted)
}

pub fn ok_response(body_len: usize) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    r.extend(std::iter::repeat_n(b'x', body_len));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_destinations_work_and_every_other_way_out_is_refused() {
    let (good, good_hits) = upstream(ok_response(5), Duration::ZERO);
    let (other, other_hits) = upstream(ok_response(5), Duration::ZERO);
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{other}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (redirecting, _) = upstream(redirect.into_bytes(), Duration::ZERO);
    let allowed = format!(
        "allowed_hosts = [\"http://127.0.0.1:{good}\", \"http://127.0.0.1:{redirecting}\", \"https://api.example.com\"]"
    );
    let host = Host::up(&[
        (
            "out",
            manifest(
                "out",
                "test-outbound",
                &format!("[outbound_http]\n{allowed}\n[[routes]]\nhost = \"out.test\""),
            ),
        ),
        // This app may reach one unrelated origin and nothing else.
        (
            "none",
            manifest(
                "none",
                "test-outbound",
                "[outbound_http]\nallowed_hosts = [\"https://api.example.com\"]\n[[routes]]\nhost = \"none.test\"",
            ),
        ),
        // Importing outgoing HTTP is not a grant: with no [outbound_http] at all the
        // component loads, and every request it makes is refused at call time.
        (
            "bare",
            manifest("bare", "test-outbound", "[[routes]]\nhost = \"bare.test\""),
        ),
    ]);
    let fetch = |app: &'static str, url: String| {
        let host = &host;
        async move {
            host.get(&format!("{app}.test"), &format!("/fetch?url={url}"))
                .await
                .text()
        }
    };

    assert_eq!(
        fetch("out", format!("http://127.0.0.1:{good}/hello")).await,
        "status=200 bytes=5"
    );
    for refused in [
        format!("http://127.0.0.1:{other}/"),          // another port
        format!("http://localhost:{good}/"),           // another name for the same place
        format!("http://[::ffff:127.0.0.1]:{other}/"), // a mapped IPv6 literal
        format!("https://127.0.0.1:{good}/"),          // another scheme
        "http://api.example.com/".to_string(),         // allowed host, wrong scheme
        "http://2130706433/".to_string(),              // a decimal IP
        "http://169.254.169.254/latest/meta-data".to_string(),
    ] {
        assert_eq!(
            fetch("out", refused.clone()).await,
            "error=ErrorCode::HttpRequestDenied",
            "{refused}"
        );
    }
    assert_eq!(
        fetch("none", format!("http://127.0.0.1:{good}/")).await,
        "error=ErrorCode::HttpRequestDenied",
        "not on its list"
    );
    assert_eq!(
        fetch("bare", format!("http://127.0.0.1:{good}/")).await,
        "error=ErrorCode::HttpRequestDenied",
        "nothing granted"
    );

    // The host does not follow redirects; a guest that does is checked again.
    let url = format!("http://127.0.0.1:{redirecting}/");
    assert_eq!(fetch("out", url.clone()).await, "status=302 bytes=0");
    let followed = host
        .get("out.test", &format!("/follow?url={url}"))
        .await
        .text();
    assert_eq!(followed, "error=ErrorCode::HttpRequestDenied");

    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "no refused request may reach a socket"
    );
    assert_eq!(good_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"out\",outcome=\"denied\""
        )
        .await,
        8.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"none\",outcome=\"denied\""
        )
        .await,
        1.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"bare\",outcome=\"denied\""
        )
        .await,
        1.0
    );
    assert!(
        host.log().contains("has no [outbound_http] allowed_hosts: every outgoing request will be refused (HttpRequestDenied)"),
        "the operator is warned at load"
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            &format!("app=\"out\",destination=\"http://127.0.0.1:{good}\",outcome=\"ok\"")
        )
        .await,
        1.0
    );
    assert!(
        host.log().contains("outbound HTTP refused"),
        "the operator sees refusals"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_huge_upstreams_are_cut_at_the_apps_limits() {
    let (slow, _) = upstream(ok_response(5), Duration::from_secs(30));
    let (huge, _) = upstream(ok_response(4 << 20), Duration::ZERO);
    let config = format!(
        "[outbound_http]\nallowed_hosts = [\"http://127.0.0.1:{slow}\", \"http://127.0.0.1:{huge}\"]\ntimeout = \"1s\"\nmax_response = \"1MiB\"\n[[routes]]\nhost = \"out.test\""
    );
    let host = Host::up(&[("out", manifest("out", "test-outbound", &config))]);
    let started = std::time::Instant::now();
    let answer = host
        .get("out.test", &format!("/fetch?url=http://127.0.0.1:{slow}/"))
        .await
        .text();
    assert_eq!(answer, "error=ErrorCode::ConnectionTimeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let answer = host
        .get("out.test", &format!("/fetch?url=http://127.0.0.1:{huge}/"))
        .await
        .text();
    assert!(answer.starts_with("error=body"), "{answer}");
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", "app=\"out\"", 0.0)
            .await,
        0.0
    );
}

/// `https://*` (IGNY8 publishing to customers' WordPress): any host on that
/// scheme and port, but a name or literal that is loopback, private,
/// link-local or cloud metadata is still refused before a connection is made.
#[tokio::test(flavor = "multi_thread")]
async fn any_https_host_means_public_addresses_only() {
    let (local, local_hits) = upstream(ok_response(5), Duration::ZERO);
    let config = "[outbound_http]\nallowed_hosts = [\"https://*\"]\ntimeout = \"1s\"\n[[routes]]\nhost = \"any.test\"";
    let host = Host::up(&[("any", manifest("any", "test-outbound", config))]);
    let fetch = |url: String| {
        let host = &host;
        async move {
            host.get("any.test", &format!("/fetch?url={url}"))
                .await
                .text()
        }
    };
    for refused in [
        "https://localhost/".to_string(),
        "https://127.0.0.1/".to_string(),
        "https://10.1.2.3/".to_string(),
        "https://192.168.1.10/".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
        "https://[::1]/".to_string(),
        format!("https://127.0.0.1:{local}/"), // not the scheme's port
        format!("http://127.0.0.1:{local}/"),  // not the scheme
        "http://blog.example.com/".to_string(),
    ] {
        assert_eq!(
            fetch(refused.clone()).await,
            "error=ErrorCode::HttpRequestDenied",
            "{refused}"
        );
    }
    // A public literal passes the checks: what happens next is the network's
    // (there is none here), not a refusal.
    let public = fetch("https://192.0.43.10/".to_string()).await;
    assert_ne!(
        public, "error=ErrorCode::HttpRequestDenied",
        "a public address is allowed"
    );
    assert!(public.starts_with("error="), "{public}");
    assert_eq!(
        local_hits.load(Ordering::SeqCst),
        0,
        "nothing refused reached a socket"
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"any\",outcome=\"denied\""
        )
        .await,
        9.0
    );
    assert!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"any\",destination=\"https://*\",outcome=\"error\""
        )
        .await
            >= 1.0
    );
}
