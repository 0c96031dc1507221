//! The manifests in `manifests/` (the seven apps of the seeds, IGNY8 with its
//! staging twin) are valid and fit together on one host: memory caps inside the
//! host budget, no two apps on one route, one Redis DB, prefix and database each.

use alorig_host::{caddyfile, config::{ByteSize, Manifest}, deploy::check_budget};
use std::collections::HashSet;

/// The seeds' deployments; the other manifests are reference and demo apps.
const SEED_APPS: [&str; 8] = ["igny8", "igny8-staging", "psydge", "snapify", "sitebuilder", "observer", "astrotiming", "asms"];

fn seed_manifests() -> Vec<Manifest> {
    let dir = crate::harness::workspace_root().join("manifests");
    let mut manifests: Vec<Manifest> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_stem().is_some_and(|stem| SEED_APPS.contains(&stem.to_str().unwrap())))
        .map(|p| Manifest::load(&p).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    manifests.sort_by(|a, b| a.name.cmp(&b.name));
    manifests
}

#[test]
fn the_seed_apps_fit_on_one_host_without_sharing_anything() {
    let manifests = seed_manifests();
    assert_eq!(manifests.len(), 8, "seven apps, IGNY8 with its staging twin");
    let total: u64 = manifests.iter().map(|m| m.resources.memory.bytes()).sum();
    assert_eq!(ByteSize(total).to_string(), "7200MiB", "the seeds' per-app RAM table");
    check_budget(ByteSize::gib(12), &manifests).unwrap();

    let mut routes = HashSet::new();
    let mut dbs = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut databases = HashSet::new();
    for m in &manifests {
        for r in &m.routes {
            assert!(routes.insert((r.host.to_string(), r.path.clone())), "{} reuses {}{}", m.name, r.host, r.path);
        }
        let redis = m.redis.as_ref().unwrap();
        assert!(dbs.insert(redis.db), "{} reuses Redis DB {}", m.name, redis.db);
        assert!(prefixes.insert(redis.prefix.clone()));
        assert!(databases.insert(m.postgres.as_ref().unwrap().database.clone()));
    }
    assert_eq!(dbs.len(), 8);

    let options = caddyfile::Options { upstream: "127.0.0.1:8080".into(), ..Default::default() };
    let caddy = caddyfile::render(&manifests, &options);
    for host in ["api.psydge.com", "ws.psydge.com", "psydge.com", "snapify.pk", "*.sites.alorig.com", "schools.alorig.com"] {
        assert!(caddy.contains(&format!("\n{host} {{\n")), "{host} missing from:\n{caddy}");
    }
}
