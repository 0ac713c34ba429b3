//! Harvesting across processes: a host whose device is unplugged drains, its replicas move to
//! other hosts, the app keeps answering throughout, and the hosts' signed ledgers reach the
//! control plane.

use std::time::{Duration, Instant};

use fog_proto::api::SignedPeriod;

use crate::fog::run;
use crate::publish::{Fog, Load};

const PLUGGED: &str =
    r#"{"charging": true, "battery": 0.9, "cpus": 2, "mem_total_mb": 4096, "user_idle_s": 3600}"#;
const UNPLUGGED: &str =
    r#"{"charging": false, "battery": 0.9, "cpus": 2, "mem_total_mb": 4096, "user_idle_s": 3600}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_host_drains_and_its_replicas_move_without_failed_requests() {
    let fog = Fog::start_with(3, |i, dir| {
        let sensors = dir.join(format!("sensors{i}.json"));
        std::fs::write(&sensors, PLUGGED).unwrap();
        let policy = dir.join("harvest.toml");
        std::fs::write(
            &policy,
            "[harvest]\nmin_idle_s = 0\ncooldown_s = 3600\ndrain_timeout_s = 30\n",
        )
        .unwrap();
        vec![
            "--sensors".into(),
            sensors.to_str().unwrap().into(),
            "--harvest".into(),
            policy.to_str().unwrap().into(),
            "--ledger-period".into(),
            "1".into(),
        ]
    });
    let info = fog.publish_counter("A");
    assert_eq!(info.running.len(), 2, "{info:?}");

    // Unplug the primary's device under load.
    let primary = fog.app("counter").assigned[0].clone();
    let victim = fog.host_of(&primary);
    let load = Load::start(fog.router.addr, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        fog.dir.path().join(format!("sensors{victim}.json")),
        UNPLUGGED,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let app = fog.app("counter");
        if app.running.len() == 2
            && !app.running.contains(&primary)
            && !app.assigned.contains(&primary)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not move off the unplugged device: {app:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failed, _) = load.finish().await;
    eprintln!("unplugging under load: {ok} requests succeeded, {failed} failed");
    assert_eq!(
        failed, 0,
        "the app must keep answering while a device drains"
    );
    assert!(ok > 50);

    // The unplugged host says why it stopped; it reaches Off once nothing runs there.
    let data = fog.dir.path().join(format!("host{victim}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = run(&["host", "status", "--data", data.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        if out.contains("state:    Off") {
            assert!(
                out.contains("cooling down") || out.contains("drained"),
                "{out}"
            );
            break;
        }
        assert!(out.contains("Draining"), "{out}");
        assert!(
            Instant::now() < deadline,
            "host never finished draining: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let devices = fog.devices();
    let unplugged = devices.iter().find(|d| d.id == primary).unwrap();
    assert!(unplugged.alive && !unplugged.harvestable, "{unplugged:?}");
    // The control plane knows why from its heartbeats, and `fog devices` says it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = fog.fog(&["devices"]);
        assert_eq!(code, 0, "{err}");
        if out.contains("harvest: off: drained")
            || out.contains("harvest: cooling down")
            || out.contains("harvest: not harvesting: not charging")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no harvest reason shown: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Signed ledger periods reached the control plane, verified, with the primary's fuel.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = fog_tests::request(
            fog.control.addr,
            "GET",
            &format!("/v1/devices/{primary}/ledger"),
            &[],
            "",
        )
        .await
        .unwrap();
        let periods: Vec<SignedPeriod> = serde_json::from_slice(&reply.body).unwrap();
        let fuel: u64 = periods
            .iter()
            .flat_map(|p| &p.period.entries)
            .filter(|e| e.app == "counter")
            .map(|e| e.fuel)
            .sum();
        if fuel > 0 {
            for p in &periods {
                p.period.check_arithmetic().unwrap();
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ledger periods from the primary"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
