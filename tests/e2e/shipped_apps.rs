//! Hosts running the Alorig apps from their shipped manifests (`manifests/`),
//! pointed at the built components, the test PostgreSQL and Redis and stub
//! outside services. Shared by the apps' end-to-end tests and the benchmark's
//! per-app section (`host/benches/hosting/apps.rs`), so both run the same
//! deployments.

use crate::{
    harness::{Host, guest, workspace_root},
    postgres_server::PgServer,
    redis_server::RedisServer,
    stub::Stub,
};

/// Snapify (`manifests/snapify.toml`) with a stub WhatsApp Graph API.
pub mod snapify {
    use super::*;

    pub const TOKEN: &str = "snapify-test-token";
    pub const APP_SECRET: &str = "meta-app-secret";

    fn shipped(graph: &Stub) -> String {
        let text =
            std::fs::read_to_string(workspace_root().join("manifests/snapify.toml")).unwrap();
        text.replace(
            "component = \"../target/wasm32-wasip2/release/snapify.wasm\"",
            &format!("component = \"{}\"", guest("snapify").display()),
        )
        .replace(
            "allowed_hosts = [",
            &format!("allowed_hosts = [\"{}\", ", graph.origin()),
        )
        .replace(
            "GRAPH_BASE_URL = \"https://graph.facebook.com\"",
            &format!("GRAPH_BASE_URL = \"{}\"", graph.origin()),
        )
        .replace("max_connections = 10", "max_connections = 4")
    }

    pub fn host(pg: &PgServer, redis: &RedisServer, graph: &Stub) -> Host {
        let mut envs: Vec<(String, String)> = vec![("ALORIG_POSTGRES_URL".into(), pg.admin_url())];
        for key in [
            "WHATSAPP_TOKEN",
            "OPENAI_API_KEY",
            "CLOUDINARY_URL",
            "SPACES_KEY",
            "SPACES_SECRET",
            "SENDGRID_API_KEY",
            "SENTRY_DSN",
        ] {
            envs.push((format!("SNAPIFY_{key}"), format!("test-{key}")));
        }
        envs.push(("SNAPIFY_WHATSAPP_APP_SECRET".into(), APP_SECRET.into()));
        envs.push(("SNAPIFY_WHATSAPP_VERIFY_TOKEN".into(), "verify-me".into()));
        envs.push(("SNAPIFY_WHATSAPP_PHONE_NUMBER_ID".into(), "1055".into()));
        envs.push(("SNAPIFY_API_TOKEN".into(), TOKEN.into()));
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Host::up_full(
            &[("snapify", shipped(graph))],
            &format!("redis_url = \"{}\"", redis.url()),
            &envs,
        )
    }
}

/// Site Builder (`manifests/sitebuilder.toml`).
pub mod sitebuilder {
    use super::*;

    pub const TOKEN: &str = "builder-token";

    pub fn host(pg: &PgServer, redis: &RedisServer) -> Host {
        let text =
            std::fs::read_to_string(workspace_root().join("manifests/sitebuilder.toml")).unwrap();
        let text = text
            .replace(
                "component = \"../target/wasm32-wasip2/release/sitebuilder.wasm\"",
                &format!("component = \"{}\"", guest("sitebuilder").display()),
            )
            .replace("max_connections = 10", "max_connections = 4");
        let admin = pg.admin_url();
        let envs = [
            ("ALORIG_POSTGRES_URL", admin.as_str()),
            ("SITEBUILDER_OPENAI_API_KEY", "sk"),
            ("SITEBUILDER_ANTHROPIC_API_KEY", "sk"),
            ("SITEBUILDER_API_TOKEN", TOKEN),
        ];
        Host::up_full(
            &[("sitebuilder", text)],
            &format!("redis_url = \"{}\"", redis.url()),
            &envs,
        )
    }
}

/// IGNY8 (`manifests/igny8.toml`, `igny8-staging.toml`) with stub AI and WordPress servers.
pub mod igny8 {
    use super::*;

    pub const TOKEN: &str = "igny8-test-token";

    /// The shipped manifest `file`, pointed at the built component and the stubs,
    /// with a 1 s tick and a pool of `pool` connections.
    pub fn shipped(file: &str, ai: &Stub, wp: &Stub, pool: u32) -> String {
        let text = std::fs::read_to_string(workspace_root().join("manifests").join(file)).unwrap();
        let patched = text
            .replace(
                "component = \"../target/wasm32-wasip2/release/igny8.wasm\"",
                &format!("component = \"{}\"", guest("igny8").display()),
            )
            .replace(
                "allowed_hosts = [",
                &format!(
                    "allowed_hosts = [\"{}\", \"{}\", ",
                    ai.origin(),
                    wp.origin()
                ),
            )
            .replace(
                "AI_BASE_URL = \"https://api.openai.com\"",
                &format!("AI_BASE_URL = \"{}\"", ai.origin()),
            )
            .replace("every = \"1m\"", "every = \"1s\"")
            .replace("max_connections = 10", &format!("max_connections = {pool}"))
            .replace("max_connections = 5", &format!("max_connections = {pool}"));
        assert_ne!(patched, text);
        patched
    }

    pub fn envs(pg: &PgServer) -> Vec<(&'static str, String)> {
        let mut envs = vec![("ALORIG_POSTGRES_URL", pg.admin_url())];
        for twin in ["IGNY8", "IGNY8_STAGING"] {
            for (key, value) in [
                ("OPENAI_API_KEY", "sk-test"),
                ("RUNWARE_API_KEY", "rw"),
                ("STRIPE_SECRET_KEY", "sk_test"),
                ("API_TOKEN", TOKEN),
            ] {
                let name: &'static str = Box::leak(format!("{twin}_{key}").into_boxed_str());
                envs.push((
                    name,
                    if key == "OPENAI_API_KEY" {
                        format!("{value}-{}", twin.to_lowercase())
                    } else {
                        value.to_string()
                    },
                ));
            }
        }
        envs
    }

    pub fn up(manifests: &[(&str, String)], redis: &RedisServer, envs: &[(&str, String)]) -> Host {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Host::up_full(
            manifests,
            &format!("redis_url = \"{}\"", redis.url()),
            &envs,
        )
    }

    /// One host running the shipped igny8 manifest, both outside services answered by `stub`
    /// (the benchmark's; the tests start theirs with [`up`]).
    #[allow(dead_code)]
    pub fn host(pg: &PgServer, redis: &RedisServer, stub: &Stub) -> Host {
        up(
            &[("igny8", shipped("igny8.toml", stub, stub, 10))],
            redis,
            &envs(pg),
        )
    }
}
