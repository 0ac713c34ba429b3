//! A hung control plane (it accepts connections and never answers) first in a host's list
//! while another one answers: the host gives up on it in time to keep its control-plane lease,
//! so its primary keeps taking writes through the router and no visitor request fails.

use std::time::Instant;

use fog_test_programs as programs;

use crate::fence::{Proxy, spawn_host};
use crate::ha::wait_acked;
use crate::publish::Fog;
use crate::state::{Increments, count, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_first_control_plane_does_not_stop_a_primarys_writes() {
    let mut fog = Fog::start(0);
    let mut proxies = Vec::new();
    for i in 0..2 {
        // The proxy to the control plane first: each host heartbeats through it until it hangs,
        // then has the control plane's own address next in its list.
        let proxy = Proxy::start(fog.control.addr).await;
        let control = format!("http://{},{}", proxy.addr, fog.control.url());
        spawn_host(&mut fog, i, &control, &[]);
        proxies.push(proxy);
    }
    let info = fog.publish_counter("A");
    let (primary, follower) = (info.assigned[0].clone(), info.assigned[1].clone());
    wait_for(
        &fog,
        "counter",
        std::time::Duration::from_secs(15),
        "not running",
        |a| a.running.contains(&primary) && a.running.contains(&follower),
    )
    .await;
    let load = Increments::start(fog.router.addr, 100);
    wait_acked(&load, 50, "no increments acknowledged").await;

    for proxy in &proxies {
        proxy.hang();
    }
    let hung = Instant::now();
    let before = load.acked();
    // A new app to load meanwhile: a finished load interrupts the held heartbeat to report it at
    // once, and the heartbeat sent again must not wait the hung control plane out once more.
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "hello", "--wait", "0"]);
    assert_eq!(code, 0, "{err}");
    // 5 s at 100/s: the lease (3 heartbeat intervals) would lapse within the first 3 s were
    // the hung control plane waited out (the HTTP client's 30 s).
    wait_acked(
        &load,
        before + 500,
        "writes stopped while the control plane hung",
    )
    .await;
    let took = hung.elapsed();
    let (acked, failed, errors, rate) = load.finish().await;
    let total = count(&fog).await;
    println!(
        "hung control plane: {} increments acknowledged in the {took:?} after it hung \
         ({acked} in all at {rate:.0}/s), {failed} failed, count {total}",
        acked - before
    );
    assert_eq!(failed, 0, "failed visitor requests: {errors:?}");
    assert!(
        total >= acked,
        "acknowledged increments lost: {total} < {acked}"
    );
}

/// A `fog` command whose first control plane hung (it accepted the connection and never
/// answers) gives up on it once its liveness check goes unanswered, and the next answers: it
/// does not wait out the HTTP client's 120 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_fails_over_from_a_hung_first_control_plane() {
    let fog = Fog::start(0);
    let proxy = Proxy::start(fog.control.addr).await;
    proxy.hang();
    let control = format!("http://{},{}", proxy.addr, fog.control.url());
    let started = Instant::now();
    let (code, _, err) = crate::fog::run(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--wait",
        "0",
        "--control",
        &control,
        "--key",
        &fog.key,
    ]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    assert_eq!(fog.app("hello").name, "hello");
    // The liveness check: asked 5 s in, unanswered for 10 s. The client's own timeout is 120 s.
    assert!(
        took < std::time::Duration::from_secs(60),
        "the command waited {took:?} on the hung control plane"
    );
}
