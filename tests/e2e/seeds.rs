//! The manifests in `manifests/` (the seven apps of the seeds, IGNY8 with its
//! staging twin) are valid and fit together on one host: memory caps inside the
//! host budget, no two apps on one route, one Redis DB, prefix and database each.

use alorig_host::{
    caddyfile,
    config::{ByteSize, Manifest},
    deploy::check_budget,
};
use std::collections::HashSet;

/// The seeds' deployments; the other manifests are reference and demo apps.
const SEED_APPS: [&str; 8] = [
    "igny8",
    "igny8-staging",
    "psydge",
    "snapify",
    "sitebuilder",
    "observer",
    "astrotiming",
    "asms",
];

fn seed_manifests() -> Vec<Manifest> {
    let dir = crate::harness::workspace_root().join("manifests");
    let mut manifests: Vec<Manifest> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_stem()
                .is_some_and(|stem| SEED_APPS.contains(&stem.to_str().unwrap()))
        })
        .map(|p| Manifest::load(&p).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    manifests.sort_by(|a, b| a.name.cmp(&b.name));
    manifests
}

#[test]
fn the_seed_apps_fit_on_one_host_without_sharing_anything() {
    let manifests = seed_manifests();
    assert_eq!(
        manifests.len(),
        8,
        "seven apps, IGNY8 with its staging twin"
    );
    let total: u64 = manifests.iter().map(|m| m.resources.memory.bytes()).sum();
    assert_eq!(
        ByteSize(total).to_string(),
        "7200MiB",
        "the seeds' per-app RAM table"
    );
    check_budget(ByteSize::gib(12), &manifests).unwrap();

    let mut routes = HashSet::new();
    let mut dbs = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut databases = HashSet::new();
    for m in &manifests {
        for r in &m.routes {
            assert!(
                routes.insert((r.host.to_string(), r.path.clone())),
                "{} reuses {}{}",
                m.name,
                r.host,
                r.path
            );
        }
        let redis = m.redis.as_ref().unwrap();
        assert!(
            dbs.insert(redis.db),
            "{} reuses Redis DB {}",
            m.name,
            redis.db
        );
        assert!(prefixes.insert(redis.prefix.clone()));
        assert!(databases.insert(m.postgres.as_ref().unwrap().database.clone()));
    }
    assert_eq!(dbs.len(), 8);

    let options = caddyfile::Options {
        upstream: "127.0.0.1:8080".into(),
        ..Default::default()
    };
    let caddy = caddyfile::render(&manifests, &options);
    for host in [
        "api.psydge.com",
        "ws.psydge.com",
        "psydge.com",
        "snapify.pk",
        "*.sites.alorig.com",
        "schools.alorig.com",
    ] {
        assert!(
            caddy.contains(&format!("\n{host} {{\n")),
            "{host} missing from:\n{caddy}"
        );
    }
}

/// `alorig-host validate` passes on every manifest in `manifests/`, each with the
/// component it names (built from source). Nothing is skipped: a manifest whose
/// component does not exist yet fails here with validate's own message.
#[test]
fn validate_passes_on_every_shipped_manifest() {
    crate::harness::guest("igny8"); // builds every guest under components/
    let dir = crate::harness::workspace_root().join("manifests");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "{paths:?}");
    let mut failures = Vec::new();
    for path in &paths {
        let data = tempfile::tempdir().unwrap();
        // Secrets are resolved at load: give each declared variable a value.
        let secrets: Vec<String> = Manifest::load(path)
            .map(|m| m.secrets.values().map(|s| s.env.clone()).collect())
            .unwrap_or_default();
        let out = std::process::Command::new(crate::harness::host_binary())
            .args(["validate", path.to_str().unwrap()])
            .envs(secrets.iter().map(|name| (name.as_str(), "x")))
            .env("ALORIG_DATA_DIR", data.path())
            // Offline: a [redis] app needs a configured URL, not a server.
            .env("ALORIG_REDIS_URL", "redis://127.0.0.1:1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(": ok — app ") {
            failures.push(format!(
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "validate failed on {} of {} manifests:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}
