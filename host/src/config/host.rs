//! The operator's host configuration (`host.toml`, every key optional), with the
//! `ALORIG_*` environment overrides that `serve` and `up` share.

use super::{ByteSize, HumanDuration, toml_error};
use anyhow::{Context as _, Result};
use serde::Deserialize;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Ingress: where Caddy (or a developer's curl) sends app traffic.
    pub listen: SocketAddr,
    /// Admin API and `/metrics`.
    pub admin_listen: SocketAddr,
    /// Deployed versions, the compile cache and the admin token.
    pub data_dir: PathBuf,
    /// The sum of the apps' memory caps must fit in this.
    pub memory_budget: ByteSize,
    pub postgres_url: Option<String>,
    /// The most PostgreSQL connections all apps' pools may hold together
    /// (default: 80% of the server's `max_connections` less its reserved ones).
    pub postgres_max_connections: Option<u32>,
    pub redis_url: Option<String>,
    pub admin_token: Option<String>,
    /// A client must send a request's headers within this time.
    pub header_read_timeout: Duration,
    /// A client that reads none of its response for this long loses its connection.
    pub write_timeout: Duration,
    /// Live instances across all apps: sizes the pooling allocator.
    pub max_instances: u32,
    /// Versions kept on disk per app for rollback (the current one included).
    pub keep_versions: u32,
    /// Largest deploy upload (manifest + component); past it the admin API answers 413.
    pub max_upload: ByteSize,
    /// Peers (Caddy) whose `X-Forwarded-For`/`-Proto` the ingress believes; from
    /// anyone else they are replaced by the peer's own address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Other servers Caddy fronts beside the host (e.g. Payload CMS on Node).
    pub upstreams: Vec<Upstream>,
    pub caddy: CaddyConfig,
    /// This host's name among the hosts sharing `postgres_url` (default: the
    /// machine's host name): its heartbeat row, `status --cluster`.
    pub node_name: String,
    /// Where this host's ingress answers, as other hosts and operators see it
    /// (default: the bound `listen` address).
    pub node_address: Option<String>,
    /// Seals the apps' database passwords shared through PostgreSQL (32 bytes,
    /// 64 hex characters, the same on every host). Without it, each password
    /// stays in this host's data dir.
    pub cluster_key: Option<ClusterKey>,
}

/// The cluster key (`cluster_key`, `ALORIG_CLUSTER_KEY`): never printed.
#[derive(Clone)]
pub struct ClusterKey(pub [u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

impl std::str::FromStr for ClusterKey {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
        let bytes = bytes.ok_or_else(|| {
            anyhow::anyhow!(
                "cluster_key/ALORIG_CLUSTER_KEY: not 64 hex characters (make one with `openssl rand -hex 32`)"
            )
        })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }
}

/// The machine's host name, or `localhost` when it cannot be read.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `[[upstreams]]`: a host (and optional path prefix) Caddy proxies elsewhere.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub host: String,
    #[serde(default = "root_path")]
    pub path: String,
    /// `address:port` of the server.
    pub to: String,
}

fn root_path() -> String {
    "/".into()
}

/// `[caddy]`: how the generated Caddyfile reaches Caddy, and its TLS options.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaddyConfig {
    /// Caddy's admin API (`caddyfile --apply`, and deploys with `apply_on_deploy`).
    pub admin: Option<String>,
    /// Deploy, rollback and remove load the new Caddyfile when the routes change.
    #[serde(default)]
    pub apply_on_deploy: bool,
    /// The ACME account email.
    pub email: Option<String>,
    /// A `caddy-dns` provider for wildcard certificates (`"cloudflare"`): needs a
    /// Caddy built with that plugin (`xcaddy build --with github.com/caddy-dns/cloudflare`).
    pub dns_challenge: Option<String>,
    /// Plain HTTP on this port instead of HTTPS (behind a TLS-terminating balancer, or tests).
    pub http_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostToml {
    listen: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<PathBuf>,
    memory_budget: Option<ByteSize>,
    postgres_url: Option<String>,
    postgres_max_connections: Option<u32>,
    redis_url: Option<String>,
    admin_token: Option<String>,
    header_read_timeout: Option<HumanDuration>,
    write_timeout: Option<HumanDuration>,
    max_instances: Option<u32>,
    keep_versions: Option<u32>,
    max_upload: Option<ByteSize>,
    trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    upstreams: Vec<Upstream>,
    #[serde(default)]
    caddy: CaddyConfig,
    node_name: Option<String>,
    node_address: Option<String>,
    cluster_key: Option<String>,
}

const DEFAULT_CONFIG_PATH: &str = "host.toml";

impl HostConfig {
    /// Reads `path` (or `./host.toml` when it exists), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let raw = match path {
            Some(path) => read(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => HostToml::default(),
        };
        Self::from_toml(raw, |key| std::env::var(key).ok())
    }

    /// Parses host.toml text without environment overrides (the fuzz target's
    /// entry; `load` reads the file and applies the environment).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: HostToml = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        Self::from_toml(raw, |_| None)
    }

    fn from_toml(raw: HostToml, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let pick = |key: &str, value: Option<String>| env(key).or(value);
        let addr = |key: &str, value: Option<String>, default: &str| -> Result<SocketAddr> {
            let text = pick(key, value).unwrap_or_else(|| default.to_string());
            text.parse().with_context(|| {
                format!("{key}/host.toml: {text:?} is not an address like 127.0.0.1:8080")
            })
        };
        let max_instances = raw.max_instances.unwrap_or(1000);
        anyhow::ensure!(
            (1..=100_000).contains(&max_instances),
            "host.toml: max_instances must be between 1 and 100000, not {max_instances}"
        );
        let header_read_timeout = raw
            .header_read_timeout
            .map_or(Duration::from_secs(10), |d| d.0);
        let write_timeout = raw
            .write_timeout
            .map_or(crate::ingress::DEFAULT_WRITE_TIMEOUT, |d| d.0);
        for (key, value) in [
            ("header_read_timeout", header_read_timeout),
            ("write_timeout", write_timeout),
        ] {
            anyhow::ensure!(
                value >= Duration::from_millis(100) && value <= Duration::from_secs(3600),
                "host.toml: {key} must be between 100ms and 1h"
            );
        }
        let keep_versions = raw.keep_versions.unwrap_or(10);
        anyhow::ensure!(
            keep_versions >= 1,
            "host.toml: keep_versions must be at least 1"
        );
        let mut trusted_proxies = Vec::new();
        for text in raw.trusted_proxies.unwrap_or_default() {
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| anyhow::anyhow!("host.toml: trusted_proxies: {text:?} is not an address or address block like \"127.0.0.1\""))?;
            trusted_proxies.push(net);
        }
        for (i, up) in raw.upstreams.iter().enumerate() {
            anyhow::ensure!(
                up.to.parse::<SocketAddr>().is_ok()
                    || up
                        .to
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                "host.toml: upstreams[{i}].to: {:?} is not an address like 127.0.0.1:3000",
                up.to
            );
            let clean = |t: &str| {
                !t.is_empty()
                    && !t.contains(|c: char| {
                        "{}\"'#".contains(c) || c.is_whitespace() || c.is_control()
                    })
            };
            anyhow::ensure!(
                clean(&up.host),
                "host.toml: upstreams[{i}].host: {:?} is not a host name",
                up.host
            );
            anyhow::ensure!(
                up.path.starts_with('/') && clean(&up.path),
                "host.toml: upstreams[{i}].path: {:?} must be a path starting with /",
                up.path
            );
        }
        let node_name = pick("ALORIG_NODE_NAME", raw.node_name).unwrap_or_else(machine_name);
        anyhow::ensure!(
            (1..=63).contains(&node_name.len())
                && node_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "node_name/ALORIG_NODE_NAME: {node_name:?} must be 1 to 63 letters, digits, '-', '_' or '.'"
        );
        let cluster_key = pick("ALORIG_CLUSTER_KEY", raw.cluster_key)
            .map(|k| k.parse::<ClusterKey>())
            .transpose()?;
        Ok(HostConfig {
            node_name,
            node_address: pick("ALORIG_NODE_ADDRESS", raw.node_address),
            cluster_key,
            trusted_proxies,
            upstreams: raw.upstreams,
            caddy: raw.caddy,
            keep_versions,
            max_upload: raw.max_upload.unwrap_or(ByteSize::mib(256)),
            listen: addr("ALORIG_LISTEN", raw.listen, "127.0.0.1:8080")?,
            admin_listen: addr("ALORIG_ADMIN_LISTEN", raw.admin_listen, "127.0.0.1:9090")?,
            data_dir: env("ALORIG_DATA_DIR")
                .map(PathBuf::from)
                .or(raw.data_dir)
                .unwrap_or_else(|| PathBuf::from(".alorig")),
            memory_budget: raw.memory_budget.unwrap_or(ByteSize::gib(12)),
            postgres_url: pick("ALORIG_POSTGRES_URL", raw.postgres_url),
            postgres_max_connections: raw.postgres_max_connections,
            redis_url: pick("ALORIG_REDIS_URL", raw.redis_url),
            admin_token: pick("ALORIG_ADMIN_TOKEN", raw.admin_token),
            header_read_timeout,
            write_timeout,
            max_instances,
        })
    }
}

fn read(path: &Path) -> Result<HostToml> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read host config {}", path.display()))?;
    toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = HostConfig::from_toml(HostToml::default(), |_| None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.data_dir, PathBuf::from(".alorig"));
        assert_eq!(config.memory_budget, ByteSize::gib(12));
    }

    #[test]
    fn environment_overrides_the_file() {
        let raw: HostToml = toml::from_str("listen = \"127.0.0.1:1\"\ndata_dir = \"/a\"").unwrap();
        let config = HostConfig::from_toml(raw, |key| match key {
            "ALORIG_LISTEN" => Some("127.0.0.1:2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.data_dir, PathBuf::from("/a"));
    }

    #[test]
    fn node_name_and_cluster_key_are_checked_and_the_key_never_printed() {
        let raw: HostToml = toml::from_str("node_name = \"vps-1\"").unwrap();
        let key = "ab".repeat(32);
        let config =
            HostConfig::from_toml(raw, |k| (k == "ALORIG_CLUSTER_KEY").then(|| key.clone()))
                .unwrap();
        assert_eq!(config.node_name, "vps-1");
        assert_eq!(config.cluster_key.as_ref().unwrap().0, [0xab; 32]);
        assert!(!format!("{config:?}").contains(&key));
        let raw: HostToml = toml::from_str("cluster_key = \"abc\"").unwrap();
        let err = HostConfig::from_toml(raw, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster_key/ALORIG_CLUSTER_KEY: not 64 hex characters"),
            "{err}"
        );
        let raw: HostToml = toml::from_str("node_name = \"a b\"").unwrap();
        let err = HostConfig::from_toml(raw, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("node_name/ALORIG_NODE_NAME: \"a b\""),
            "{err}"
        );
        let config = HostConfig::from_toml(HostToml::default(), |_| None).unwrap();
        assert!(!config.node_name.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:8080\"\nmemroy_budget = \"1GiB\"\n",
        )
        .unwrap();
        let err = HostConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("host.toml:2: unknown field `memroy_budget`"),
            "{err}"
        );
        std::fs::write(&path, "memory_budget = \"12GB\"\n").unwrap();
        let err = HostConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("host.toml:1:") && err.contains("unknown size unit"),
            "{err}"
        );
    }
}
