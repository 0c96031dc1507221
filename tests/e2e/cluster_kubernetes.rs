//! The Kubernetes manifests of a cluster of hosts (deploy/kubernetes/): checked
//! against the Kubernetes API schemas with the pinned `kubernetes-validate`
//! (installed by `deploy/kubernetes/setup-validate.sh`; missing, the tests fail
//! saying so), and against the host's own config and each other.

use crate::harness::{host_binary, workspace_root};
use serde_json::Value;
use std::{path::PathBuf, process::Command};

/// The pinned validator that `deploy/kubernetes/setup-validate.sh` installs (and
/// `deploy/quickstart.sh test` runs): missing, the test fails saying so.
fn kubernetes_venv() -> PathBuf {
    let venv = workspace_root().join("target/kubernetes-venv");
    assert!(
        venv.join("bin/kubernetes-validate").is_file(),
        "kubernetes-validate is not installed in {}: run deploy/kubernetes/setup-validate.sh (deploy/quickstart.sh test runs it)",
        venv.display()
    );
    venv
}

fn kubernetes_files() -> Vec<PathBuf> {
    let dir = workspace_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of the manifests, as JSON (read with the venv's PyYAML, which
/// kubernetes-validate itself uses).
fn kubernetes_documents(venv: &std::path::Path) -> Vec<Value> {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             print(json.dumps(docs))",
        ])
        .args(kubernetes_files())
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "reading deploy/kubernetes/*.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/kubernetes has no {kind} {name}"))
}

/// `8704Mi`, `8Gi`, `8GiB` in bytes.
fn quantity(text: &str) -> u64 {
    let text = text.trim_end_matches('B');
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a size"));
    number
        * match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            other => panic!("unit {other:?} in {text:?}"),
        }
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let venv = kubernetes_venv();
    let files = kubernetes_files();
    assert!(files.len() >= 5, "{files:?}");
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.33"])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "kubernetes-validate: {text}");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            text.lines()
                .any(|l| l.contains(&name) && l.contains("passed")),
            "{name} was not validated: {text}"
        );
    }
}

#[test]
fn kubernetes_manifests_agree_with_the_host_config_and_each_other() {
    let venv = kubernetes_venv();
    let docs = kubernetes_documents(&venv);
    let deployment = find(&docs, "Deployment", "alorig-host");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let container = &pod["spec"]["containers"][0];

    // host.toml in the ConfigMap: the host's own parser accepts it, and its
    // memory budget is deploy/host.toml's.
    let config_map = find(&docs, "ConfigMap", "alorig-host");
    let host_toml = config_map["data"]["host.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host.toml"), host_toml).unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    let out = Command::new(host_binary())
        .current_dir(dir.path())
        .args([
            "caddyfile",
            "--config",
            "host.toml",
            "--manifests",
            "manifests",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's host.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let budget_of = |text: &str| {
        let table: toml::Table = toml::from_str(text).unwrap();
        quantity(table["memory_budget"].as_str().unwrap())
    };
    let budget =
        budget_of(&std::fs::read_to_string(workspace_root().join("deploy/host.toml")).unwrap());
    assert_eq!(
        budget_of(host_toml),
        budget,
        "the ConfigMap's memory_budget is not deploy/host.toml's"
    );

    // Resources: memory_budget + 512Mi for the host, requested and limited alike.
    let resources = &container["resources"];
    for side in ["requests", "limits"] {
        let memory = quantity(resources[side]["memory"].as_str().unwrap());
        assert_eq!(
            memory,
            budget + (512 << 20),
            "resources.{side}.memory must be memory_budget + 512Mi"
        );
        assert!(resources[side]["cpu"].is_string(), "resources.{side}.cpu");
    }

    // Probes on /healthz of the admin port; Prometheus scrapes that port.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(annotations["prometheus.io/port"], "9090");
    assert!(host_toml.contains("admin_listen  = \"0.0.0.0:9090\""));
    assert!(host_toml.contains("listen        = \"0.0.0.0:8080\""));

    // Every Secret key the pod reads exists in the example Secret.
    for env in container["env"].as_array().unwrap() {
        if let Some(key) = env["valueFrom"]["secretKeyRef"].as_object() {
            let secret = find(&docs, "Secret", key["name"].as_str().unwrap());
            let k = key["key"].as_str().unwrap();
            assert!(
                secret["stringData"][k].is_string(),
                "Secret {} has no key {k}",
                key["name"]
            );
        }
    }
    let names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for needed in [
        "ALORIG_NODE_NAME",
        "ALORIG_POSTGRES_URL",
        "ALORIG_REDIS_URL",
        "ALORIG_ADMIN_TOKEN",
        "ALORIG_CLUSTER_KEY",
    ] {
        assert!(names.contains(&needed), "the pod has no {needed}");
    }

    // The Service and the PodDisruptionBudget select the pods.
    let selects = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    let service = find(&docs, "Service", "alorig-host");
    assert!(selects(&service["spec"]["selector"]));
    let pdb = find(&docs, "PodDisruptionBudget", "alorig-host");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"]));
    // Drain the 30 s of in-flight requests before the kill.
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap()
            > 30
    );
}
