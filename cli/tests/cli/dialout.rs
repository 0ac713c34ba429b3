//! Hosts that accept no connection: started without `--listen`, they dial out to the routers
//! the control plane names and are served through those connections; routers refuse hosts whose
//! key the control plane does not know, and splice only devices an assignment pairs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fog_htx::attach::ATTACH_PROLOGUE;
use fog_htx::conn::{self, Connection};
use fog_htx::dial::data_plane_config;
use fog_htx::handshake::StaticKey;
use fog_proto::api::{AttachPoint, DeviceInfo};
use fog_proto::auth::Identity;
use fog_test_programs as programs;

use crate::publish::{Fog, raw};

/// Publish `hello` (tier B, one replica).
fn publish_hello(fog: &Fog) {
    let (code, _, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
}

/// Wait until `done` holds of the devices, or fail after `limit`.
async fn wait_devices(
    fog: &Fog,
    limit: Duration,
    what: &str,
    done: impl Fn(&[DeviceInfo]) -> bool,
) -> Vec<DeviceInfo> {
    let deadline = Instant::now() + limit;
    loop {
        let devices = fog.devices();
        if done(&devices) {
            return devices;
        }
        assert!(Instant::now() < deadline, "{what}: {devices:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until a GET of `/apps/hello/` through `router` answers 200.
async fn wait_served(router: std::net::SocketAddr, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let reply = fog_tests::request(router, "GET", "/apps/hello/", &[], "").await;
        match reply {
            Ok(reply) if reply.status == 200 => return,
            other => assert!(
                Instant::now() < deadline,
                "{what}: {:?}",
                other.map(|r| (r.status, r.text()))
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The attach endpoints the control plane lists.
async fn attach_points(fog: &Fog) -> Vec<AttachPoint> {
    let reply = fog_tests::request(fog.control.addr, "GET", "/v1/attach", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

/// Attach to the router at `point` as `device` with `key`; the connection as the router left
/// it.
async fn attach_as(point: &AttachPoint, device: &str, key: &StaticKey) -> Connection {
    let router_key: [u8; 32] = hex::decode(&point.key).unwrap().try_into().unwrap();
    let socket = tokio::net::TcpStream::connect(&point.addr).await.unwrap();
    conn::connect_with_hello(
        socket,
        key,
        &router_key,
        ATTACH_PROLOGUE,
        &fog_htx::attach::hello(device),
        data_plane_config(),
    )
    .await
    .expect("the Noise handshake itself completes")
}

/// Wait for the router to close `connection`; its reason.
async fn closed_reason(connection: &Connection) -> String {
    let accepted = tokio::time::timeout(Duration::from_secs(10), connection.accept())
        .await
        .expect("the router decides within 10 s");
    assert!(accepted.is_none(), "the router opened a stream instead");
    connection.error().expect("a reason").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_listen_serves_through_two_routers_and_survives_losing_one() {
    let fog = Fog::start(1);
    let mut second = fog.second_router();
    publish_hello(&fog);
    // The host never listens: it says so, and the control plane knows no address for it.
    assert!(
        fog.hosts[0].line.contains("dials out"),
        "{}",
        fog.hosts[0].line
    );
    let devices = wait_devices(
        &fog,
        Duration::from_secs(15),
        "the host did not attach to both routers with a measured RTT",
        |d| d[0].attached.len() == 2 && d[0].attached.iter().all(|l| l.rtt_us > 0),
    )
    .await;
    assert_eq!(devices[0].addr, None);
    assert_eq!(devices[0].htx.as_ref().unwrap().addr, None);
    // `fog devices` says how the device is reached and the RTT of each connection.
    let (code, out, err) = fog.fog(&["devices"]);
    assert_eq!(code, 0, "{err}");
    let routers: Vec<&str> = devices[0]
        .attached
        .iter()
        .map(|l| l.router.as_str())
        .collect();
    assert!(
        out.contains(&format!("dial-out via {}", routers.join(","))),
        "{out}"
    );
    assert!(out.contains("ms,") && out.contains("ms "), "{out}");

    wait_served(fog.router.addr, Duration::from_secs(15), "router 1").await;
    wait_served(second.addr, Duration::from_secs(15), "router 2").await;

    // Load through the first router while the second is killed: nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let router = fog.router.addr;
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match fog_tests::request(router, "GET", "/apps/hello/", &[], "").await {
                    Ok(reply) if reply.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{:?}", other.map(|r| (r.status, r.text()))));
                    }
                }
            }
            errors
        })
    };
    // Requests are flowing before the kill, and many more succeed after it.
    let served_at_least = |n: u64| {
        let ok = ok.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while ok.load(Ordering::Relaxed) < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} served",
                    ok.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    served_at_least(50).await;
    second.kill();
    served_at_least(ok.load(Ordering::Relaxed) + 200).await;
    stop.store(true, Ordering::Relaxed);
    let errors = load.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("one router killed: {ok} served through the other, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0, "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reattaches_after_its_router_restarts() {
    let mut fog = Fog::start(1);
    publish_hello(&fog);
    wait_served(
        fog.router.addr,
        Duration::from_secs(15),
        "before the restart",
    )
    .await;
    let before = attach_points(&fog).await;
    fog.restart_router(&[]);
    // Same router (same key), a new attach port: the host learns it and dials it.
    let restarted = Instant::now();
    wait_served(
        fog.router.addr,
        Duration::from_secs(15),
        "after the restart",
    )
    .await;
    let after = attach_points(&fog).await;
    println!(
        "served again {:?} after the router restarted",
        restarted.elapsed()
    );
    assert_eq!(before.len(), 1);
    assert_eq!(after.len(), 1);
    assert_eq!(before[0].router, after[0].router);
    assert_ne!(
        before[0].addr, after[0].addr,
        "the restarted router listens elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_refuse_unknown_host_keys_and_hosts_claiming_another_devices_id() {
    let fog = Fog::start(1);
    let devices = wait_devices(
        &fog,
        Duration::from_secs(15),
        "the host never attached",
        |d| d.len() == 1 && !d[0].attached.is_empty(),
    )
    .await;
    let points = attach_points(&fog).await;
    let point = &points[0];
    let stranger = StaticKey::generate();

    // A key and id the control plane never heard of.
    let connection = attach_as(point, "0123456789abcdef", &stranger).await;
    let reason = closed_reason(&connection).await;
    assert!(
        reason.contains("no device 0123456789abcdef is registered"),
        "{reason}"
    );

    // The real device's id with another key.
    let victim = &devices[0].id;
    let connection = attach_as(point, victim, &stranger).await;
    let reason = closed_reason(&connection).await;
    assert!(
        reason.contains(&format!("not the one device {victim} announced")),
        "{reason}"
    );

    // The router still serves the real device.
    publish_hello(&fog);
    wait_served(
        fog.router.addr,
        Duration::from_secs(15),
        "after the refusals",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_splice_only_devices_an_assignment_pairs() {
    let fog = Fog::start(1);
    publish_hello(&fog);
    let devices = wait_devices(
        &fog,
        Duration::from_secs(15),
        "the host never attached",
        |d| d.len() == 1 && !d[0].attached.is_empty(),
    )
    .await;
    let host = devices[0].id.clone();

    // A second, legitimate device: registered, its HTX key announced in a signed heartbeat,
    // attached to the router. No assignment pairs it with the host.
    let identity = Identity::generate();
    let device = fog_proto::auth::device_id(&identity.public_hex());
    let key = fog_host::htx_server::static_key(&identity.secret_bytes());
    let registration = serde_json::json!({
        "region": "local", "cpu": 1.0, "mem_mb": 512.0, "disk_mb": 512.0
    });
    let reply = raw(
        &fog,
        &identity,
        "POST",
        "/v1/devices",
        registration.to_string().as_bytes(),
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let heartbeat = serde_json::json!({
        "harvestable": false, "cpu_free": 0.0, "mem_free_mb": 0.0,
        "htx": {"key": hex::encode(key.public)}
    });
    let reply = raw(
        &fog,
        &identity,
        "POST",
        &format!("/v1/devices/{device}/heartbeat"),
        heartbeat.to_string().as_bytes(),
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let points = attach_points(&fog).await;
    let connection = attach_as(&points[0], &device, &key).await;

    let refused = fog_htx::attach::splice(&connection, &host).await;
    match refused {
        Err(fog_htx::HtxError::Refused(reason)) => assert!(
            reason.contains(&format!("no assignment pairs devices {device} and {host}")),
            "{reason}"
        ),
        other => panic!("the router spliced unpaired devices: {other:?}"),
    }
    // Admitted (not closed) all along: only the splice was refused.
    assert!(!connection.is_closed(), "{:?}", connection.error());
}

/// A host that re-dials while the router still holds its older connection has two connections
/// with its key at once. When the one the router admitted last ends, the router keeps the one
/// still open and serves through it at once. (The router's table of attached devices used to
/// hold only the connection admitted last: when that one ended, the host's open connection was
/// forgotten and the router answered "not attached" for as long as it stayed up, while the host,
/// whose connection was fine, had nothing to log or re-dial; `scripts/attach-stall.sh` makes a
/// real host do this by stalling processes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_keeps_serving_a_host_whose_other_connection_ended() {
    let fog = Fog::start(1);
    publish_hello(&fog);
    wait_served(fog.router.addr, Duration::from_secs(15), "before").await;
    let device = fog.devices()[0].id.clone();
    let identity = Identity::from_text(
        &std::fs::read_to_string(fog.dir.path().join("host0/device.key")).unwrap(),
    )
    .unwrap();
    let key = fog_host::htx_server::static_key(&identity.secret_bytes());

    // A second connection with the device's key, as the host's own re-dial would make. The
    // router PINGs a connection once it has admitted it (and, before the fix, had put it in the
    // host's place).
    let points = attach_points(&fog).await;
    let other = attach_as(&points[0], &device, &key).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while other.pings_echoed() == 0 {
        assert!(!other.is_closed(), "refused: {:?}", other.error());
        assert!(
            Instant::now() < deadline,
            "the router never admitted the second connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // That connection ends; the host's own is still open, and the host has no reason to
    // re-dial: every request for the next 3 s is served (the router learns of the end within
    // milliseconds; before the fix, every request after that was held 10 s, then answered 502
    // "not attached").
    other.close("the second connection ends");
    let ended = Instant::now();
    let mut served = 0;
    while ended.elapsed() < Duration::from_secs(3) {
        let reply = fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "").await;
        match reply {
            Ok(reply) if reply.status == 200 => served += 1,
            other => panic!(
                "the router forgot the host's open connection when another of its connections \
                 ended: {:?} after {:?}",
                other.map(|r| (r.status, r.text())),
                ended.elapsed()
            ),
        }
    }
    println!("{served} requests served in the 3 s after the other connection ended");
}
