//! The pure part of an admin request: which route its method and path name,
//! whether its bearer token is the host's, and what a rollback body asks for.
//! Nothing here reads a body or touches the apps, so the `admin_api` fuzz
//! target (`fuzz/`) drives exactly the code [`super::Admin`] runs.
//!
//! The path is the request target's path as sent (not percent-decoded): an app
//! name is one `/`-separated segment, checked later like any other name, so
//! `%2e%2e` or `..` is a name that does not exist, never a way to another route.

use crate::deploy::ApiError;
use http::{HeaderMap, Method};
use serde_json::{Value, json};

/// What a method and path ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /healthz`. This and the next four need no token (module doc of [`super`]).
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /`, the dashboard page.
    Dashboard,
    /// `GET /dashboard.json`.
    DashboardFigures,
    /// `GET /v1/tls/allowed?domain=`, Caddy's on-demand TLS question.
    TlsAllowed,
    /// Anything else outside `/v1/`: 404, without asking for a token.
    NotFound,
    /// Under `/v1/`: answered only with the token.
    Api(Api<'a>),
}

/// A `/v1/` route; the `&str` is the app name, one path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api<'a> {
    /// `GET /v1/apps`.
    ListApps,
    /// `GET /v1/cluster`.
    Cluster,
    /// `GET /v1/apps/{app}`.
    App(&'a str),
    /// `PUT /v1/apps/{app}`.
    Deploy(&'a str),
    /// `POST /v1/apps/{app}/rollback`.
    Rollback(&'a str),
    /// `GET /v1/apps/{app}/jobs`.
    Jobs(&'a str),
    /// `GET /v1/apps/{app}/logs`.
    Logs(&'a str),
    /// `DELETE /v1/apps/{app}`.
    Remove(&'a str),
    /// A `/v1/apps…` path with a method it does not take: 405.
    MethodNotAllowed,
    /// 404.
    NotFound,
}

impl Api<'_> {
    /// Whether the route changes which versions are in force (and so Caddy's routes).
    pub fn changes_routes(&self) -> bool {
        matches!(self, Api::Deploy(_) | Api::Rollback(_) | Api::Remove(_))
    }
}

/// The route of `method` on `path`.
pub fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    if method == Method::GET {
        match path {
            "/healthz" => return Route::Healthz,
            "/metrics" => return Route::Metrics,
            "/" => return Route::Dashboard,
            "/dashboard.json" => return Route::DashboardFigures,
            "/v1/tls/allowed" => return Route::TlsAllowed,
            _ => {}
        }
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Route::NotFound;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    Route::Api(match (method.clone(), segments.as_slice()) {
        (Method::GET, ["apps"]) => Api::ListApps,
        (Method::GET, ["cluster"]) => Api::Cluster,
        (Method::GET, ["apps", app]) => Api::App(app),
        (Method::PUT, ["apps", app]) => Api::Deploy(app),
        (Method::POST, ["apps", app, "rollback"]) => Api::Rollback(app),
        (Method::GET, ["apps", app, "jobs"]) => Api::Jobs(app),
        (Method::GET, ["apps", app, "logs"]) => Api::Logs(app),
        (Method::DELETE, ["apps", app]) => Api::Remove(app),
        (_, ["apps"] | ["apps", _] | ["apps", _, "rollback" | "jobs" | "logs"]) => {
            Api::MethodNotAllowed
        }
        _ => Api::NotFound,
    })
}

/// `Authorization: Bearer <token>` (the first such header), compared in
/// constant time; never true for an empty host token.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    !token.is_empty() && same_secret(given.as_bytes(), token.as_bytes())
}

/// Same length and same bytes, in time that depends only on the length.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A small JSON body (already read whole): empty or whitespace is `{}`.
pub fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "bad_request", format!("the body is not JSON: {e}")))
}

/// The body of `POST /v1/apps/{app}/rollback` as read: see [`rollback_target`].
pub fn rollback_body(body: &[u8]) -> Result<Option<u32>, ApiError> {
    rollback_target(&json_body(body)?)
}

/// The body of `POST /v1/apps/{app}/rollback`: `{}` (the version before) or
/// `{"to": N}` with N a version number; anything else is a 400, never a guess.
pub fn rollback_target(body: &Value) -> Result<Option<u32>, ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            400,
            "bad_request",
            format!("rollback body: {why}; expected {{}} or {{\"to\": <version>}}"),
        )
    };
    let Some(object) = body.as_object() else {
        return Err(bad("not a JSON object"));
    };
    if let Some(key) = object.keys().find(|k| k.as_str() != "to") {
        return Err(bad(&format!("unknown field {key:?}")));
    }
    match object.get("to") {
        None => Ok(None),
        Some(to) => match to.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(version) => Ok(Some(version)),
            None => Err(bad(&format!(
                "\"to\" is {to}, not a version number (0 to {})",
                u32::MAX
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_target_is_a_version_number_or_nothing() {
        assert_eq!(rollback_target(&json!({})).unwrap(), None);
        assert_eq!(rollback_target(&json!({"to": 3})).unwrap(), Some(3));
        assert_eq!(
            rollback_target(&json!({"to": 4294967295u64})).unwrap(),
            Some(u32::MAX)
        );
        for bad in [
            json!({"to": 4294967297u64}),
            json!({"to": -1}),
            json!({"to": "1"}),
            json!({"to": 1.5}),
            json!([1, 2]),
            json!({"too": 3}),
            json!(null),
            json!({"to": null}),
        ] {
            assert_eq!(rollback_target(&bad).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(rollback_body(b" \n").unwrap(), None);
        assert_eq!(rollback_body(br#"{"to": 7}"#).unwrap(), Some(7));
        assert_eq!(rollback_body(b"{").unwrap_err().status, 400);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, ""), "an empty token opens nothing");
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(!authorized(&headers, ""));
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(authorized(&headers, "abc") && !authorized(&headers, "abd"));
    }

    #[test]
    fn routes_name_one_app_segment_and_only_five_pages_skip_the_token() {
        let get = Method::GET;
        assert_eq!(route(&get, "/healthz"), Route::Healthz);
        assert_eq!(route(&Method::POST, "/healthz"), Route::NotFound);
        assert_eq!(route(&get, "/v1/apps/a"), Route::Api(Api::App("a")));
        assert_eq!(
            route(&Method::PUT, "/v1/apps/%2e%2e"),
            Route::Api(Api::Deploy("%2e%2e"))
        );
        assert_eq!(
            route(&Method::PUT, "/v1/apps/a/../b"),
            Route::Api(Api::NotFound)
        );
        assert_eq!(
            route(&Method::PATCH, "/v1/apps/a"),
            Route::Api(Api::MethodNotAllowed)
        );
        assert_eq!(
            route(&Method::POST, "/v1/tls/allowed"),
            Route::Api(Api::NotFound)
        );
    }
}
