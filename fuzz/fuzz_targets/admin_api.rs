//! F5: the admin API's request handling: the route a method and path name, the
//! bearer-token check and the rollback body. Oracle: no panic; only the five
//! read-only pages skip the token (and only for GET on their exact path);
//! every other `/v1/` path is an API route; an app name is exactly the one path
//! segment it came from; only PUT, POST and DELETE reach a route that changes
//! state; the token opens only when the first `Authorization` header carries
//! exactly it; a rollback body is `{}`/blank or `{"to": N}` with N a u32.
#![no_main]

use alorig_host::admin::request::{self, Api, Route};
use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: u8,
    custom_method: &'a str,
    path: &'a str,
    token: &'a str,
    authorization: Vec<&'a [u8]>,
    body: &'a [u8],
}

const METHODS: &[Method] = &[
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::HEAD,
    Method::PATCH,
    Method::OPTIONS,
];

fuzz_target!(|input: Input<'_>| {
    let method = match METHODS.get(input.method as usize % (METHODS.len() + 1)) {
        Some(m) => m.clone(),
        None => match Method::from_bytes(input.custom_method.as_bytes()) {
            Ok(m) => m,
            Err(_) => Method::GET,
        },
    };
    check_route(&method, input.path);
    // Through the URI parser too, as hyper hands the path over.
    if let Ok(uri) = input.path.parse::<http::Uri>() {
        check_route(&method, uri.path());
    }
    check_token(input.token, &input.authorization);
    check_rollback(input.body);
});

fn check_route(method: &Method, path: &str) {
    let route = request::route(method, path);
    let open = [
        (Route::Healthz, "/healthz"),
        (Route::Metrics, "/metrics"),
        (Route::Dashboard, "/"),
        (Route::DashboardFigures, "/dashboard.json"),
        (Route::TlsAllowed, "/v1/tls/allowed"),
    ];
    match route {
        Route::Api(api) => {
            assert!(path.starts_with("/v1/"), "{path:?}");
            assert!(!(method == Method::GET && path == "/v1/tls/allowed"));
            let segments: Vec<&str> = path["/v1/".len()..].split('/').collect();
            let app = match api {
                Api::App(a) | Api::Jobs(a) | Api::Logs(a) => {
                    assert_eq!(*method, Method::GET);
                    Some(a)
                }
                Api::Deploy(a) => {
                    assert_eq!(*method, Method::PUT);
                    Some(a)
                }
                Api::Rollback(a) => {
                    assert_eq!(*method, Method::POST);
                    assert_eq!(segments.len(), 3);
                    assert_eq!(segments[2], "rollback");
                    Some(a)
                }
                Api::Remove(a) => {
                    assert_eq!(*method, Method::DELETE);
                    Some(a)
                }
                Api::ListApps => {
                    assert_eq!(path, "/v1/apps");
                    None
                }
                Api::Cluster => {
                    assert_eq!(path, "/v1/cluster");
                    None
                }
                Api::MethodNotAllowed | Api::NotFound => None,
            };
            if let Some(app) = app {
                assert_eq!(segments[0], "apps");
                assert_eq!(segments[1], app, "{path:?}");
                assert!(!app.contains('/'));
                assert!((2..=3).contains(&segments.len()));
            }
            assert_eq!(
                api.changes_routes(),
                matches!(api, Api::Deploy(_) | Api::Rollback(_) | Api::Remove(_))
            );
            if api.changes_routes() {
                assert!([Method::PUT, Method::POST, Method::DELETE].contains(method));
            }
        }
        Route::NotFound => assert!(!path.starts_with("/v1/")),
        page => {
            let (_, exact) = open.iter().find(|(r, _)| *r == page).expect("an open page");
            assert_eq!(*method, Method::GET);
            assert_eq!(path, *exact);
        }
    }
}

fn check_token(token: &str, authorization: &[&[u8]]) {
    let mut headers = HeaderMap::new();
    for value in authorization.iter().take(3) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(http::header::AUTHORIZATION, value);
        }
    }
    let opened = request::authorized(&headers, token);
    let first = headers.get(http::header::AUTHORIZATION);
    let expected = !token.is_empty()
        && first
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| given.trim() == token);
    assert_eq!(opened, expected, "{token:?} {first:?}");
    if opened {
        // Nothing but the token's own bytes (give or take surrounding blanks) opens.
        let value = first.unwrap().as_bytes();
        assert!(value.windows(token.len()).any(|w| w == token.as_bytes()));
    }
}

fn check_rollback(body: &[u8]) {
    let Ok(to) = request::rollback_body(body) else {
        return;
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(to, None);
        return;
    }
    let value: serde_json::Value = serde_json::from_slice(body).expect("accepted bodies are JSON");
    let object = value.as_object().expect("accepted bodies are objects");
    match to {
        None => assert!(object.is_empty(), "{value}"),
        Some(n) => {
            assert_eq!(object.len(), 1);
            assert_eq!(object["to"].as_u64(), Some(u64::from(n)));
        }
    }
}
