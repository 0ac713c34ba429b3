//! Measured throughput and prices across processes: a host downloading components (the canary,
//! then an app's) gets a throughput the control plane timed, shown by `fog devices`; `fog ps` shows what each app
//! pays per hour, by the formula the ledger charges with; and a figure one control plane timed
//! reaches the others through their announcements.

use std::time::{Duration, Instant};

use fog_proto::api::{AppInfo, DeviceInfo, LedgerPeriod};
use fog_test_programs as programs;

use crate::fog::{Running, spawn};
use crate::publish::Fog;

/// Poll `fog devices --json` until `done` holds for some device, or fail with `what`.
async fn device_until(fog: &Fog, what: &str, done: impl Fn(&DeviceInfo) -> bool) -> DeviceInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = fog.fog(&["devices", "--json"]);
        assert_eq!(code, 0, "{err}");
        let devices: Vec<DeviceInfo> = serde_json::from_str(&out).unwrap();
        if let Some(device) = devices.iter().find(|d| done(d)) {
            return device.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {devices:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_downloading_a_component_gets_a_measured_throughput() {
    let fog = Fog::start(1);
    // The host downloads the canary component as soon as it is admitted.
    let device = device_until(&fog, "no throughput after the canary's download", |d| {
        d.throughput_mbps.is_some()
    })
    .await;
    let before = device.throughput_mbps.unwrap();
    assert!(before.is_finite() && before > 0.0, "{device:?}");
    assert!(device.throughput_age_ms.is_some(), "{device:?}");
    // An app's component: its download is smoothed into the figure.
    let info = fog.publish_counter("B");
    assert!(
        info.size >= 64 << 10,
        "the component ({} bytes) is too small to be timed",
        info.size
    );
    assert_eq!(info.running, vec![device.id.clone()], "{info:?}");
    let measured = device_until(&fog, "the app's download was not timed", |d| {
        d.throughput_mbps.is_some_and(|t| t != before)
    })
    .await;
    let mbps = measured.throughput_mbps.unwrap();
    assert!(mbps.is_finite() && mbps > 0.0, "{measured:?}");
    let (code, out, err) = fog.fog(&["devices"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("THROUGHPUT") && out.contains("Mbit/s"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fog_ps_shows_what_each_app_pays_per_hour() {
    const PRICE: f64 = 0.4;
    let fog = Fog::start_with(1, |_, _| {
        vec!["--always-on".into(), "--price".into(), PRICE.to_string()]
    });
    let placed = fog.publish_counter("B");
    assert_eq!(placed.assigned.len(), 1, "{placed:?}");
    // Capped below the only device's asking price: placed nowhere, so it pays nothing.
    let (code, _, err) = fog.fog(&[
        "publish",
        programs::COUNTER,
        "--name",
        "capped",
        "--tier",
        "B",
        "--max-price",
        "0.1",
        "--wait",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = fog.fog(&["ps", "--json"]);
    assert_eq!(code, 0, "{err}");
    let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
    let counter = apps.iter().find(|a| a.name == "counter").unwrap();
    let capped = apps.iter().find(|a| a.name == "capped").unwrap();
    // One replica at the planned demand, charged at the device's price as its ledger does.
    assert!(counter.cpu_planned > 0.0, "{counter:?}");
    let expected = LedgerPeriod::credits_per_hour(counter.cpu_planned, PRICE);
    assert!(expected > 0.0);
    assert!(
        (counter.price_per_hour - expected).abs() <= 1e-12,
        "{} per hour, expected {expected}: {counter:?}",
        counter.price_per_hour
    );
    assert!(capped.assigned.is_empty(), "{capped:?}");
    assert_eq!(capped.price_per_hour, 0.0, "{capped:?}");
    let (code, out, err) = fog.fog(&["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PRICE/H"), "{out}");
    // The price is the column before RUNNING ("n/m"); the bid before it may hold spaces.
    let price = |name: &str| {
        let row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .split_whitespace()
            .collect();
        let running = row.iter().position(|c| c.contains('/')).unwrap();
        row[running - 1].to_string()
    };
    assert_eq!(price("counter"), format!("{expected:.6}"), "{out}");
    assert_eq!(price("capped"), "-", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throughput_timed_by_one_control_plane_reaches_the_others() {
    let etcd = fog_test_etcd::EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let controls: Vec<Running> = (0..2)
        .map(|i| {
            spawn(&[
                "control",
                "--listen",
                "127.0.0.1:0",
                "--data",
                &path(&format!("control{i}")),
                "--store",
                &etcd.url(),
            ])
        })
        .collect();
    // The host knows only the first control plane: it downloads the canary from there.
    let _host = spawn(&[
        "host",
        "--control",
        &controls[0].url(),
        "--data",
        &path("host"),
        "--always-on",
    ]);
    // The second control plane never sent it a byte, yet shows what the first one timed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = fog_tests::request(controls[1].addr, "GET", "/v1/devices", &[], "")
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let devices: Vec<DeviceInfo> = serde_json::from_slice(&reply.body).unwrap();
        if let Some(mbps) = devices.first().and_then(|d| d.throughput_mbps) {
            assert!(mbps.is_finite() && mbps > 0.0, "{devices:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no throughput reached the second control plane: {devices:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
