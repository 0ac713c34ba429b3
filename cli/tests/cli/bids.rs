//! Bids across processes: with demand above supply, a spot app is parked with its state to make
//! room for a reserved one, on-demand and reserved replicas stay where they are, and the spot
//! app comes back with its state once room frees up.

use std::time::{Duration, Instant};

use fog_proto::api::AppInfo;
use fog_test_programs as programs;

use crate::publish::Fog;

/// Wait until `name` satisfies `done`, or fail with `what`.
async fn wait_for(fog: &Fog, name: &str, what: &str, done: impl Fn(&AppInfo) -> bool) -> AppInfo {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let app = fog.app(name);
        if done(&app) {
            return app;
        }
        assert!(Instant::now() < deadline, "{what}: {app:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn publish(fog: &Fog, name: &str, bid: &str, wait: &str) {
    let (code, _, err) = fog.fog(&[
        "publish",
        programs::COUNTER,
        "--name",
        name,
        "--tier",
        "B",
        "--bid",
        bid,
        "--wait",
        wait,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
}

async fn visits(fog: &Fog, app: &str, method: &str, path: &str) -> u64 {
    let reply = fog_tests::request(
        fog.router.addr,
        method,
        &format!("/apps/{app}{path}"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    body["visits"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_replicas_park_with_their_state_for_higher_bids_and_others_stay() {
    // Two devices with room for one replica each: 100 MiB, and every replica planned with at
    // least 60 MiB (idle, an app's measured footprint is about nothing).
    let fog = Fog::start_with_control(2, &["--replica-memory-floor", "60"], |_, _| {
        vec!["--mem-mb".into(), "100".into()]
    });
    publish(&fog, "steady", "on-demand", "60");
    publish(&fog, "cheap", "spot", "60");
    let steady = wait_for(&fog, "steady", "on-demand app not running", |a| {
        a.running.len() == 1
    })
    .await
    .assigned;
    let cheap = wait_for(&fog, "cheap", "spot app not running", |a| {
        a.running.len() == 1
    })
    .await
    .assigned;
    assert_ne!(steady, cheap);
    for _ in 0..3 {
        visits(&fog, "cheap", "POST", "/api/increment").await;
    }

    // A reserved app needs a device: the spot app gives way, parked with its state.
    publish(&fog, "paying", "reserved", "60");
    let paying = wait_for(&fog, "paying", "reserved app not running", |a| {
        a.running.len() == 1
    })
    .await;
    assert_eq!(paying.assigned, cheap, "it takes the spot app's device");
    let parked = wait_for(&fog, "cheap", "spot app not parked", |a| {
        a.assigned.is_empty() && a.running.is_empty()
    })
    .await;
    assert!(
        parked
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("spot capacity went to on-demand or reserved apps")),
        "{parked:?}"
    );
    assert!(
        parked
            .events
            .iter()
            .any(|e| e.contains("spot replicas parked, state kept on")),
        "{:?}",
        parked.events
    );
    assert_eq!(fog.app("steady").assigned, steady, "on-demand stays");

    // Another on-demand app finds no room: neither on-demand nor reserved replicas give way.
    publish(&fog, "late", "on-demand", "0");
    let late = wait_for(&fog, "late", "no placement problem for the late app", |a| {
        a.problem.is_some()
    })
    .await;
    assert!(late.assigned.is_empty(), "{late:?}");
    assert_eq!(fog.app("steady").assigned, steady);
    assert_eq!(fog.app("paying").assigned, cheap);
    let (code, _, err) = fog.fog(&["rm", "late"]);
    assert_eq!(code, 0, "{err}");

    // Room again: the spot app comes back where its state is, with its state.
    let (code, _, err) = fog.fog(&["rm", "paying"]);
    assert_eq!(code, 0, "{err}");
    let back = wait_for(&fog, "cheap", "spot app not back", |a| a.running.len() == 1).await;
    assert_eq!(back.assigned, cheap);
    assert_eq!(visits(&fog, "cheap", "GET", "/api/count").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_app_parked_at_zero_keeps_its_capacity() {
    // One device with room for one replica.
    let fog = Fog::start_with(1, |_, _| vec!["--mem-mb".into(), "100".into()]);
    publish(&fog, "reserve", "reserved", "60");
    let (code, _, err) = fog.fog(&[
        "scale", "reserve", "--min", "0", "--max", "1", "--target", "20", "--idle", "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let device = wait_for(&fog, "reserve", "reserved app not running", |a| {
        a.running.len() == 1
    })
    .await
    .assigned;
    wait_for(&fog, "reserve", "reserved app not parked when idle", |a| {
        a.replicas == 0 && a.running.is_empty()
    })
    .await;

    // Its device has room for nothing else while it is parked.
    publish(&fog, "other", "on-demand", "0");
    let other = wait_for(
        &fog,
        "other",
        "no placement problem for the other app",
        |a| a.problem.is_some(),
    )
    .await;
    assert!(other.assigned.is_empty(), "{other:?}");
    let (code, _, err) = fog.fog(&["rm", "other"]);
    assert_eq!(code, 0, "{err}");

    // A request wakes it where it was.
    assert_eq!(visits(&fog, "reserve", "GET", "/api/count").await, 0);
    assert_eq!(fog.app("reserve").assigned, device);
}
