//! The crate graph's invariants (ARCHITECTURE.md), checked on what cargo resolves: the optimiser
//! stays pure, only the host runs guest code, and the guest SDK carries nothing host-side.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::OnceLock;

/// The resolved crate graph for this machine's platform, read once.
fn metadata() -> &'static serde_json::Value {
    static METADATA: OnceLock<serde_json::Value> = OnceLock::new();
    METADATA.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let rustc = Command::new("rustc")
            .arg("-vV")
            .output()
            .expect("rustc -vV runs");
        let host = String::from_utf8_lossy(&rustc.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .expect("rustc -vV names the host triple");
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", &host])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            output.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
    })
}

/// Every package `root` depends on, directly or not, through normal and build dependencies
/// (dev-dependencies do not ship), by name.
fn dependencies_of(root: &str) -> BTreeSet<String> {
    let metadata = metadata();
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|kind| kind["kind"].as_str() != Some("dev"))
                })
                .map(|dep| dep["pkg"].as_str().unwrap())
                .collect();
            (node["id"].as_str().unwrap(), deps)
        })
        .collect();
    let start = names
        .iter()
        .find(|(_, name)| **name == root)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("no package {root} in the workspace"));
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        for dep in nodes.get(id).into_iter().flatten() {
            if seen.insert(names[dep].to_string()) {
                stack.push(dep);
            }
        }
    }
    seen
}

/// Fails, naming the offending crates, if `root` depends on any crate in `forbidden` (or a crate
/// whose name starts with one ending in `*`).
fn assert_free_of(root: &str, forbidden: &[&str]) {
    let deps = dependencies_of(root);
    let found: Vec<&String> = deps
        .iter()
        .filter(|dep| {
            forbidden.iter().any(|f| match f.strip_suffix('*') {
                Some(prefix) => dep.starts_with(prefix),
                None => dep.as_str() == *f,
            })
        })
        .collect();
    assert!(
        found.is_empty(),
        "{root} must not depend on {found:?} (ARCHITECTURE.md, invariants)"
    );
}

#[test]
fn the_scheduler_is_pure() {
    assert_free_of(
        "fog-scheduler",
        &["tokio", "hyper", "sled", "wasmtime*", "fog-control"],
    );
}

#[test]
fn only_the_host_runs_guest_code() {
    for role in [
        "fog-control",
        "fog-router",
        "fog-htx",
        "fog-proto",
        "fog-net",
    ] {
        assert_free_of(role, &["wasmtime*", "fog-host"]);
    }
}

#[test]
fn the_sdk_carries_nothing_host_side() {
    assert_free_of(
        "fog-sdk",
        &[
            "wasmtime*",
            "tokio",
            "hyper",
            "sled",
            "fog-host",
            "fog-control",
            "fog-router",
            "fog-scheduler",
            "fog-htx",
            "fog-net",
        ],
    );
}

#[test]
fn the_control_plane_has_no_http_client() {
    // Devices and routers pull everything the control plane tells them (hosts behind NAT
    // cannot be reached anyway): it answers requests and makes none.
    assert_free_of("fog-control", &["reqwest", "ureq", "isahc", "surf"]);
}

#[test]
fn the_check_sees_a_real_dependency() {
    // The host does run wasmtime: if this fails, the walk above proves nothing.
    assert!(dependencies_of("fog-host").contains("wasmtime"));
    assert!(dependencies_of("fog-control").contains("fog-scheduler"));
    assert!(dependencies_of("fog-host").contains("reqwest"));
}
