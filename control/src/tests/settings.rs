//! What an app may reach and is given beyond its code: outbound origins through publish, the
//! assignments that carry them, and refusals that change nothing.

use std::sync::Arc;

use fog_proto::api::AppInfo;
use fog_proto::auth::Identity;

use super::{Backend, body, on_both_backends, request, signed};
use crate::Control;

on_both_backends!(bad_outbound_origins_are_refused_with_400_and_nothing_is_published);

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
