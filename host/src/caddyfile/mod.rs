//! `alorig-host caddyfile`: the Caddyfile that puts Caddy in front of the host,
//! generated from the manifests so domains are written down once. Caddy keeps
//! TLS, compression, security headers and static files; every app route is
//! proxied to the host's ingress, which does the per-app routing itself.
//!
//! Per site (one host name), handlers are written longest path first, so a
//! prefix (`/api`, a static `/builder`) wins over `/`:
//! * app routes → `reverse_proxy` to the ingress; WebSocket routes flush at once
//!   and have no response deadline (the host pings and closes them);
//! * `[[static]]` sites → files from `root`, the prefix stripped, unknown paths
//!   falling back to `index.html` (single-page apps), and 403 for clients
//!   outside `allow_from`;
//! * `[[upstreams]]` from host.toml → `reverse_proxy` to that server.
//!
//! Caddy replaces an `X-Forwarded-For` sent by an outside client with the
//! client's address; the ingress believes it only from `trusted_proxies`.

pub mod apply;

use crate::config::{HostConfig, Manifest, host::Upstream};
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

/// How long Caddy keeps an idle connection to the host: below the host's
/// `header_read_timeout` (default 10 s, after which the host closes an idle
/// connection; `serve` warns when it is set lower). Otherwise Caddy could send a
/// request on a connection the host is closing at that moment, and its client
/// would get a 502.
pub const UPSTREAM_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything besides the manifests that shapes the Caddyfile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The ingress address Caddy proxies app routes to.
    pub upstream: String,
    /// Plain HTTP on this port instead of HTTPS (local tests, or behind a TLS balancer).
    pub http_port: Option<u16>,
    /// Caddy's admin listener, written into the file so a loaded config keeps it.
    pub caddy_admin: Option<String>,
    pub email: Option<String>,
    /// `caddy-dns` provider for wildcard certificates (see [`dns_block`]).
    pub dns_challenge: Option<String>,
    /// The host's admin listener, asked by on-demand TLS about customers' domains.
    pub ask: Option<String>,
    pub upstreams: Vec<Upstream>,
}

impl Options {
    /// The options a host config implies (upstream = its ingress, ask = its admin listener).
    pub fn from_config(config: &HostConfig) -> Self {
        Options {
            upstream: config.listen.to_string(),
            http_port: config.caddy.http_port,
            caddy_admin: config.caddy.admin.as_deref().map(admin_address),
            email: config.caddy.email.clone(),
            dns_challenge: config.caddy.dns_challenge.clone(),
            ask: Some(format!("http://{}/v1/tls/allowed", config.admin_listen)),
            upstreams: config.upstreams.clone(),
        }
    }
}

/// `http://127.0.0.1:2019` → `127.0.0.1:2019` (the form Caddy's `admin` option takes).
fn admin_address(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// What one path prefix of a site does.
#[derive(Clone, Debug)]
enum Handler {
    /// App routes: the apps' names, WebSocket or not, and the longest request timeout.
    App {
        apps: Vec<String>,
        websocket: bool,
        timeout: Duration,
    },
    Static {
        app: String,
        root: String,
        allow_from: Vec<String>,
    },
    Upstream {
        to: String,
    },
}

/// Whether an app takes customers' own domains (`[custom_domains]`, issue 16):
/// they need Caddy's on-demand TLS and a catch-all site.
pub fn wants_custom_domains(manifest: &Manifest) -> bool {
    manifest.custom_domains
}

/// Renders the Caddyfile for these apps.
pub fn render(manifests: &[Manifest], options: &Options) -> String {
    let custom_domains = manifests.iter().any(wants_custom_domains);
    render_with(manifests, options, custom_domains)
}

fn render_with(manifests: &[Manifest], options: &Options, custom_domains: bool) -> String {
    let mut sites: BTreeMap<String, BTreeMap<String, Handler>> = BTreeMap::new();
    for m in manifests {
        for route in &m.routes {
            let handlers = sites.entry(route.host.to_string()).or_default();
            let timeout = m.resources.request_timeout;
            match handlers.get_mut(&route.path) {
                Some(Handler::App {
                    apps,
                    websocket,
                    timeout: t,
                }) => {
                    apps.push(m.name.to_string());
                    *websocket |= route.websocket;
                    *t = (*t).max(timeout);
                }
                // An app route takes the path from a static site or upstream.
                _ => {
                    handlers.insert(
                        route.path.clone(),
                        Handler::App {
                            apps: vec![m.name.to_string()],
                            websocket: route.websocket,
                            timeout,
                        },
                    );
                }
            }
        }
    }
    for m in manifests {
        for site in &m.static_sites {
            let handlers = sites.entry(site.host.to_string()).or_default();
            handlers
                .entry(site.path.clone())
                .or_insert_with(|| Handler::Static {
                    app: m.name.to_string(),
                    root: site.root.display().to_string(),
                    allow_from: site.allow_from.iter().map(ToString::to_string).collect(),
                });
        }
    }
    let mut hidden: Vec<String> = Vec::new();
    for up in &options.upstreams {
        let path = if up.path == "/" {
            "/".to_string()
        } else {
            up.path.trim_end_matches('/').to_string()
        };
        let handlers = sites.entry(up.host.clone()).or_default();
        if handlers.contains_key(&path) {
            hidden.push(format!(
                "# host.toml upstream {}{path} -> {} is not used: an app serves that route",
                up.host, up.to
            ));
        }
        handlers
            .entry(path)
            .or_insert(Handler::Upstream { to: up.to.clone() });
    }

    let mut out = String::from(
        "# Generated by `alorig-host caddyfile` from the app manifests and host.toml; regenerate, don't edit.\n{\n",
    );
    if let Some(admin) = &options.caddy_admin {
        let _ = writeln!(out, "\tadmin {admin}");
    }
    if let Some(port) = options.http_port {
        let _ = writeln!(out, "\tauto_https off\n\thttp_port {port}");
    }
    if let Some(email) = &options.email {
        let _ = writeln!(out, "\temail {email}");
    }
    if custom_domains && let Some(ask) = &options.ask {
        let _ = writeln!(out, "\ton_demand_tls {{\n\t\task {ask}\n\t}}");
    }
    out.push_str("}\n");
    for line in &hidden {
        let _ = writeln!(out, "{line}");
    }

    for (host, handlers) in &sites {
        let mut names: Vec<String> = handlers
            .values()
            .flat_map(|h| match h {
                Handler::App { apps, .. } => apps.clone(),
                Handler::Static { app, .. } => vec![app.clone()],
                Handler::Upstream { to } => vec![format!("upstream {to}")],
            })
            .collect();
        names.sort();
        names.dedup();
        let address = match options.http_port {
            Some(port) => format!("http://{host}:{port}"),
            None => host.clone(),
        };
        let _ = write!(out, "\n# {}\n{address} {{\n", names.join(", "));
        if host.starts_with("*.") && options.http_port.is_none() {
            out.push_str(&dns_block(options.dns_challenge.as_deref()));
        }
        site_common(&mut out, options.http_port.is_none());
        // Longest prefix first; `/` (if any) last, as the catch-all.
        let mut ordered: Vec<(&String, &Handler)> = handlers.iter().collect();
        ordered.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (path, handler)) in ordered.iter().enumerate() {
            if path.as_str() == "/" {
                out.push_str("\thandle {\n");
            } else {
                let _ = write!(out, "\t@p{i} path {path} {path}/*\n\thandle @p{i} {{\n");
            }
            handler_body(&mut out, path, handler, &options.upstream);
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
    }

    if custom_domains {
        // Customers' own domains: any other name, with a certificate obtained on
        // demand once the host says (ask) that an app takes it.
        let address = match options.http_port {
            Some(port) => format!("http://:{port}"),
            None => "https://".to_string(),
        };
        let _ = write!(
            out,
            "\n# customers' domains ([custom_domains]); the host answers ask\n{address} {{\n"
        );
        if options.http_port.is_none() {
            out.push_str("\ttls {\n\t\ton_demand\n\t}\n");
        }
        site_common(&mut out, options.http_port.is_none());
        let (upstream, lb) = balancing(&options.upstream);
        match lb.is_empty() {
            true => {
                let _ = writeln!(out, "\treverse_proxy {upstream}");
            }
            false => {
                let lb = lb.replace("\t\t\t", "\t\t");
                let _ = write!(out, "\treverse_proxy {upstream} {{\n{lb}\t}}\n");
            }
        }
        out.push_str("}\n");
    }
    out
}

/// The TLS block of a wildcard site: certificates for `*.domain` need the ACME
/// DNS challenge, i.e. a Caddy built with the provider's plugin.
fn dns_block(provider: Option<&str>) -> String {
    match provider {
        Some(provider) => format!(
            "\t# needs a Caddy built with github.com/caddy-dns/{provider} (xcaddy build --with github.com/caddy-dns/{provider})\n\ttls {{\n\t\tdns {provider} {{env.{}_API_TOKEN}}\n\t}}\n",
            provider.to_uppercase().replace('-', "_")
        ),
        None => "\t# a wildcard certificate needs the DNS challenge: set [caddy] dns_challenge = \"cloudflare\" in host.toml\n".into(),
    }
}

/// Compression and security headers, on every site.
fn site_common(out: &mut String, tls: bool) {
    out.push_str("\tencode zstd gzip\n\theader {\n");
    if tls {
        out.push_str("\t\tStrict-Transport-Security \"max-age=31536000\"\n");
    }
    out.push_str(
        "\t\tX-Content-Type-Options nosniff\n\t\tReferrer-Policy strict-origin-when-cross-origin\n\t\tX-Frame-Options SAMEORIGIN\n\t\t-Server\n\t}\n",
    );
}

/// Several hosts (`--upstream "a:8080 b:8080"`, or commas): Caddy balances
/// them, and a request that cannot reach one (a host down or restarting) is
/// tried on another for up to 5 s. GET requests are retried even when the host
/// died with the request in flight (Caddy's default `retry_match`); others only
/// when they never reached it. A failed host is left out for 10 s.
fn balancing(upstream: &str) -> (String, &'static str) {
    let hosts: Vec<&str> = upstream
        .split([',', ' ', '\t'])
        .filter(|h| !h.is_empty())
        .collect();
    let lines = match hosts.len() {
        0 | 1 => "",
        _ => {
            "\t\t\tlb_policy round_robin\n\t\t\tlb_try_duration 5s\n\t\t\tlb_try_interval 100ms\n\t\t\tfail_duration 10s\n"
        }
    };
    (hosts.join(" "), lines)
}

fn handler_body(out: &mut String, path: &str, handler: &Handler, upstream: &str) {
    let (upstream, lb) = balancing(upstream);
    match handler {
        Handler::App {
            apps,
            websocket: true,
            ..
        } => {
            let _ = writeln!(
                out,
                "\t\t# {}: WebSocket route, held open as long as the host keeps it",
                apps.join(", ")
            );
            let _ = writeln!(
                out,
                "\t\treverse_proxy {upstream} {{\n{lb}\t\t\tflush_interval -1\n\t\t\ttransport http {{\n\t\t\t\tkeepalive {}s\n\t\t\t}}\n\t\t}}",
                UPSTREAM_KEEPALIVE.as_secs()
            );
        }
        Handler::App {
            apps,
            websocket: false,
            timeout,
        } => {
            // The host answers 504 at the app's request_timeout; Caddy gives up a little later.
            let seconds = timeout.as_secs() + 5;
            let _ = writeln!(out, "\t\t# {}", apps.join(", "));
            let _ = writeln!(
                out,
                "\t\treverse_proxy {upstream} {{\n{lb}\t\t\ttransport http {{\n\t\t\t\tdial_timeout 5s\n\t\t\t\tresponse_header_timeout {seconds}s\n\t\t\t\tkeepalive {}s\n\t\t\t}}\n\t\t}}",
                UPSTREAM_KEEPALIVE.as_secs()
            );
        }
        Handler::Static {
            app,
            root,
            allow_from,
        } => {
            let _ = writeln!(out, "\t\t# {app}: static files");
            if !allow_from.is_empty() {
                let _ = writeln!(
                    out,
                    "\t\t@refused not remote_ip {}\n\t\trespond @refused \"forbidden\" 403",
                    allow_from.join(" ")
                );
            }
            if path != "/" {
                let _ = writeln!(out, "\t\turi strip_prefix {path}");
            }
            let _ = writeln!(
                out,
                "\t\troot * {root}\n\t\ttry_files {{path}} /index.html\n\t\tfile_server"
            );
        }
        Handler::Upstream { to } => {
            let _ = writeln!(out, "\t\treverse_proxy {to}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn options(http_port: Option<u16>) -> Options {
        Options {
            upstream: "127.0.0.1:8080".into(),
            http_port,
            ..Options::default()
        }
    }

    #[test]
    fn several_upstreams_are_balanced_with_retries() {
        let m = Manifest::parse(
            Path::new("m/psydge.toml"),
            include_str!("../../tests/fixtures/contract-example.toml"),
        )
        .unwrap();
        let mut opts = options(None);
        opts.upstream = "10.0.0.1:8080, 10.0.0.2:8080".into();
        let text = render(&[m], &opts);
        assert!(
            text.contains(
                "\t\treverse_proxy 10.0.0.1:8080 10.0.0.2:8080 {\n\t\t\tlb_policy round_robin\n\t\t\tlb_try_duration 5s\n"
            ),
            "{text}"
        );
        assert_eq!(balancing("127.0.0.1:8080"), ("127.0.0.1:8080".into(), ""));
    }

    #[test]
    fn api_hosts_proxy_and_static_hosts_serve_files() {
        let m = Manifest::parse(
            Path::new("m/psydge.toml"),
            include_str!("../../tests/fixtures/contract-example.toml"),
        )
        .unwrap();
        let text = render(&[m], &options(None));
        assert!(
            text.contains("\n# psydge\napi.psydge.com {\n\tencode zstd gzip\n"),
            "{text}"
        );
        assert!(text.contains("\t\tStrict-Transport-Security"), "{text}");
        assert!(
            text.contains("\thandle {\n\t\t# psydge\n\t\treverse_proxy 127.0.0.1:8080 {\n"),
            "{text}"
        );
        assert!(text.contains("\t\t# psydge: WebSocket route"), "{text}");
        assert!(
            text.contains(
                "\t\troot * /srv/alorig/psydge/frontend\n\t\ttry_files {path} /index.html\n"
            ),
            "{text}"
        );
        assert!(!text.contains("on_demand"), "{text}");
    }

    #[test]
    fn a_shared_host_sends_app_paths_to_the_host_and_the_rest_to_files() {
        let m = Manifest::parse(
            Path::new("m/a.toml"),
            "name = \"a\"\ncomponent = \"a.wasm\"\n[[routes]]\nhost = \"a.com\"\npath = \"/api\"\n\
             [[static]]\nhost = \"a.com\"\nroot = \"/srv/a\"\n\
             [[static]]\nhost = \"a.com\"\npath = \"/builder\"\nroot = \"/srv/b\"\nallow_from = [\"203.0.113.0/24\", \"10.0.0.1\"]\n",
        )
        .unwrap();
        let text = render(&[m], &options(Some(8081)));
        assert!(text.starts_with("# Generated"));
        assert!(
            text.contains("{\n\tauto_https off\n\thttp_port 8081\n}\n"),
            "{text}"
        );
        assert!(
            !text.contains("Strict-Transport-Security"),
            "plain HTTP sends no HSTS: {text}"
        );
        let builder = text.find("path /builder /builder/*").unwrap();
        let api = text.find("path /api /api/*").unwrap();
        let fallback = text
            .find("\thandle {\n\t\t# a: static files\n\t\troot * /srv/a\n")
            .unwrap();
        assert!(
            builder < api && api < fallback,
            "longest prefix first, / last: {text}"
        );
        assert!(text.contains("@refused not remote_ip 203.0.113.0/24 10.0.0.1/32\n\t\trespond @refused \"forbidden\" 403\n\t\turi strip_prefix /builder\n"), "{text}");
    }

    #[test]
    fn wildcards_get_the_dns_challenge_and_upstreams_and_custom_domains_their_sites() {
        let m = Manifest::parse(
            Path::new("m/s.toml"),
            "name = \"s\"\ncomponent = \"s.wasm\"\n[[routes]]\nhost = \"*.sites.alorig.com\"\n",
        )
        .unwrap();
        let mut opts = options(None);
        let text = render(std::slice::from_ref(&m), &opts);
        assert!(text.contains("set [caddy] dns_challenge"), "{text}");
        opts.dns_challenge = Some("cloudflare".into());
        opts.caddy_admin = Some("127.0.0.1:2019".into());
        opts.ask = Some("http://127.0.0.1:9090/v1/tls/allowed".into());
        opts.upstreams = vec![Upstream {
            host: "cms.alorig.com".into(),
            path: "/".into(),
            to: "127.0.0.1:3000".into(),
        }];
        let text = render_with(&[m], &opts, true);
        assert!(text.contains("\tadmin 127.0.0.1:2019\n"), "{text}");
        assert!(
            text.contains(
                "*.sites.alorig.com {\n\t# needs a Caddy built with github.com/caddy-dns/cloudflare"
            ),
            "{text}"
        );
        assert!(
            text.contains("\t\tdns cloudflare {env.CLOUDFLARE_API_TOKEN}\n"),
            "{text}"
        );
        assert!(text.contains("cms.alorig.com {\n"), "{text}");
        assert!(
            text.contains("\t\treverse_proxy 127.0.0.1:3000\n"),
            "{text}"
        );
        assert!(
            text.contains("\ton_demand_tls {\n\t\task http://127.0.0.1:9090/v1/tls/allowed\n\t}\n"),
            "{text}"
        );
        assert!(
            text.contains("https:// {\n\ttls {\n\t\ton_demand\n\t}\n"),
            "{text}"
        );
    }
}
