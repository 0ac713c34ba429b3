//! The harvest gate on a real host: draining lets in-flight requests finish, off refuses new
//! ones with 503, and a harvesting device never takes more than it offers.

use std::time::Duration;

use fog_host::Manifest;
use fog_host::harvest::policy::{Cause, Decision, State};
use fog_test_programs as programs;
use fog_tests::{TestHost, get};

fn decision(state: State, cpu: f64) -> Decision {
    Decision {
        state,
        cause: Cause::RulesHold,
        reason: format!("{state:?}"),
        cpu_offered: cpu,
        mem_offered_mb: 512.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_finishes_in_flight_requests_and_off_refuses_new_ones() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("api"), programs::API);
    // Offer enough CPU time for all eight requests even if the machine runs them one after
    // another: this test is about draining, not about the CPU budget.
    const CPU: f64 = 64.0;
    host.apps
        .gate()
        .apply(&decision(State::Harvesting, CPU), 0.0);
    // Eight requests of real work.
    let mut calls = Vec::new();
    for _ in 0..8 {
        let addr = host.addr;
        calls.push(tokio::spawn(async move {
            get(addr, "api", "/fib?n=80000000").await
        }));
    }
    // Start draining once one is running: a loaded machine may take a while to schedule them.
    let app = host.apps.get("api").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.in_flight() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        app.in_flight() > 0,
        "no request in flight when draining began"
    );
    host.apps.gate().apply(&decision(State::Draining, 0.0), CPU);
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(
            reply.status,
            200,
            "in-flight request failed while draining: {}",
            reply.text()
        );
    }
    host.apps.gate().apply(&decision(State::Off, 0.0), CPU);
    let refused = get(host.addr, "api", "/fib?n=10").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("x-fog-error"), "harvest");
    assert!(
        refused.text().contains("not offering capacity"),
        "{}",
        refused.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harvesting_host_enforces_its_offered_concurrency() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("api"), programs::API);
    // 1/32 of a core: one request at a time, whatever the control plane assigns.
    host.apps
        .gate()
        .apply(&decision(State::Harvesting, 1.0 / 32.0), 0.0);
    let mut calls = Vec::new();
    for _ in 0..4 {
        let addr = host.addr;
        calls.push(tokio::spawn(async move {
            get(addr, "api", "/fib?n=20000000").await
        }));
    }
    let mut statuses: Vec<u16> = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        if reply.status == 503 {
            assert!(
                reply.text().contains("harvest capacity of 1"),
                "{}",
                reply.text()
            );
        }
        statuses.push(reply.status);
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
}
