//! `fog control --store etcd://`: a fog whose registry is a real etcd member on loopback, a control
//! plane replaced by one with an empty data directory, and the one error when etcd cannot be
//! reached.

use std::time::{Duration, Instant};

use fog_proto::api::AppInfo;
use fog_test_etcd::EtcdCluster;

use crate::fog::{run, spawn};
use crate::publish::Fog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fog_on_etcd_serves_what_it_publishes_and_keeps_it_when_the_control_plane_is_replaced() {
    let etcd = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let url = etcd.url();
    let mut fog = Fog::start_with_control(1, &["--store", &url], |_, _| {
        vec!["--always-on".to_string()]
    });
    let published = fog.publish_counter("B");
    assert_eq!(published.running.len(), 1, "{published:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply =
            fog_tests::request(fog.router.addr, "GET", "/apps/counter/api/count", &[], "").await;
        match reply {
            Ok(reply) if reply.status == 200 => break,
            other => assert!(Instant::now() < deadline, "never served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The registry is in etcd, not on the control plane's disk: a control plane started with a
    // fresh data directory on the same etcd (the first one killed) has the app, its version and
    // its addresses (derived from the master secret in etcd).
    fog.control.kill();
    let fresh = fog.dir.path().join("fresh-control");
    let restarted = spawn(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data",
        fresh.to_str().unwrap(),
        "--store",
        &url,
    ]);
    let (code, out, err) = run(&["ps", "--json", "--control", &restarted.url()]);
    assert_eq!(code, 0, "{err}");
    let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(apps.len(), 1, "{out}");
    assert_eq!(
        (apps[0].name.as_str(), apps[0].version, &apps[0].betanet),
        ("counter", 1, &published.betanet)
    );
}

#[test]
fn fog_control_with_an_unreachable_etcd_exits_with_one_error_naming_the_endpoints() {
    // Ports nobody listens on: bound, read, released.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let url = format!("etcd://127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().to_str().unwrap(),
        "--store",
        &url,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "nothing announced: {out}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    for port in ports {
        assert!(errors[0].contains(&format!("127.0.0.1:{port}")), "{err}");
    }
    assert!(errors[0].contains("unreachable"), "{err}");
}

/// `fog sim` against a control plane on etcd: simulated devices register, heartbeat and are
/// given every app published; the probe app is placed too.
#[test]
fn simulated_devices_get_every_app_placed_by_a_control_plane_on_etcd() {
    let etcd = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let data = tempfile::tempdir().unwrap();
    let control = spawn(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.path().to_str().unwrap(),
        "--store",
        &etcd.url(),
        "--key-rate",
        "0",
    ]);
    let mut sim = std::process::Command::new(crate::fog::FOG)
        .args([
            "sim",
            "--control",
            &control.url(),
            "--devices",
            "40",
            "--apps",
            "30",
            "--for",
            "3",
            "--json",
            "--admission-token",
            crate::fog::ADMISSION_TOKEN,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while sim.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = sim.kill();
            let output = sim.wait_with_output().unwrap();
            panic!(
                "fog sim did not finish within 180 s: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = sim.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["devices"], 40, "{report}");
    assert_eq!(report["apps"], 30, "{report}");
    assert!(
        report["apps_placed_s"].is_f64(),
        "not every app placed: {report}"
    );
    assert!(
        report["probe_placed_ms"].is_f64(),
        "the probe never placed: {report}"
    );
    assert!(report["heartbeats"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["failed"], 0, "heartbeats failed: {report}");
}
