//! What an app may reach and is given beyond its code: outbound origins and durable writes
//! through publish, the assignments that carry them, and refusals that change nothing.

use std::sync::Arc;

use fog_proto::api::AppInfo;
use fog_proto::auth::{self, Identity};

use super::{Backend, admitted, body, on_both_backends, request, signed};
use crate::Control;

on_both_backends!(
    bad_outbound_origins_are_refused_with_400_and_nothing_is_published,
    publish_durable_reaches_the_hosts_and_a_publish_without_it_turns_it_off,
);

fn hello() -> Vec<u8> {
    std::fs::read(fog_test_programs::HELLO).unwrap()
}

async fn apps(control: &Arc<Control>) -> Vec<AppInfo> {
    let answer = control
        .handle(request("GET", "/v1/apps", &[], vec![]))
        .await;
    serde_json::from_slice(&body(answer).await).unwrap()
}

async fn bad_outbound_origins_are_refused_with_400_and_nothing_is_published(backend: Backend) {
    let control = backend.control();
    let key = Identity::generate();
    for bad in [
        "api.example.com",
        "ftp://example.com",
        "https://example.com/v1",
        "https://user@example.com",
    ] {
        let meta = serde_json::json!({"name": "caller", "tier": "B", "allow_outbound": [bad]});
        let answer = control
            .handle(signed(&key, "POST", "/v1/apps", hello(), &meta.to_string()))
            .await;
        assert_eq!(answer.status(), 400, "{bad}");
        let text = String::from_utf8_lossy(&body(answer).await).into_owned();
        assert!(text.contains("not an outbound origin"), "{bad}: {text}");
    }
    assert!(apps(&control).await.is_empty());

    let meta = serde_json::json!({
        "name": "caller", "tier": "B", "allow_outbound": ["http://127.0.0.1:8080/"],
    });
    let answer = control
        .handle(signed(&key, "POST", "/v1/apps", hello(), &meta.to_string()))
        .await;
    assert_eq!(answer.status(), 201);
    let listed = apps(&control).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]
            .allow_outbound
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["http://127.0.0.1:8080"]
    );
}

async fn publish_durable_reaches_the_hosts_and_a_publish_without_it_turns_it_off(backend: Backend) {
    let control = backend.control();
    let device = Identity::generate();
    let registration = admitted(
        &control,
        br#"{"region":"r","cpu":1,"mem_mb":1024,"disk_mb":1024}"#,
    );
    let registered = control
        .handle(signed(&device, "POST", "/v1/devices", registration, ""))
        .await;
    assert_eq!(registered.status(), 200);
    let id = auth::device_id(&device.public_hex());
    let heartbeat = br#"{"harvestable":true,"cpu_free":1.0,"mem_free_mb":1024.0}"#.to_vec();
    let path = format!("/v1/devices/{id}/heartbeat");
    let beat = control
        .handle(signed(&device, "POST", &path, heartbeat, ""))
        .await;
    assert_eq!(beat.status(), 200);

    let key = Identity::generate();
    // What the one device is told to run, and what the app's listing says.
    let published = |meta: serde_json::Value| {
        let (control, key, id) = (control.clone(), &key, id.clone());
        async move {
            let answer = control
                .handle(signed(key, "POST", "/v1/apps", hello(), &meta.to_string()))
                .await;
            assert_eq!(answer.status(), 201);
            control.reconcile().unwrap();
            let assigned = control.assignments_for(&id).unwrap();
            assert_eq!(assigned.len(), 1, "the app is placed on the one device");
            (
                assigned[0].manifest.durable,
                apps(&control).await[0].durable,
            )
        }
    };
    let durable = serde_json::json!({"name": "tally", "tier": "B", "durable": true});
    assert_eq!(published(durable).await, (true, true));
    let plain = serde_json::json!({"name": "tally", "tier": "B"});
    assert_eq!(published(plain).await, (false, false));
}
