//! Soft state that outlives the control plane holding it: a handover in flight when the leader
//! is killed is finished by the next leader (on etcd), and after every process of a fog is
//! restarted (on sled) its apps, versions, placements, ledger, keys, parked apps, events and a
//! handover in flight are all still there.
//!
//! Both hold a handover mid-way with `FOG_TEST_HOLD_HANDOVER` (test only: the control plane
//! given it never completes a handover once the old primary is fenced), so the control plane
//! can be killed with one in flight.

use std::path::Path;
use std::time::{Duration, Instant};

use fog_proto::api::{AppInfo, SignedPeriod};
use fog_proto::auth::Identity;
use fog_test_etcd::EtcdCluster;
use fog_test_programs as programs;

use crate::fog::{Running, run, spawn, spawn_with_env};
use crate::ha::{app, count, fog, leader, until, wait_acked};
use crate::state::Increments;

const HOLD: (&str, &str) = ("FOG_TEST_HOLD_HANDOVER", "1");

/// A new key in `dir/name/device.key`: its public half (hex).
fn keygen(dir: &Path, name: &str) -> String {
    let path = dir.join(name).join("device.key");
    let (code, _, err) = run(&["keygen", "--key", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    Identity::from_text(&std::fs::read_to_string(&path).unwrap())
        .unwrap()
        .public_hex()
}

fn router(dir: &Path, control: &str) -> Running {
    spawn(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--control",
        control,
        "--data",
        dir.join("router").to_str().unwrap(),
        "--betanet",
        "127.0.0.1:0",
        "--attach",
        "127.0.0.1:0",
        "--visitor-rate",
        "0",
    ])
}

/// Start host `i` with one core under `dir`, given the control planes `control`, and `extra`
/// arguments.
pub(crate) fn host(dir: &Path, i: usize, control: &str, extra: &[&str]) -> Running {
    let data = dir.join(format!("host{i}"));
    let mut args = vec![
        "host",
        "--control",
        control,
        "--data",
        data.to_str().unwrap(),
        "--cpu",
        "1",
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Ask for the counter's primary to move to its follower, and wait until the control plane
/// holds the handover in its fencing phase (as the store says, asked of `control`): the
/// primary's device and the target's.
async fn hold_a_move(control: &str, key: &str) -> (String, String) {
    let before = until(control, key, "two replicas running", |a| {
        a.running.len() == 2 && a.assigned.len() == 2
    })
    .await;
    let (primary, spare) = (before.assigned[0].clone(), before.assigned[1].clone());
    let (code, _, err) = fog(
        &["move", "counter", "--to", &spare, "--no-wait"],
        control,
        key,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    until(control, key, "the handover held while fencing", |a| {
        a.moving.as_deref().is_some_and(|m| m.contains("fencing"))
    })
    .await;
    (primary, spare)
}

/// Wait until the counter's handover from `primary` to `spare` is done: the target leads and
/// no handover is left; the events must say it was resumed, and finished.
async fn until_moved(control: &str, key: &str, primary: &str, spare: &str) -> AppInfo {
    let moved = until(control, key, "the handover finished", |a| {
        a.moving.is_none()
            && a.assigned.first().map(String::as_str) == Some(spare)
            && a.running.iter().any(|d| d == spare)
    })
    .await;
    assert!(
        moved
            .events
            .iter()
            .any(|e| e.contains(&format!("handover from {primary} to {spare} resumed"))),
        "{:?}",
        moved.events
    );
    assert!(
        moved
            .events
            .iter()
            .any(|e| e.contains(&format!("moved from {primary} to {spare}"))),
        "{:?}",
        moved.events
    );
    assert_eq!(moved.move_abandoned, None);
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_in_flight_when_the_leader_is_killed_is_finished_by_the_next_leader() {
    let etcd = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let store = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let router_key = keygen(dir.path(), "router");
    let control = |i: usize, env: &[(&str, &str)]| {
        let data = dir.path().join(format!("control{i}"));
        spawn_with_env(
            &[
                "control",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
                "--store",
                &store,
                "--trust-router",
                &router_key,
            ],
            env,
        )
    };
    // The first control plane leads (it is alone at first) and holds handovers mid-way.
    let mut first = control(0, &[HOLD]);
    let urls = [Some(first.url()), None];
    assert_eq!(leader(&urls, Duration::from_secs(10)).await, 0);
    let second = control(1, &[]);
    let both = format!("{},{}", first.url(), second.url());
    let router = router(dir.path(), &both);
    let _hosts: Vec<Running> = (0..2)
        .map(|i| {
            let list = if i == 0 {
                both.clone()
            } else {
                format!("{},{}", second.url(), first.url())
            };
            host(dir.path(), i, &list, &["--always-on"])
        })
        .collect();
    let key = dir.path().join("developer.key");
    let key = key.to_str().unwrap();
    let (code, _, err) = run(&["keygen", "--key", key]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = fog(
        &[
            "publish",
            programs::COUNTER,
            "--name",
            "counter",
            "--tier",
            "A",
        ],
        &both,
        key,
    )
    .await;
    assert_eq!(code, 0, "{err}");

    let load = Increments::start(router.addr, 100);
    wait_acked(&load, 100, "increments before the move").await;
    let (primary, spare) = hold_a_move(&second.url(), key).await;
    let acked_at_kill = load.acked();
    first.kill();
    let killed = Instant::now();
    let survivors = [None, Some(second.url())];
    assert_eq!(leader(&survivors, Duration::from_secs(10)).await, 1);
    until_moved(&second.url(), key, &primary, &spare).await;
    let finished = killed.elapsed();
    wait_acked(&load, acked_at_kill + 300, "increments after the handover").await;

    let (acked, failed, errors, rate) = load.finish().await;
    let total = count(router.addr).await;
    println!(
        "handover held in fencing, leader killed: finished by the next leader {:.2} s after \
         the kill; {acked} increments acknowledged at {rate:.0}/s, {failed} failed, count \
         {total}",
        finished.as_secs_f64()
    );
    assert_eq!(failed, 0, "failed visitor requests: {errors:?}");
    assert!(
        total >= acked,
        "acknowledged increments lost: {total} < {acked}"
    );
}

/// Wait until `check` holds for app `name` as `control` lists it.
async fn until_app(
    control: &str,
    key: &str,
    name: &str,
    what: &str,
    check: impl Fn(&AppInfo) -> bool,
) -> AppInfo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = fog(&["ps", "--json"], control, key).await;
        assert_eq!(code, 0, "{err}");
        let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
        let info = apps.into_iter().find(|a| a.name == name).expect("listed");
        if check(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "{what}: {info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const PLUGGED: &str =
    r#"{"charging": true, "battery": 0.9, "cpus": 2, "mem_total_mb": 4096, "user_idle_s": 3600}"#;

/// The verified ledger periods of `device`, by start.
async fn ledger(control: &Running, device: &str) -> Vec<u64> {
    let reply = fog_tests::request(
        control.addr,
        "GET",
        &format!("/v1/devices/{device}/ledger"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let periods: Vec<SignedPeriod> = serde_json::from_slice(&reply.body).unwrap();
    periods.iter().map(|p| p.period.start_ms).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_restarted_keeps_apps_placements_ledger_keys_parked_apps_events_and_handovers()
 {
    let dir = tempfile::tempdir().unwrap();
    let router_key = keygen(dir.path(), "router");
    let sensors = dir.path().join("sensors.json");
    std::fs::write(&sensors, PLUGGED).unwrap();
    let policy = dir.path().join("harvest.toml");
    std::fs::write(
        &policy,
        "[harvest]\nmin_idle_s = 0\ncooldown_s = 3600\ndrain_timeout_s = 30\n",
    )
    .unwrap();
    let harvest = [
        "--sensors",
        sensors.to_str().unwrap(),
        "--harvest",
        policy.to_str().unwrap(),
        "--ledger-period",
        "1",
    ];
    let control = |env: &[(&str, &str)]| {
        let data = dir.path().join("control");
        spawn_with_env(
            &[
                "control",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
                "--trust-router",
                &router_key,
            ],
            env,
        )
    };
    let start = |control: &Running| {
        let url = control.url();
        let router = router(dir.path(), &url);
        let hosts: Vec<Running> = (0..3)
            .map(|i| host(dir.path(), i, &url, &harvest))
            .collect();
        (router, hosts)
    };
    let mut plane = control(&[HOLD]);
    let (mut router, mut hosts) = start(&plane);
    let key = dir.path().join("developer.key");
    let key = key.to_str().unwrap();
    let (code, _, err) = run(&["keygen", "--key", key]);
    assert_eq!(code, 0, "{err}");
    let url = plane.url();

    // The counter, published twice (version 2), with increments through the router.
    for _ in 0..2 {
        let (code, _, err) = fog(
            &[
                "publish",
                programs::COUNTER,
                "--name",
                "counter",
                "--tier",
                "A",
            ],
            &url,
            key,
        )
        .await;
        assert_eq!(code, 0, "{err}");
    }
    until(&url, key, "version 2 on two replicas", |a| {
        a.version == 2 && a.running.len() == 2
    })
    .await;
    let load = Increments::start(router.addr, 50);
    wait_acked(&load, 100, "increments").await;
    let (acked, failed, errors, _) = load.finish().await;
    assert_eq!(failed, 0, "{errors:?}");

    // `hello`, autoscaled to zero when idle: parked, its state's device remembered.
    let (code, _, err) = fog(
        &[
            "publish",
            programs::HELLO,
            "--name",
            "hello",
            "--tier",
            "S",
            "--replicas",
            "1",
        ],
        &url,
        key,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let ran_on = until_app(&url, key, "hello", "hello running", |a| {
        a.running.len() == 1
    })
    .await
    .running;
    let (code, _, err) = fog(
        &[
            "scale", "hello", "--min", "0", "--max", "1", "--target", "20", "--idle", "2",
        ],
        &url,
        key,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let parked = until_app(&url, key, "hello", "hello parked", |a| {
        a.replicas == 0 && a.running.is_empty()
    })
    .await;

    // The counter's hosts' ledgers reach the control plane.
    let counter = app(&url, key).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut periods = ledger(&plane, &counter.assigned[0]).await;
    while periods.is_empty() {
        assert!(Instant::now() < deadline, "no ledger period verified");
        tokio::time::sleep(Duration::from_millis(200)).await;
        periods = ledger(&plane, &counter.assigned[0]).await;
    }

    // A move of the counter's primary, held mid-way.
    let (primary, spare) = hold_a_move(&url, key).await;
    let before = app(&url, key).await;

    // Every process stops, then starts again on its data; the control plane without the hold.
    for running in hosts.iter_mut() {
        running.terminate();
    }
    router.terminate();
    plane.terminate();
    drop((hosts, router));
    plane = control(&[]);
    let (router, _hosts) = start(&plane);
    let url = plane.url();

    // The handover is resumed and finished, and the app answers with every increment.
    let after = until_moved(&url, key, &primary, &spare).await;
    assert_eq!(after.version, 2);
    assert_eq!(after.onion, before.onion, "the app's keys are the same");
    assert_eq!(after.betanet, before.betanet);
    // The placement it resumed from was the one stored before the restart: [old primary,
    // target] (`until_moved` saw the target lead).
    assert_eq!(before.assigned, [primary.clone(), spare.clone()]);
    for event in &before.events {
        assert!(
            after.events.contains(event),
            "{event:?} lost: {:?}",
            after.events
        );
    }
    let total = count(router.addr).await;
    assert!(total >= acked, "increments lost: {total} < {acked}");
    let kept = ledger(&plane, &counter.assigned[0]).await;
    for start in &periods {
        assert!(kept.contains(start), "ledger period {start} lost: {kept:?}");
    }

    // hello is still parked, with its events, and wakes on the device holding its state.
    let hello = until_app(&url, key, "hello", "hello listed", |_| true).await;
    assert_eq!(hello.replicas, 0, "{hello:?}");
    assert_eq!(hello.onion, parked.onion);
    for event in &parked.events {
        assert!(
            hello.events.contains(event),
            "{event:?} lost: {:?}",
            hello.events
        );
    }
    let reply = fog_tests::request(router.addr, "GET", "/apps/hello/", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let woken = until_app(&url, key, "hello", "hello woken", |a| {
        !a.assigned.is_empty()
    })
    .await;
    assert_eq!(woken.assigned, ran_on, "woken where it was parked");
}
