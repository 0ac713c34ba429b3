//! Compiled components are shared by hash, mapped on an app's first request, and dropped
//! least-recently-used under the host's code budget (then mapped again from disk).

use fog_host::Manifest;
use fog_test_programs as programs;
use fog_tests::{TestHost, get};

/// A path each example answers with 200.
fn path(app: &str) -> &'static str {
    match app {
        "api" => "/fib?n=10",
        "counter" => "/api/count",
        _ => "/",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_of_one_component_share_one_compiled_artefact() {
    let host = TestHost::start(None).await;
    for i in 0..20 {
        host.add(Manifest::new(format!("copy-{i}")), programs::HELLO);
    }
    for i in 0..20 {
        let reply = get(host.addr, &format!("copy-{i}"), "/").await;
        assert_eq!(reply.status, 200, "copy-{i}: {}", reply.text());
    }
    let stats = host.runtime.code_stats();
    assert_eq!(
        stats.resident, 1,
        "20 apps, one component in memory: {stats:?}"
    );
    assert_eq!(stats.compiles, 1, "compiled once: {stats:?}");
    assert_eq!(stats.loads, 0, "never mapped again: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_not_loaded_until_its_first_request() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("first"), programs::HELLO);
    // Nothing in memory: the next app of the same component must come from disk.
    host.runtime.set_code_budget(0);
    assert_eq!(host.runtime.code_stats().resident, 0);

    let second = host.add(Manifest::new("second"), programs::HELLO);
    let stats = host.runtime.code_stats();
    assert!(!second.is_resident());
    assert_eq!(
        (stats.resident, stats.compiles, stats.loads),
        (0, 1, 0),
        "{stats:?}"
    );

    let reply = get(host.addr, "second", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = host.runtime.code_stats();
    assert!(second.is_resident());
    assert_eq!(
        (stats.resident, stats.compiles, stats.loads),
        (1, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_component_is_evicted_and_reloads_from_disk() {
    let host = TestHost::start(None).await;
    let hello = host.add(Manifest::new("hello"), programs::HELLO);
    let counter = host.add(Manifest::new("counter"), programs::COUNTER);
    let api = host.add(Manifest::new("api"), programs::API);
    host.runtime.set_code_budget(0);

    // Map each once to learn the three sizes, then leave room for all but one byte of them.
    let mut total = 0;
    for app in ["hello", "counter", "api"] {
        assert_eq!(get(host.addr, app, path(app)).await.status, 200, "{app}");
        total = host.runtime.code_stats().resident_bytes;
    }
    assert_eq!(
        host.runtime.code_stats().resident,
        1,
        "budget 0 keeps the one in use"
    );
    host.runtime.set_code_budget(usize::MAX);
    for app in ["hello", "counter", "api"] {
        assert_eq!(get(host.addr, app, path(app)).await.status, 200, "{app}");
    }
    let sizes = host.runtime.code_stats().resident_bytes;
    assert!(sizes > total);
    host.runtime.set_code_budget(sizes - 1);
    // Evicting one of three to fit: "hello" was used least recently.
    let stats = host.runtime.code_stats();
    assert_eq!(stats.resident, 2, "{stats:?}");
    assert!(!hello.is_resident() && counter.is_resident() && api.is_resident());

    // Use counter, then hello comes back from disk and pushes out api (now the least recent).
    let loads = stats.loads;
    assert_eq!(get(host.addr, "counter", path("counter")).await.status, 200);
    let reply = get(host.addr, "hello", "/").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().contains("<html") || reply.text().contains("<!doctype"),
        "{}",
        reply.text()
    );
    let stats = host.runtime.code_stats();
    assert_eq!(stats.loads, loads + 1, "hello mapped from disk: {stats:?}");
    assert_eq!(stats.compiles, 3, "never recompiled: {stats:?}");
    assert!(hello.is_resident() && counter.is_resident() && !api.is_resident());

    // And api still answers correctly after its eviction.
    let reply = get(host.addr, "api", "/fib?n=10").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("\"n\":10"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_of_one_new_component_loaded_at_once_compile_it_once() {
    let host = TestHost::start(None).await;
    let bytes = std::sync::Arc::new(programs::bytes(programs::HELLO));
    // As the agent applies one heartbeat's assignments: every load on the blocking pool at once.
    let loads: Vec<_> = (0..8)
        .map(|i| {
            let (runtime, bytes) = (host.runtime.clone(), bytes.clone());
            tokio::task::spawn_blocking(move || {
                runtime.load(Manifest::new(format!("at-once-{i}")), &bytes)
            })
        })
        .collect();
    for load in loads {
        host.apps
            .insert(std::sync::Arc::new(load.await.unwrap().unwrap()));
    }
    for i in 0..8 {
        assert_eq!(
            get(host.addr, &format!("at-once-{i}"), "/").await.status,
            200
        );
    }
    let stats = host.runtime.code_stats();
    assert_eq!((stats.compiles, stats.resident), (1, 1), "{stats:?}");
}
