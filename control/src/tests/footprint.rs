//! Memory demand from measured footprints: a replica is planned with the linear memory its
//! instances really held (reported in heartbeats), not its whole memory limit, so a device takes
//! as many idle apps as its memory allows and apps whose footprint grows are spread.

use std::time::Duration;

use fog_proto::auth::{self, Identity};

use super::{Backend, admitted, on_both_backends, signed};
use crate::store::{PlacementRecord, Table, encode};
use crate::{Control, ControlConfig};

on_both_backends!(
    idle_apps_measured_by_their_host_fit_where_their_limits_would_not,
    apps_whose_footprint_grows_are_spread_off_the_device_they_overfill,
);

/// Apps of 64 MiB memory limit each (the default) on the first of two devices that offer
/// 200 MiB each.
const APPS: usize = 5;

/// Registers two devices, publishes [`APPS`] tier-B apps, leaves them all on the first device
/// (as an earlier plan did), has the first device report each running with the memory
/// `footprint(i)` returns (MiB; `None`: the host does not measure), reconciles, and returns
/// the apps' events and where each was placed.
async fn on_one_device_then_reconcile(
    backend: &Backend,
    footprint: impl Fn(usize) -> Option<u64>,
) -> (Vec<String>, Vec<Vec<String>>) {
    let control = Control::new(
        backend.store(),
        ControlConfig {
            replan_every: Duration::from_secs(3600),
            ..ControlConfig::default()
        },
    );
    let devices: Vec<Identity> = (0..2).map(|_| Identity::generate()).collect();
    let ids: Vec<String> = devices
        .iter()
        .map(|d| auth::device_id(&d.public_hex()))
        .collect();
    for device in &devices {
        let registration = admitted(
            &control,
            br#"{"region":"r","cpu":4,"mem_mb":200,"disk_mb":4096}"#,
        );
        let registered = control
            .handle(signed(device, "POST", "/v1/devices", registration, ""))
            .await;
        assert_eq!(registered.status(), 200);
    }
    let developer = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let names: Vec<String> = (0..APPS).map(|i| format!("app{i}")).collect();
    let mut sha = String::new();
    for name in &names {
        let meta = format!(r#"{{"name":"{name}","tier":"B"}}"#);
        let published = control
            .handle(signed(&developer, "POST", "/v1/apps", hello.clone(), &meta))
            .await;
        assert_eq!(published.status(), 201);
        let app = control.app(name).unwrap();
        assert_eq!(app.limits.memory_bytes, 64 << 20);
        sha = app.sha256;
        let first = PlacementRecord {
            devices: vec![ids[0].clone()],
            problem: None,
        };
        control
            .store
            .put(Table::Placements, name, &encode(&first))
            .unwrap();
    }
    let heartbeat = |device: usize| {
        let running: Vec<serde_json::Value> = if device == 0 {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut app = serde_json::json!({
                        "app": name, "sha256": sha, "in_flight": 0, "requests": 1,
                        "failures": 0, "fuel": 0,
                    });
                    if let Some(mb) = footprint(i) {
                        app["memory_bytes"] = serde_json::json!(mb << 20);
                    }
                    app
                })
                .collect()
        } else {
            Vec::new()
        };
        let body = serde_json::json!({
            "harvestable": true, "cpu_free": 4.0, "mem_free_mb": 200.0, "running": running,
        });
        signed(
            &devices[device],
            "POST",
            &format!("/v1/devices/{}/heartbeat", ids[device]),
            serde_json::to_vec(&body).unwrap(),
            "",
        )
    };
    // Past the start-up grace, with both devices alive.
    let grace = control.config.heartbeat_interval * control.config.missed_heartbeats;
    tokio::time::sleep_until((control.started + grace).into()).await;
    for device in 0..2 {
        assert_eq!(control.handle(heartbeat(device)).await.status(), 200);
    }
    control.reconcile().unwrap();
    let mut events = Vec::new();
    let mut placed = Vec::new();
    for name in &names {
        let info = control.app_info(&control.app(name).unwrap()).unwrap();
        events.extend(info.events);
        placed.push(info.assigned);
    }
    (events, placed)
}

async fn idle_apps_measured_by_their_host_fit_where_their_limits_would_not(backend: Backend) {
    // Five 64 MiB limits do not fit 200 MiB: unmeasured, some must move.
    let (events, _) = on_one_device_then_reconcile(&backend, |_| None).await;
    assert!(
        events.iter().any(|e| e.contains("moving from")),
        "unmeasured apps are planned with their limits: {events:?}"
    );
    // Measured idle (no instance alive, nothing held), each costs the floor: all stay.
    let (events, placed) = on_one_device_then_reconcile(&backend, |_| Some(0)).await;
    assert!(
        !events.iter().any(|e| e.contains("moving from")),
        "idle apps stay where they are: {events:?}"
    );
    assert!(placed.windows(2).all(|w| w[0] == w[1]), "{placed:?}");
}

async fn apps_whose_footprint_grows_are_spread_off_the_device_they_overfill(backend: Backend) {
    // Four apps now hold 60 MiB each (under their 64 MiB limit): 240 MiB on a device offering
    // 200.
    let (events, placed) =
        on_one_device_then_reconcile(&backend, |i| Some(if i < 4 { 60 } else { 0 })).await;
    assert!(
        events.iter().any(|e| e.contains("moving from")),
        "the overfilled device's apps are spread: {events:?}"
    );
    let first = &placed[4][0];
    assert!(
        placed[..4]
            .iter()
            .any(|devices| !devices.contains(first) || devices.len() > 1),
        "one of the big apps leaves the first device: {placed:?}"
    );
}
