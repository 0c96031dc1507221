//! What an app version may reach, and what a new version may reach that the live
//! one could not. A deploy that widens grants needs the operator's approval
//! (`deploy --yes`, the API's `approve_grants=true`): a new outbound host, route,
//! database, a larger memory cap or files quota, or a files directory made
//! writable is a decision, not a side effect of a build.

use crate::{app::App, capabilities, config::Manifest};

/// Everything `app` may reach, one line each.
pub fn all(app: &App) -> Vec<String> {
    let mut grants: Vec<String> = app.imports.iter().map(|i| format!("import {i}")).collect();
    grants.extend(manifest_grants(&app.manifest));
    grants
}

fn manifest_grants(m: &Manifest) -> Vec<String> {
    let mut grants = Vec::new();
    grants.extend(
        m.routes
            .iter()
            .map(|r| format!("route {}{}", r.host, r.path)),
    );
    // What each capability's section grants (outbound origins, database, Redis prefix).
    grants.extend(capabilities::grants(m).into_iter().map(|g| g.text));
    grants.extend(m.secrets.keys().map(|k| format!("secret {k}")));
    grants.push(format!("memory cap {}", m.resources.memory));
    grants
}

/// An import's name without its version: `wasi:http/outgoing-handler`.
fn unversioned(import: &str) -> &str {
    import.split('@').next().unwrap_or(import)
}

/// What `new` may reach that `old` may not.
pub fn widened(old: &App, new: &App) -> Vec<String> {
    widened_between((&old.imports, &old.manifest), (&new.imports, &new.manifest))
}

/// [`widened`] on an app's imports and manifest.
fn widened_between(
    (old_imports, o): (&[String], &Manifest),
    (new_imports, n): (&[String], &Manifest),
) -> Vec<String> {
    let mut added = Vec::new();
    for import in new_imports {
        if !old_imports
            .iter()
            .any(|i| unversioned(i) == unversioned(import))
        {
            added.push(format!("new import {import}"));
        }
    }
    for route in &n.routes {
        if !o
            .routes
            .iter()
            .any(|r| r.host == route.host && r.path == route.path)
        {
            added.push(format!("new route {}{}", route.host, route.path));
        }
    }
    let old_grants = capabilities::grants(o);
    for grant in capabilities::grants(n) {
        if !old_grants.iter().any(|g| grant.covered_by(g)) {
            added.push(grant.text);
        }
    }
    for key in n.secrets.keys() {
        if !o.secrets.contains_key(key) {
            added.push(format!("secret {key}"));
        }
    }
    if n.resources.memory > o.resources.memory {
        added.push(format!(
            "memory cap {} → {}",
            o.resources.memory, n.resources.memory
        ));
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(
            Path::new("a.toml"),
            &format!("name = \"a\"\ncomponent = \"a.wasm\"\n{extra}"),
        )
        .unwrap()
    }

    #[test]
    fn every_kind_of_wider_grant_is_named_and_narrower_ones_are_not() {
        let old = manifest(
            "[resources]\nmemory = \"64MiB\"\n[[routes]]\nhost = \"a.test\"\n[outbound_http]\nallowed_hosts = [\"https://x.test\"]\n\
             [redis]\ndb = 1\nprefix = \"a:\"\n",
        );
        let new = manifest(
            "[resources]\nmemory = \"128MiB\"\n[[routes]]\nhost = \"a.test\"\n[[routes]]\nhost = \"b.test\"\npath = \"/api\"\n\
             [outbound_http]\nallowed_hosts = [\"https://x.test\", \"https://y.test\"]\n[redis]\ndb = 1\nprefix = \"b:\"\n\
             [postgres]\ndatabase = \"a_db\"\n[secrets]\nKEY = { env = \"A_KEY\" }\n",
        );
        let old_imports = vec!["wasi:http/types@0.2.3".to_string()];
        let new_imports = vec![
            "wasi:http/types@0.2.6".to_string(),
            "wasi:http/outgoing-handler@0.2.6".to_string(),
        ];
        assert_eq!(
            widened_between((&old_imports, &old), (&new_imports, &new)),
            [
                "new import wasi:http/outgoing-handler@0.2.6",
                "new route b.test/api",
                "outbound HTTP to https://y.test",
                "PostgreSQL database a_db",
                "Redis prefix b: (db 1)",
                "secret KEY",
                "memory cap 64MiB → 128MiB",
            ]
        );
        // Narrowing needs no approval; a different Redis prefix is other keys, so it does.
        assert_eq!(
            widened_between((&new_imports, &new), (&old_imports, &old)),
            ["Redis prefix a: (db 1)"]
        );
        assert!(widened_between((&old_imports, &old), (&old_imports, &old)).is_empty());
    }

    #[test]
    fn files_a_larger_quota_or_writable_is_wider_and_the_reverse_is_not() {
        let imports = vec!["wasi:http/types@0.2.6".to_string()];
        let none = manifest("");
        let read_only = manifest("[files]\nquota = \"1MiB\"\nread_only = true\n");
        let writable = manifest("[files]\nquota = \"1MiB\"\n");
        let larger = manifest("[files]\nquota = \"2MiB\"\n");
        let widened = |o: &Manifest, n: &Manifest| widened_between((&imports, o), (&imports, n));
        assert_eq!(
            widened(&none, &read_only),
            ["files: a private directory /data", "files: quota 1MiB"]
        );
        assert_eq!(widened(&read_only, &writable), ["files: /data writable"]);
        assert_eq!(widened(&writable, &larger), ["files: quota 2MiB"]);
        assert!(widened(&larger, &writable).is_empty());
        assert!(widened(&writable, &read_only).is_empty());
        assert!(widened(&read_only, &none).is_empty());
    }
}
