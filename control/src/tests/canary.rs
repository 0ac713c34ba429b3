//! Spot checks through the API, without sockets: the canary is assigned and served, only trusted
//! routers carry checks, only the router that took a check may answer it, and answers are judged
//! against the control plane's own computation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_proto::api::{DeviceInfo, HeartbeatReply};
use fog_proto::auth::{self, Identity};
use fog_proto::canary::{self, Answer, Answers, Challenge, Challenges, Reply};

use super::{body, signed};
use crate::canary::CanaryConfig;
use crate::store::SledStore;
use crate::{Control, ControlConfig};

struct Setup {
    control: Arc<Control>,
    device: String,
    router: Identity,
    other_router: Identity,
}

/// A control plane with spot checks every millisecond, one device that reports its canary
/// running, and two trusted routers.
async fn setup() -> Setup {
    let component = bytes::Bytes::from(std::fs::read(fog_test_programs::CANARY).unwrap());
    let sha = auth::sha256_hex(&component);
    let (router, other_router) = (Identity::generate(), Identity::generate());
    let control = Control::new(
        Arc::new(SledStore::temporary().unwrap()),
        ControlConfig {
            trusted_routers: vec![router.public_hex(), other_router.public_hex()],
            canary: Some(CanaryConfig {
                component: component.clone(),
                interval: Duration::from_millis(1),
            }),
            ..ControlConfig::default()
        },
    );
    let key = Identity::generate();
    let device = auth::device_id(&key.public_hex());
    let registration = super::admitted(
        &control,
        br#"{"region":"r","cpu":1,"mem_mb":4096,"disk_mb":4096}"#,
    );
    let registered = control
        .handle(signed(&key, "POST", "/v1/devices", registration, ""))
        .await;
    assert_eq!(registered.status(), 200);
    let heartbeat = serde_json::json!({
        "harvestable": true, "cpu_free": 1.0, "mem_free_mb": 4096.0,
        "running": [{ "app": canary::APP, "sha256": sha, "in_flight": 0, "requests": 0,
                      "failures": 0, "fuel": 0 }],
    });
    let path = format!("/v1/devices/{device}/heartbeat");
    let reply = control
        .handle(signed(
            &key,
            "POST",
            &path,
            serde_json::to_vec(&heartbeat).unwrap(),
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    // Every device is assigned the canary, and can fetch it by its hash.
    let reply: HeartbeatReply = serde_json::from_slice(&body(reply).await).unwrap();
    assert!(
        reply
            .assignments
            .iter()
            .any(|a| a.manifest.name == canary::APP && a.sha256 == sha),
        "{reply:?}"
    );
    let blob = control
        .handle(super::request(
            "GET",
            &format!("/v1/blobs/{sha}"),
            &[],
            vec![],
        ))
        .await;
    assert_eq!(blob.status(), 200);
    assert_eq!(body(blob).await, component);
    // Checks are issued by the leader only.
    control.reconcile_if_leading().unwrap();
    assert!(control.is_leading());
    Setup {
        control,
        device,
        router,
        other_router,
    }
}

/// Ask for checks as `router` until one comes (the first is due one interval after the canary
/// is first seen running).
async fn next_check(control: &Arc<Control>, router: &Identity) -> Challenge {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = control
            .handle(signed(
                router,
                "POST",
                "/v1/canary/challenges",
                b"{}".to_vec(),
                "",
            ))
            .await;
        assert_eq!(reply.status(), 200);
        let Challenges { mut challenges } = serde_json::from_slice(&body(reply).await).unwrap();
        if let Some(challenge) = challenges.pop() {
            return challenge;
        }
        assert!(Instant::now() < deadline, "no check was issued");
        tokio::task::yield_now().await;
    }
}

/// The nonce and rounds a check's path asks for.
fn parse(path: &str) -> ([u8; 16], u32) {
    let (nonce, rounds) = path.trim_start_matches('/').split_once("?rounds=").unwrap();
    let nonce: [u8; 16] = hex::decode(nonce).unwrap().try_into().unwrap();
    (nonce, rounds.parse().unwrap())
}

/// Report `body` (status 200) for `check` as `router`; how many answers were judged.
async fn answer(control: &Arc<Control>, router: &Identity, check: &Challenge, body_: &str) -> u64 {
    let answers = Answers {
        answers: vec![Answer {
            id: check.id.clone(),
            reply: Some(Reply {
                status: 200,
                body_hex: hex::encode(body_),
            }),
            error: None,
        }],
    };
    let reply = control
        .handle(signed(
            router,
            "POST",
            "/v1/canary/answers",
            serde_json::to_vec(&answers).unwrap(),
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    let judged: serde_json::Value = serde_json::from_slice(&body(reply).await).unwrap();
    judged["judged"].as_u64().unwrap()
}

fn device(control: &Arc<Control>, id: &str) -> DeviceInfo {
    control
        .device_infos()
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .unwrap()
}

#[tokio::test]
async fn only_trusted_routers_carry_checks() {
    let setup = setup().await;
    let stranger = Identity::generate();
    for path in ["/v1/canary/challenges", "/v1/canary/answers"] {
        let refused = setup
            .control
            .handle(signed(&stranger, "POST", path, b"{}".to_vec(), ""))
            .await;
        assert_eq!(refused.status(), 403, "{path}");
    }
}

#[tokio::test]
async fn a_right_answer_is_counted_and_a_wrong_one_drops_trust_below_every_tier() {
    let Setup {
        control,
        device: id,
        router,
        other_router,
    } = setup().await;
    let check = next_check(&control, &router).await;
    assert_eq!(check.device, id);
    let (nonce, rounds) = parse(&check.path);
    let right = canary::expected(&nonce, rounds);
    // Only the router that took the check may answer it.
    assert_eq!(answer(&control, &other_router, &check, &right).await, 0);
    assert_eq!(answer(&control, &router, &check, &right).await, 1);
    // Once.
    assert_eq!(answer(&control, &router, &check, &right).await, 0);
    let checked = device(&control, &id);
    assert_eq!(checked.canary_checks, 1);
    assert!(
        checked.trust >= 0.2
            && checked
                .trust_reasons
                .contains(&"canary: 1 checks right".to_string()),
        "{checked:#?}"
    );

    // The next check is a fresh nonce; the previous answer replayed is wrong.
    let check = next_check(&control, &router).await;
    assert_ne!(parse(&check.path).0, nonce);
    assert_eq!(answer(&control, &router, &check, &right).await, 1);
    let caught = device(&control, &id);
    assert!(caught.trust < crate::trust::MIN_TRUST_B, "{caught:#?}");
    assert!(
        caught
            .trust_reasons
            .iter()
            .any(|r| r.starts_with("canary: wrong answer at") && r.contains("1 of 2 checks")),
        "{caught:#?}"
    );
}

#[tokio::test]
async fn no_developer_may_publish_under_the_canary_name() {
    let setup = setup().await;
    let developer = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let meta = format!(r#"{{"name":"{}","tier":"B"}}"#, canary::APP);
    let refused = setup
        .control
        .handle(signed(&developer, "POST", "/v1/apps", hello, &meta))
        .await;
    assert_eq!(refused.status(), 400);
    let text = body(refused).await;
    assert!(
        String::from_utf8_lossy(&text).contains("reserved"),
        "{text:?}"
    );
}

#[tokio::test]
async fn an_unanswered_check_is_a_failed_check_with_its_own_reason() {
    let Setup {
        control,
        device: id,
        router,
        ..
    } = setup().await;
    let check = next_check(&control, &router).await;
    let answers = Answers {
        answers: vec![Answer {
            id: check.id.clone(),
            reply: None,
            error: Some("the device did not answer in time".into()),
        }],
    };
    let reply = control
        .handle(signed(
            &router,
            "POST",
            "/v1/canary/answers",
            serde_json::to_vec(&answers).unwrap(),
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    let missed = device(&control, &id);
    assert_eq!(missed.canary_checks, 1);
    assert!(
        missed
            .trust_reasons
            .iter()
            .any(|r| r.starts_with("canary: no answer at"))
            && !missed.trust_reasons.iter().any(|r| r.contains("wrong")),
        "{missed:#?}"
    );
    // A minute of bad evidence: a new device falls below tier B's minimum for a while, but it
    // is not marked as a cheat.
    assert!(missed.trust < 0.2, "{missed:#?}");
}
