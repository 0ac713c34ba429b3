//! What several bench binaries share: their runtime, and a control plane with a router on
//! loopback, as `fog up` runs them.

#![allow(dead_code)]

use std::sync::Arc;

use fog_control::store::SledStore;
use fog_control::{self as control, Control, ControlConfig};
use fog_host::server;
use fog_router::{Gateway, GatewayConfig};

/// Stops every service a bench started when it fires (or is dropped).
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Resolves when `stop` fires.
pub fn stopped(stop: &Stop) -> impl Future<Output = ()> + use<> {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// A two-thread runtime, like the machines Fog is measured on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A control plane (registry in `dir`) and a router on ephemeral ports: their URLs, and the
/// admission token hosts register with.
pub async fn control_and_router(dir: &std::path::Path, stop: &Stop) -> (String, String, String) {
    let store = SledStore::open(&dir.join("registry")).unwrap();
    let control = Control::new(Arc::new(store), ControlConfig::default());
    let token = control.admission_token().unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let control_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(control::serve(listener, control.clone(), stopped(stop)));
    tokio::spawn(control.run_reconciler(stopped(stop)));
    let gateway = Gateway::new(GatewayConfig::new(
        control_url.parse().expect("a control-plane URL"),
    ));
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let router_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fog_router::serve(listener, gateway.clone(), stopped(stop)));
    tokio::spawn(gateway.run_refresher(stopped(stop)));
    (control_url, router_url, token)
}

/// Publish `bytes` as `name` (tier `tier`, signed with `key`) and wait until the router answers
/// `GET /apps/{name}/` with 200: the time from the upload to that answer.
pub async fn publish_and_wait(
    client: &reqwest::Client,
    (control, router): (&str, &str),
    key: &fog_proto::auth::Identity,
    (name, tier): (&str, &str),
    bytes: &[u8],
) -> std::time::Duration {
    use fog_proto::auth::{self, AUTH_HEADER, META_HEADER};
    use std::time::{Duration, Instant};
    let meta = format!(r#"{{"name":"{name}","tier":"{tier}"}}"#);
    let signature = key.sign(
        "POST",
        "/v1/apps",
        auth::now_s(),
        &auth::sha256_hex(bytes),
        &meta,
    );
    let started = Instant::now();
    let response = client
        .post(format!("{control}/v1/apps"))
        .header(AUTH_HEADER, signature)
        .header(META_HEADER, &meta)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    loop {
        let reply = client
            .get(format!("{router}/apps/{name}/"))
            .send()
            .await
            .unwrap();
        if reply.status() == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} never answered"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
