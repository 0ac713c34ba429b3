//! Placement inputs through the API: asked prices and developers' caps, trust earned by
//! behaviour, and refusals of impossible prices, bids and RTTs that leave nothing changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_proto::api::{self, AppInfo, DeviceInfo};
use fog_proto::auth::{self, Identity};

use super::{Backend, body, on_both_backends, request, signed};
use crate::trust::TrustConfig;
use crate::{Control, ControlConfig};

on_both_backends!(
    bad_prices_bids_capacities_and_rtts_are_refused_and_change_nothing,
    no_app_lands_on_a_device_asking_more_than_its_max_price,
    a_new_device_earns_trust_before_tier_a_and_loses_it_at_once_for_a_refused_ledger_period,
    what_routers_measure_wins_over_what_a_device_claims,
    an_untrusted_primary_keeps_its_app_until_an_eligible_device_exists,
);

/// Register a device asking `price` per CPU-hour; returns its key and id.
async fn register(control: &Arc<Control>, price: f64) -> (Identity, String) {
    let key = Identity::generate();
    let registration = serde_json::json!({
        "region": "r", "cpu": 2.0, "mem_mb": 2048.0, "disk_mb": 2048.0, "price_cpu_hour": price,
        "admission_token": control.admission_token().unwrap(),
    });
    let answer = control
        .handle(signed(
            &key,
            "POST",
            "/v1/devices",
            serde_json::to_vec(&registration).unwrap(),
            "",
        ))
        .await;
    assert_eq!(answer.status(), 200, "{:?}", body(answer).await);
    let id = auth::device_id(&key.public_hex());
    (key, id)
}

/// Send one heartbeat (harvestable, with `extra` fields); returns the status and the body.
async fn heartbeat(
    control: &Arc<Control>,
    key: &Identity,
    id: &str,
    extra: serde_json::Value,
) -> (u16, String) {
    let mut beat =
        serde_json::json!({ "harvestable": true, "cpu_free": 2.0, "mem_free_mb": 2048.0 });
    if let (Some(beat), Some(extra)) = (beat.as_object_mut(), extra.as_object()) {
        beat.extend(extra.clone());
    }
    let answer = control
        .handle(signed(
            key,
            "POST",
            &format!("/v1/devices/{id}/heartbeat"),
            serde_json::to_vec(&beat).unwrap(),
            "",
        ))
        .await;
    let status = answer.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&body(answer).await).into_owned(),
    )
}

async fn publish(control: &Arc<Control>, key: &Identity, meta: serde_json::Value) -> (u16, String) {
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let answer = control
        .handle(signed(key, "POST", "/v1/apps", hello, &meta.to_string()))
        .await;
    let status = answer.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&body(answer).await).into_owned(),
    )
}

async fn devices(control: &Arc<Control>) -> Vec<DeviceInfo> {
    let answer = control
        .handle(request("GET", "/v1/devices", &[], vec![]))
        .await;
    serde_json::from_slice(&body(answer).await).unwrap()
}

async fn app(control: &Arc<Control>, name: &str) -> AppInfo {
    let answer = control
        .handle(request("GET", &format!("/v1/apps/{name}"), &[], vec![]))
        .await;
    serde_json::from_slice(&body(answer).await).unwrap()
}

async fn bad_prices_bids_capacities_and_rtts_are_refused_and_change_nothing(backend: Backend) {
    let control = backend.control();
    // Devices asking impossible prices are not registered.
    for (price, cpu, reason) in [
        (serde_json::json!(-0.5), 2.0, "price must not be negative"),
        (serde_json::json!(1e9), 2.0, "is absurd"),
        (serde_json::json!("NaN"), 2.0, "malformed JSON"),
        (serde_json::json!(0.1), 1e7, "impossible for one device"),
    ] {
        let registration = serde_json::json!({
            "region": "r", "cpu": cpu, "mem_mb": 2048.0, "disk_mb": 2048.0, "price_cpu_hour": price,
        });
        let answer = control
            .handle(signed(
                &Identity::generate(),
                "POST",
                "/v1/devices",
                serde_json::to_vec(&registration).unwrap(),
                "",
            ))
            .await;
        assert_eq!(answer.status(), 400, "{price}");
        let text = String::from_utf8_lossy(&body(answer).await).into_owned();
        assert!(text.contains(reason), "{price}: {text}");
    }
    assert!(devices(&control).await.is_empty());
    // Apps with an impossible cap or an unknown bid are not published.
    let developer = Identity::generate();
    for (terms, reason) in [
        (
            serde_json::json!({"max_price": -1.0}),
            "must not be negative",
        ),
        (serde_json::json!({"max_price": 5000.0}), "is absurd"),
        (serde_json::json!({"bid": "auction"}), "unknown variant"),
    ] {
        let mut meta = serde_json::json!({"name": "hello", "tier": "B"});
        meta.as_object_mut()
            .unwrap()
            .extend(terms.as_object().unwrap().clone());
        let (status, text) = publish(&control, &developer, meta).await;
        assert_eq!(status, 400, "{terms}: {text}");
        assert!(text.contains(reason), "{terms}: {text}");
    }
    let listed = control
        .handle(request("GET", "/v1/apps", &[], vec![]))
        .await;
    assert_eq!(&body(listed).await[..], b"[]");
    // A heartbeat claiming an impossible RTT is refused whole: the device stays down.
    let (key, id) = register(&control, 0.1).await;
    let (status, text) = heartbeat(
        &control,
        &key,
        &id,
        serde_json::json!({"attached": [{"router": "r1", "rtt_us": 3_600_000_000u64}]}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("is impossible"), "{text}");
    let (status, text) = heartbeat(
        &control,
        &key,
        &id,
        serde_json::json!({"attached": [{"router": "r1", "rtt_us": -5}]}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    for (claim, reason) in [
        (
            serde_json::json!({"cpu_free": 1e9}),
            "impossible for one device",
        ),
        (serde_json::json!({"battery": 7.0}), "not in [0, 1]"),
    ] {
        let (status, text) = heartbeat(&control, &key, &id, claim.clone()).await;
        assert_eq!(status, 400, "{claim}: {text}");
        assert!(text.contains(reason), "{claim}: {text}");
    }
    let listed = devices(&control).await;
    assert!(!listed[0].alive && listed[0].rtt_ms.is_none());
    let (status, _) = heartbeat(&control, &key, &id, serde_json::json!({})).await;
    assert_eq!(status, 200);
    assert!(devices(&control).await[0].alive);
}

async fn no_app_lands_on_a_device_asking_more_than_its_max_price(backend: Backend) {
    let control = backend.control();
    let (dear_key, dear) = register(&control, 0.50).await;
    let (cheap_key, cheap) = register(&control, 0.05).await;
    for (key, id) in [(&dear_key, &dear), (&cheap_key, &cheap)] {
        let (status, text) = heartbeat(&control, key, id, serde_json::json!({})).await;
        assert_eq!(status, 200, "{text}");
    }
    let listed = devices(&control).await;
    let price_of = |id: &str| listed.iter().find(|d| d.id == id).unwrap().price_cpu_hour;
    assert_eq!((price_of(&dear), price_of(&cheap)), (0.50, 0.05));
    let developer = Identity::generate();
    let meta = serde_json::json!({"name": "capped", "tier": "B", "replicas": 2, "max_price": 0.1, "bid": "spot"});
    let (status, text) = publish(&control, &developer, meta).await;
    assert_eq!(status, 201, "{text}");
    let meta = serde_json::json!({"name": "single", "tier": "B", "max_price": 0.1});
    assert_eq!(publish(&control, &developer, meta).await.0, 201);
    control.reconcile().unwrap();
    // Two replicas need two devices under 0.1: only one is.
    let capped = app(&control, "capped").await;
    assert_eq!((capped.max_price, capped.bid), (Some(0.1), api::Bid::Spot));
    assert!(capped.assigned.is_empty(), "{capped:?}");
    let problem = capped.problem.unwrap();
    assert!(
        problem.contains("1 above the app's maximum price of 0.1 per CPU-hour"),
        "{problem}"
    );
    // One replica goes to the cheap device, never the dear one.
    let single = app(&control, "single").await;
    assert_eq!(single.assigned, [cheap], "{single:?}");
}

/// Send a ledger period with arithmetic that does not add up (refused: trust falls below every
/// tier's minimum at once); returns the heartbeat's status and body.
async fn cheat(control: &Arc<Control>, key: &Identity, id: &str) -> (u16, String) {
    let period = api::LedgerPeriod {
        device: id.to_string(),
        start_ms: 1,
        end_ms: 2,
        price_cpu_hour: 0.1,
        entries: vec![api::LedgerEntry {
            app: "hello".into(),
            fuel: 1,
            credits: 1000.0,
        }],
        total_credits: 1000.0,
    };
    let signed_period = api::SignedPeriod {
        signature: key.sign_bytes(&period.signed_bytes()),
        period,
    };
    heartbeat(
        control,
        key,
        id,
        serde_json::json!({"periods": [signed_period]}),
    )
    .await
}

/// Heartbeat every device of `fleet` and reconcile, every 50 ms, until `done` holds of `hello`
/// (or fail after 10 s).
async fn until_hello(
    control: &Arc<Control>,
    fleet: &[(Identity, String)],
    what: &str,
    done: impl Fn(&AppInfo) -> bool,
) -> AppInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (key, id) in fleet {
            assert_eq!(
                heartbeat(control, key, id, serde_json::json!({})).await.0,
                200
            );
        }
        control.reconcile().unwrap();
        let info = app(control, "hello").await;
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {info:?} {:?}",
            devices(control).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_untrusted_primary_keeps_its_app_until_an_eligible_device_exists(backend: Backend) {
    // Trust is earned after about 0.1 s of heartbeats.
    let config = ControlConfig {
        trust: TrustConfig {
            prior_weight_s: 0.7,
            ..TrustConfig::default()
        },
        ..ControlConfig::default()
    };
    let control = Control::new(backend.store(), config);
    let (key, only) = register(&control, 0.1).await;
    let mut fleet = vec![(key, only.clone())];
    let developer = Identity::generate();
    let meta = serde_json::json!({"name": "hello", "tier": "B"});
    assert_eq!(publish(&control, &developer, meta).await.0, 201);
    until_hello(&control, &fleet, "not placed on the one device", |a| {
        a.assigned == [only.clone()]
    })
    .await;
    // The primary's trust falls below tier B's minimum, and no other device exists.
    let (status, text) = cheat(&control, &fleet[0].0, &only).await;
    assert_eq!(status, 400, "{text}");
    let trust = |d: &[DeviceInfo], id: &str| d.iter().find(|d| d.id == id).unwrap().trust;
    assert!(trust(&devices(&control).await, &only) < crate::trust::MIN_TRUST_B);
    // Past the control plane's start-up grace (reconcile places nothing before), every plan
    // keeps the app where it is.
    let grace = control.heartbeat_interval() * control.config.missed_heartbeats;
    let info = until_hello(&control, &fleet, "the app lost its only place", |a| {
        assert_eq!(a.assigned, std::slice::from_ref(&only), "{a:?}");
        control.started.elapsed() > grace + Duration::from_millis(500)
    })
    .await;
    assert_eq!(info.assigned, std::slice::from_ref(&only));
    // A trusted device appears: the app is moved there (the handover waits for real hosts).
    let (key, trusted) = register(&control, 0.1).await;
    fleet.push((key, trusted.clone()));
    let moving = format!("{only} -> {trusted}");
    until_hello(&control, &fleet, "not moved to the trusted device", |a| {
        a.assigned == [trusted.clone()]
            || a.moving.as_deref().is_some_and(|m| m.starts_with(&moving))
    })
    .await;
}

async fn a_new_device_earns_trust_before_tier_a_and_loses_it_at_once_for_a_refused_ledger_period(
    backend: Backend,
) {
    // A small prior weight: trust 0.3 is earned after about 0.1 s of heartbeats, not 9 s.
    let config = ControlConfig {
        trust: TrustConfig {
            prior_weight_s: 0.7,
            ..TrustConfig::default()
        },
        ..ControlConfig::default()
    };
    let store = backend.store();
    let control = Control::new(store.clone(), config.clone());
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let (key, id) = register(&control, 0.1).await;
        assert_eq!(
            heartbeat(&control, &key, &id, serde_json::json!({}))
                .await
                .0,
            200
        );
        fleet.push((key, id));
    }
    let developer = Identity::generate();
    let meta = serde_json::json!({"name": "hello", "tier": "A"});
    assert_eq!(publish(&control, &developer, meta).await.0, 201);
    control.reconcile().unwrap();
    let info = app(&control, "hello").await;
    let problem = info.problem.unwrap_or_default();
    assert!(
        problem.contains("3 below the app's minimum trust"),
        "{problem}"
    );
    for device in devices(&control).await {
        assert!(device.trust < 0.3, "{device:?}");
        assert!(
            device.trust_reasons.iter().any(|r| r.contains("new")),
            "{device:?}"
        );
    }
    // Heartbeats 50 ms apart earn trust until placement accepts the devices.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (key, id) in &fleet {
            assert_eq!(
                heartbeat(&control, key, id, serde_json::json!({})).await.0,
                200
            );
        }
        control.reconcile().unwrap();
        if app(&control, "hello").await.assigned.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", devices(&control).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A ledger period with arithmetic that does not add up: refused, and the device's trust
    // falls below tier A's minimum at once, so it loses its replica (the follower's, so no
    // handover has to wait for real hosts).
    let follower = app(&control, "hello").await.assigned[1].clone();
    let (key, id) = fleet.iter().find(|(_, id)| *id == follower).unwrap();
    let (status, text) = cheat(&control, key, id).await;
    assert_eq!(status, 400, "{text}");
    let cheat = devices(&control)
        .await
        .into_iter()
        .find(|d| d.id == *id)
        .unwrap();
    assert!(cheat.trust < 0.3, "{cheat:?}");
    assert!(
        cheat
            .trust_reasons
            .contains(&"1 ledger periods refused".to_string()),
        "{cheat:?}"
    );
    // Every device keeps heartbeating (the cheater stays alive: trust alone moves the replica)
    // until reconcile runs past the control plane's start-up grace.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (key, id) in &fleet {
            assert_eq!(
                heartbeat(&control, key, id, serde_json::json!({})).await.0,
                200
            );
        }
        control.reconcile().unwrap();
        let info = app(&control, "hello").await;
        if !info.assigned.contains(id) && info.assigned.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refusal outlives a restart of the control plane.
    let restarted = Control::new(store, config);
    let cheat = devices(&restarted)
        .await
        .into_iter()
        .find(|d| d.id == *id)
        .unwrap();
    assert!(
        cheat.trust < 0.3
            && cheat
                .trust_reasons
                .contains(&"1 ledger periods refused".to_string()),
        "{cheat:?}"
    );
}

async fn what_routers_measure_wins_over_what_a_device_claims(backend: Backend) {
    let router = Identity::generate();
    let control = Control::new(
        backend.store(),
        ControlConfig {
            trusted_routers: vec![router.public_hex()],
            ..ControlConfig::default()
        },
    );
    let router_id = auth::device_id(&router.public_hex());
    let endpoint = serde_json::to_vec(&api::AttachInfo {
        addr: "127.0.0.1:7444".into(),
        key: hex::encode([3u8; 32]),
    })
    .unwrap();
    let answer = control
        .handle(signed(&router, "POST", "/v1/attach", endpoint, ""))
        .await;
    assert_eq!(answer.status(), 200);
    let (key, id) = register(&control, 0.1).await;
    // The device says its link is 1 ms.
    let claim = serde_json::json!({"attached": [{"router": router_id, "rtt_us": 1000}]});
    assert_eq!(heartbeat(&control, &key, &id, claim).await.0, 200);
    let device = devices(&control).await.remove(0);
    assert_eq!(
        (device.rtt_ms, device.rtt_source),
        (Some(1.0), Some(api::RttSource::Device))
    );
    let report = |rtt_us: u64| {
        serde_json::to_vec(&api::RouterRtts {
            links: vec![api::DeviceRtt {
                device: id.clone(),
                rtt_us,
            }],
        })
        .unwrap()
    };
    // Only trusted routers report, and only possible RTTs: refused, nothing changed.
    let stranger = Identity::generate();
    let answer = control
        .handle(signed(&stranger, "POST", "/v1/attach/rtts", report(5), ""))
        .await;
    assert_eq!(answer.status(), 403);
    let answer = control
        .handle(signed(
            &router,
            "POST",
            "/v1/attach/rtts",
            report(u64::MAX),
            "",
        ))
        .await;
    assert_eq!(answer.status(), 400);
    assert_eq!(devices(&control).await[0].rtt_ms, Some(1.0));
    // The router measures 120 ms on that link: placement uses that.
    let answer = control
        .handle(signed(
            &router,
            "POST",
            "/v1/attach/rtts",
            report(120_000),
            "",
        ))
        .await;
    assert_eq!(answer.status(), 200);
    let device = devices(&control).await.remove(0);
    assert_eq!(
        (device.rtt_ms, device.rtt_source),
        (Some(120.0), Some(api::RttSource::Routers))
    );
}

/// `fog control --placement greedy` (benchmarks only) runs the greedy baseline on the inputs
/// NSGA-II gets: on two devices a router measured at 200 ms and 5 ms, NSGA-II puts the replica on
/// the near one, the greedy baseline on the first device in its order whatever its latency.
/// Sled only: the switch is in the planner, not the store.
#[tokio::test]
async fn the_greedy_placement_switch_places_as_the_greedy_baseline_on_the_same_inputs() {
    use fog_scheduler::placement::{PlacementConfig, PlacementStrategy};
    for strategy in [PlacementStrategy::Nsga2, PlacementStrategy::Greedy] {
        let router = Identity::generate();
        let defaults = ControlConfig::default();
        let control = Control::new(
            Backend::sled().store(),
            ControlConfig {
                trusted_routers: vec![router.public_hex()],
                placement: PlacementConfig {
                    strategy,
                    ..defaults.placement.clone()
                },
                ..defaults
            },
        );
        let endpoint = serde_json::to_vec(&api::AttachInfo {
            addr: "127.0.0.1:7444".into(),
            key: hex::encode([3u8; 32]),
        })
        .unwrap();
        let answer = control
            .handle(signed(&router, "POST", "/v1/attach", endpoint, ""))
            .await;
        assert_eq!(answer.status(), 200);
        let mut fleet = vec![register(&control, 0.1).await, register(&control, 0.1).await];
        // The greedy baseline takes devices in the registry's order (by id): the first is far.
        fleet.sort_by(|a, b| a.1.cmp(&b.1));
        let (far, near) = (fleet[0].1.clone(), fleet[1].1.clone());
        for (key, id) in &fleet {
            let (status, text) = heartbeat(&control, key, id, serde_json::json!({})).await;
            assert_eq!(status, 200, "{text}");
        }
        let links = [(&far, 200_000), (&near, 5_000)]
            .into_iter()
            .map(|(device, rtt_us)| api::DeviceRtt {
                device: device.clone(),
                rtt_us,
            })
            .collect();
        let report = serde_json::to_vec(&api::RouterRtts { links }).unwrap();
        let answer = control
            .handle(signed(&router, "POST", "/v1/attach/rtts", report, ""))
            .await;
        assert_eq!(answer.status(), 200);
        let meta = serde_json::json!({"name": "hello", "tier": "B", "replicas": 1});
        assert_eq!(publish(&control, &Identity::generate(), meta).await.0, 201);
        control.reconcile().unwrap();
        let expected = match strategy {
            PlacementStrategy::Nsga2 => near,
            PlacementStrategy::Greedy => far,
        };
        let info = app(&control, "hello").await;
        assert_eq!(
            info.assigned,
            vec![expected],
            "{strategy:?}: {info:?}\n{:?}",
            devices(&control).await
        );
    }
}
