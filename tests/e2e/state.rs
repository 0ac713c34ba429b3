//! Key-value state: it survives a host restart, apps cannot see each other's keys, and only
//! durable apps wait for their writes to be flushed.

use fog_host::Manifest;
use fog_test_programs as programs;
use fog_tests::{TestHost, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_host_restart() {
    let data = tempfile::tempdir().unwrap();
    let host = TestHost::start(Some(data.path().to_path_buf())).await;
    host.add(Manifest::new("counter"), programs::COUNTER);
    for _ in 0..3 {
        assert_eq!(get(host.addr, "counter", "/").await.status, 200);
    }
    host.stop().await;

    // A new runtime over the same directory: same count, and the compiled component comes from
    // the on-disk cache.
    let cached = std::fs::read_dir(data.path().join("compiled"))
        .unwrap()
        .count();
    assert_eq!(cached, 1, "one compiled component cached");
    let host = TestHost::start(Some(data.path().to_path_buf())).await;
    host.add(Manifest::new("counter"), programs::COUNTER);
    assert_eq!(
        get(host.addr, "counter", "/api/count").await.text(),
        r#"{"visits":3}"#
    );
    assert!(
        get(host.addr, "counter", "/")
            .await
            .text()
            .contains("visitor 4")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_cannot_see_each_others_keys() {
    let host = TestHost::start(None).await;
    // The same component under two names: two namespaces.
    let alice = host.add(Manifest::new("alice"), programs::COUNTER);
    let bob = host.add(Manifest::new("bob"), programs::COUNTER);
    for _ in 0..5 {
        get(host.addr, "alice", "/").await;
    }
    let put = fog_tests::request(
        host.addr,
        "PUT",
        "/api/notes/secret",
        &[("x-fog-app", "alice")],
        "alice's",
    )
    .await
    .unwrap();
    assert_eq!(put.status, 200);
    assert_eq!(
        get(host.addr, "bob", "/api/count").await.text(),
        r#"{"visits":0}"#
    );
    assert_eq!(get(host.addr, "bob", "/api/notes/secret").await.status, 404);
    assert_eq!(
        get(host.addr, "bob", "/api/notes").await.text(),
        r#"{"notes":[]}"#
    );
    assert_eq!(
        get(host.addr, "alice", "/api/count").await.text(),
        r#"{"visits":5}"#
    );
    assert_eq!(
        alice.namespace().get("", "visits").unwrap(),
        Some(b"5".to_vec())
    );
    assert!(bob.namespace().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_uses_its_state_creates_no_trees() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("site"), programs::HELLO);
    host.add(Manifest::new("counter"), programs::COUNTER);
    assert_eq!(get(host.addr, "site", "/").await.status, 200);
    assert_eq!(get(host.addr, "counter", "/").await.status, 200);
    assert!(!host.runtime.namespace("site").unwrap().is_open());
    let counter = host.runtime.namespace("counter").unwrap();
    assert!(counter.is_open());
    assert_eq!(
        counter.get("", "visits").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

/// Only a durable app's requests wait for a flush, only those that wrote, and a changed grant
/// (`fog publish --durable` again, as the agent hands it over) takes effect without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_writes_of_a_durable_app_wait_for_a_flush() {
    let data = tempfile::tempdir().unwrap();
    let host = TestHost::start(Some(data.path().to_path_buf())).await;
    let app = host.add(Manifest::new("counter"), programs::COUNTER);
    for _ in 0..3 {
        assert_eq!(get(host.addr, "counter", "/").await.status, 200);
    }
    assert_eq!(host.runtime.durable_flushes(), 0, "not durable: no flush");

    app.regrant(&Manifest {
        durable: true,
        ..Manifest::new("counter")
    });
    // One request at a time: each write gets a flush of its own; a read gets none.
    for expected in 1..=2 {
        assert_eq!(get(host.addr, "counter", "/").await.status, 200);
        assert_eq!(host.runtime.durable_flushes(), expected);
    }
    assert_eq!(
        get(host.addr, "counter", "/api/count").await.text(),
        r#"{"visits":5}"#
    );
    assert_eq!(
        host.runtime.durable_flushes(),
        2,
        "a read waits for no flush"
    );

    app.regrant(&Manifest::new("counter"));
    assert_eq!(get(host.addr, "counter", "/").await.status, 200);
    assert_eq!(
        host.runtime.durable_flushes(),
        2,
        "durable turned off again"
    );
}
