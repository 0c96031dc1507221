//! The manifest file's shape: private `*Toml` structs that mirror it key for
//! key and reject unknown keys (`deny_unknown_fields`), so a typo fails with its
//! line. Field-level types (`ByteSize`, `HostPattern`, `CronExpression`, …)
//! validate here; `validate` turns these into the public section types.

use super::{
    AppName, ByteSize, CatchUp, CronExpression, HostPattern, HumanDuration, SecretSource,
    TimeZoneName,
};
use serde::Deserialize;
use std::{collections::BTreeMap, num::NonZeroU32, path::PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestToml {
    pub(super) name: AppName,
    pub(super) component: PathBuf,
    #[serde(default)]
    pub(super) resources: ResourcesToml,
    #[serde(default)]
    pub(super) routes: Vec<RouteToml>,
    #[serde(rename = "static", default)]
    pub(super) static_sites: OneOrMany<StaticToml>,
    pub(super) custom_domains: Option<CustomDomainsToml>,
    pub(super) postgres: Option<PostgresToml>,
    pub(super) redis: Option<RedisToml>,
    pub(super) outbound_http: Option<OutboundToml>,
    pub(super) websocket: Option<WebSocketToml>,
    #[serde(default)]
    pub(super) timers: Vec<TimerToml>,
    #[serde(default)]
    pub(super) jobs: JobsToml,
    pub(super) files: Option<FilesToml>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, SecretSource>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ResourcesToml {
    pub(super) memory: Option<ByteSize>,
    pub(super) instance_memory: Option<ByteSize>,
    pub(super) max_concurrency: Option<NonZeroU32>,
    pub(super) request_timeout: Option<HumanDuration>,
    pub(super) max_body: Option<ByteSize>,
    pub(super) instance_reuse: Option<NonZeroU32>,
    pub(super) cpu_weight: Option<NonZeroU32>,
    pub(super) cpu_time: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteToml {
    pub(super) host: HostPattern,
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) websocket: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StaticToml {
    pub(super) host: HostPattern,
    pub(super) path: Option<String>,
    pub(super) root: PathBuf,
    #[serde(default)]
    pub(super) allow_from: Vec<Cidr>,
}

/// An address block like `203.0.113.0/24`; a bare address means just that one.
pub(super) struct Cidr(pub(super) ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(Cidr)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an address block like \"203.0.113.0/24\" or an address"
                ))
            })
    }
}

/// A table or an array of tables (`[static]` or `[[static]]`), with the inner
/// table's own errors (and their lines) kept.
pub(super) struct OneOrMany<T>(pub(super) Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany)
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomDomainsToml {
    pub(super) enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PostgresToml {
    pub(super) database: String,
    pub(super) max_connections: Option<NonZeroU32>,
    pub(super) statement_timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisToml {
    pub(super) db: u8,
    pub(super) prefix: String,
    #[serde(default)]
    pub(super) channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboundToml {
    #[serde(default)]
    pub(super) allowed_hosts: Vec<String>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_concurrency: Option<NonZeroU32>,
    pub(super) max_response: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebSocketToml {
    pub(super) max_connections: Option<NonZeroU32>,
    pub(super) max_connections_per: Option<super::sections::LimitScope>,
    pub(super) max_message: Option<ByteSize>,
    pub(super) ping_interval: Option<HumanDuration>,
    pub(super) send_queue: Option<NonZeroU32>,
    pub(super) send_timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimerToml {
    pub(super) name: String,
    pub(super) cron: Option<CronExpression>,
    pub(super) timezone: Option<TimeZoneName>,
    pub(super) every: Option<HumanDuration>,
    #[serde(default)]
    pub(super) catch_up: CatchUp,
    pub(super) timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilesToml {
    pub(super) quota: ByteSize,
    #[serde(default)]
    pub(super) read_only: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct JobsToml {
    pub(super) max_attempts: Option<NonZeroU32>,
    pub(super) backoff: Option<HumanDuration>,
    pub(super) max_backoff: Option<HumanDuration>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_pending: Option<NonZeroU32>,
}
