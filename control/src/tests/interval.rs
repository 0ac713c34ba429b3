//! The heartbeat interval the control plane announces: growing with the fleet, and judging each
//! device's liveness by the interval it was told.

use std::time::{Duration, Instant};

use fog_proto::api::{DeviceInfo, HeartbeatReply};
use fog_proto::auth::{self, Identity};

use super::{admitted, body, request, signed};
use crate::store::SledStore;
use crate::{Control, ControlConfig, heartbeat_interval_for};

#[test]
fn the_interval_is_the_base_up_to_the_rate_then_grows_with_the_fleet_up_to_the_cap() {
    let (base, max) = (Duration::from_secs(1), Duration::from_secs(10));
    let at = |devices| heartbeat_interval_for(devices, base, 2_000.0, max);
    assert_eq!(at(0), base);
    assert_eq!(at(1_000), base);
    assert_eq!(
        at(2_000),
        base,
        "2,000 devices at 1 s are the 2,000 a second allowed"
    );
    assert_eq!(at(5_000), Duration::from_millis(2_500));
    assert_eq!(at(10_000), Duration::from_secs(5));
    assert_eq!(at(20_000), max);
    assert_eq!(at(1_000_000), max, "capped");
    // A rate of 0 (no heartbeats wanted) and a cap below the base are not honoured literally.
    assert_eq!(heartbeat_interval_for(10, base, 0.0, max), max);
    assert_eq!(
        heartbeat_interval_for(10_000, base, 2_000.0, base / 2),
        base
    );
}

/// Device `key` heartbeats once (answered at once: it sends no digest); the interval it is told.
async fn heartbeat(control: &std::sync::Arc<Control>, key: &Identity) -> Duration {
    let id = auth::device_id(&key.public_hex());
    let path = format!("/v1/devices/{id}/heartbeat");
    let beat = br#"{"harvestable":true,"cpu_free":1.0,"mem_free_mb":1024.0}"#.to_vec();
    let answered = control.handle(signed(key, "POST", &path, beat, "")).await;
    assert_eq!(answered.status(), 200);
    let reply: HeartbeatReply = serde_json::from_slice(&body(answered).await).unwrap();
    Duration::from_millis(reply.heartbeat_interval_ms)
}

async fn alive(control: &std::sync::Arc<Control>, key: &Identity) -> bool {
    let id = auth::device_id(&key.public_hex());
    let answered = control
        .handle(request(
            "GET",
            &format!("/v1/devices/{id}"),
            &[],
            Vec::new(),
        ))
        .await;
    assert_eq!(answered.status(), 200);
    let info: DeviceInfo = serde_json::from_slice(&body(answered).await).unwrap();
    info.alive
}

#[tokio::test]
async fn a_device_told_a_longer_interval_is_not_declared_dead_in_between() {
    // 200 ms intervals while the fleet sends at most 2 heartbeats a second: with two devices
    // heard from, the interval is 1 s.
    let control = Control::new(
        std::sync::Arc::new(SledStore::temporary().unwrap()),
        ControlConfig {
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_rate: 2.0,
            max_heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            ..ControlConfig::default()
        },
    );
    let (first, second) = (Identity::generate(), Identity::generate());
    for key in [&first, &second] {
        let registration = admitted(
            &control,
            br#"{"region":"r","cpu":1,"mem_mb":1024,"disk_mb":1024}"#,
        );
        let registered = control
            .handle(signed(key, "POST", "/v1/devices", registration, ""))
            .await;
        assert_eq!(registered.status(), 200);
    }
    assert_eq!(
        heartbeat(&control, &first).await,
        Duration::from_millis(200)
    );
    heartbeat(&control, &second).await;
    // The control plane notes the heartbeat between `sent` and its answer, and declares the
    // device dead before `alive` answers: measuring from `sent` to that answer can only
    // overstate the time it stayed alive, never understate it.
    let sent = Instant::now();
    let told = heartbeat(&control, &first).await;
    assert_eq!(told, Duration::from_secs(1), "two devices at 2 a second");
    // Alive for three of the intervals it was told (not three of the base's 200 ms), then dead.
    let deadline = sent + told * 3 + Duration::from_secs(10);
    let dead_after = loop {
        if !alive(&control, &first).await {
            break sent.elapsed();
        }
        assert!(Instant::now() < deadline, "never declared dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dead_after >= told * 3,
        "declared dead {dead_after:?} after its heartbeat, though told to heartbeat every {told:?}"
    );
}
