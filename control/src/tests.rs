//! Tests of the API without sockets: handlers called directly, each on both store backends
//! (sled, and a real etcd member on loopback) through [`on_both_backends!`].

mod canary;
mod etcd;
mod footprint;
mod index;
mod interval;
mod market;
mod onion;
mod settings;
mod soft;
mod store;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fog_proto::api::{self, AppInfo};
use fog_proto::auth::{self, AUTH_HEADER, Identity, META_HEADER};
use fog_test_etcd::EtcdCluster;
use http_body_util::{BodyExt, Full};

use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{SledStore, Store};
use crate::{Control, ControlConfig, check_component, now_ms};

/// A store backend under test: sled in temporary files, or etcd members started for the test.
pub(crate) enum Backend {
    Sled,
    Etcd(EtcdCluster),
}

impl Backend {
    pub(crate) fn sled() -> Backend {
        Backend::Sled
    }

    /// One etcd member on loopback (fails with the reason if Debian's etcd is missing).
    pub(crate) fn etcd() -> Backend {
        Backend::Etcd(EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}")))
    }

    /// A new, empty registry on this backend (on etcd: under a prefix of its own).
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).unwrap();
        self.store_at(&hex::encode(prefix))
    }

    /// The registry under `prefix`: two stores at one prefix share it (on etcd; sled has no
    /// sharing, so every sled store is new).
    pub(crate) fn store_at(&self, prefix: &str) -> Arc<dyn Store> {
        match self {
            Backend::Sled => Arc::new(SledStore::temporary().unwrap()),
            Backend::Etcd(cluster) => Arc::new(
                EtcdStore::connect(
                    EtcdConfig {
                        prefix: prefix.to_string(),
                        ..EtcdConfig::from_url(&cluster.url()).unwrap()
                    },
                    SledStore::temporary().unwrap(),
                )
                .unwrap(),
            ),
        }
    }

    pub(crate) fn control(&self) -> Arc<Control> {
        Control::new(self.store(), ControlConfig::default())
    }
}

/// Run each named `async fn NAME(backend: Backend)` as two tests, `on_sled::NAME` and
/// `on_etcd::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::sled()).await
                }
            )*
        }
        mod on_etcd {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::etcd()).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

on_both_backends!(
    only_trusted_routers_register_fronts_or_get_onion_leases,
    the_api_answers_without_sockets,
    scale_and_remove_change_only_the_owners_app,
    a_name_belongs_to_its_first_owner,
    a_replayed_publish_is_refused_and_changes_nothing,
    a_replayed_scale_is_refused_and_changes_nothing,
    a_replayed_rm_is_refused_and_changes_nothing,
    bundles_with_escaping_paths_or_wrong_sizes_are_refused,
    a_site_must_name_an_uploaded_bundle_and_removing_it_drops_the_bundle,
    publishing_between_full_plans_places_the_new_app_and_moves_no_other,
    a_busy_app_is_moved_off_a_device_it_overloads_and_an_idle_one_is_not,
);

async fn body<B: hyper::body::Body>(response: http::Response<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

/// `registration` (a device's JSON) with the fog's admission token, so the device is admitted.
fn admitted(control: &Control, registration: &[u8]) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(registration).unwrap();
    value["admission_token"] = control.admission_token().unwrap().into();
    serde_json::to_vec(&value).unwrap()
}

fn signed(
    key: &Identity,
    method: &str,
    path: &str,
    body: Vec<u8>,
    meta: &str,
) -> http::Request<Full<Bytes>> {
    let header = key.sign(
        method,
        path,
        now_ms() / 1000,
        &auth::sha256_hex(&body),
        meta,
    );
    request(
        method,
        path,
        &[(AUTH_HEADER, &header), (META_HEADER, meta)],
        body,
    )
}

#[test]
fn components_are_checked_without_running_them() {
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    assert_eq!(check_component(&hello), Ok(()));
    assert!(
        check_component(b"nope")
            .unwrap_err()
            .contains("not a WebAssembly binary")
    );
    assert!(
        check_component(b"\0asm\x01\0\0\0")
            .unwrap_err()
            .contains("core")
    );
    assert!(
        check_component(b"\0asm\x0d\0\x01\0")
            .unwrap_err()
            .contains("does not export")
    );
    assert!(
        check_component(&hello[..hello.len() / 3])
            .unwrap_err()
            .contains("not a valid component")
    );
}

async fn only_trusted_routers_register_fronts_or_get_onion_leases(backend: Backend) {
    let router = Identity::generate();
    let stranger = Identity::generate();
    let control = Control::new(
        backend.store(),
        ControlConfig {
            trusted_routers: vec![router.public_hex()],
            ..ControlConfig::default()
        },
    );
    let front = serde_json::to_vec(&api::FrontInfo {
        addr: "127.0.0.1:7443".into(),
        key: hex::encode([1u8; 32]),
        ticket_key: hex::encode([2u8; 32]),
        tls: false,
    })
    .unwrap();
    for (path, body, what) in [
        ("/v1/fronts", front.clone(), "to register a Betanet front"),
        ("/v1/onion-leases", b"{}".to_vec(), "with onion leases"),
    ] {
        let refused = control
            .handle(signed(&stranger, "POST", path, body.clone(), ""))
            .await;
        assert_eq!(refused.status(), 403, "{path}");
        let text = refused.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains(&format!("is not trusted {what}")),
            "{path}: {text}"
        );
        let accepted = control
            .handle(signed(&router, "POST", path, body, ""))
            .await;
        assert_eq!(accepted.status(), 200, "{path}");
    }
}

async fn the_api_answers_without_sockets(backend: Backend) {
    let control = backend.control();
    assert_eq!(
        control
            .handle(request("GET", "/v2/apps", &[], vec![]))
            .await
            .status(),
        404
    );
    assert_eq!(
        control
            .handle(request("PUT", "/v1/apps", &[], vec![]))
            .await
            .status(),
        405
    );
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let meta = r#"{"name":"hello","tier":"B"}"#;
    let unsigned = request("POST", "/v1/apps", &[(META_HEADER, meta)], hello.clone());
    assert_eq!(control.handle(unsigned).await.status(), 401);
    let key = Identity::generate();
    let published = control
        .handle(signed(&key, "POST", "/v1/apps", hello.clone(), meta))
        .await;
    assert_eq!(published.status(), 201);
    let again = control
        .handle(signed(&key, "POST", "/v1/apps", hello, meta))
        .await;
    let body = again.into_body().collect().await.unwrap().to_bytes();
    let info: AppInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (info.name.as_str(), info.version, info.replicas),
        ("hello", 2, 1)
    );
    let listed = control
        .handle(request("GET", "/v1/apps", &[], vec![]))
        .await;
    let body = listed.into_body().collect().await.unwrap().to_bytes();
    let apps: Vec<AppInfo> = serde_json::from_slice(&body).unwrap();
    assert_eq!(apps.len(), 1);
    let heartbeat = signed(
        &key,
        "POST",
        "/v1/devices/0123/heartbeat",
        b"{}".to_vec(),
        "",
    );
    assert_eq!(control.handle(heartbeat).await.status(), 404);
    // Ledger periods: verified against the device key; a tampered one is refused.
    let device_key = Identity::generate();
    let registration =
        br#"{"addr":"127.0.0.1:9","region":"r","cpu":2,"mem_mb":1024,"disk_mb":1024}"#.to_vec();
    let registered = control
        .handle(signed(&device_key, "POST", "/v1/devices", registration, ""))
        .await;
    assert_eq!(registered.status(), 200);
    let id = auth::device_id(&device_key.public_hex());
    let entries = vec![api::LedgerEntry {
        app: "hello".into(),
        fuel: 7_200_000_000,
        credits: api::LedgerPeriod::credits(7_200_000_000, 0.15),
    }];
    let period = api::LedgerPeriod {
        device: id.clone(),
        start_ms: 1,
        end_ms: 2,
        price_cpu_hour: 0.15,
        total_credits: entries[0].credits,
        entries,
    };
    let honest = api::SignedPeriod {
        signature: device_key.sign_bytes(&period.signed_bytes()),
        period,
    };
    let mut tampered = honest.clone();
    tampered.period.entries[0].fuel *= 10;
    tampered.period.entries[0].credits *= 10.0;
    tampered.period.total_credits *= 10.0;
    let path = format!("/v1/devices/{id}/heartbeat");
    for (period, status) in [(tampered, 400), (honest, 200)] {
        let heartbeat = serde_json::json!({ "harvestable": true, "cpu_free": 1.0, "mem_free_mb": 512.0, "periods": [period] });
        let response = control
            .handle(signed(
                &device_key,
                "POST",
                &path,
                serde_json::to_vec(&heartbeat).unwrap(),
                "",
            ))
            .await;
        assert_eq!(response.status(), status);
    }
    let ledger = control
        .handle(request(
            "GET",
            &format!("/v1/devices/{id}/ledger"),
            &[],
            vec![],
        ))
        .await;
    let body = ledger.into_body().collect().await.unwrap().to_bytes();
    let stored: Vec<api::SignedPeriod> = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].period.entries[0].fuel, 7_200_000_000);
    // No device has room yet: the app is reported, not silently dropped.
    let stale = backend.control();
    let key2 = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let published = stale
        .handle(signed(
            &key2,
            "POST",
            "/v1/apps",
            hello,
            r#"{"name":"hello","tier":"B"}"#,
        ))
        .await;
    assert_eq!(published.status(), 201);
    stale.reconcile().unwrap();
    let info = stale.app_info(&stale.app("hello").unwrap()).unwrap();
    assert!(info.problem.unwrap().contains("needs 1 distinct devices"));
}

async fn scale_and_remove_change_only_the_owners_app(backend: Backend) {
    let control = backend.control();
    let owner = Identity::generate();
    let stranger = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let sha256 = auth::sha256_hex(&hello);
    let meta = r#"{"name":"hello","tier":"B"}"#;
    let published = control
        .handle(signed(&owner, "POST", "/v1/apps", hello, meta))
        .await;
    assert_eq!(published.status(), 201);
    let scale = br#"{"replicas":3}"#.to_vec();
    let path = "/v1/apps/hello/scale";
    let refused = control
        .handle(signed(&stranger, "POST", path, scale.clone(), ""))
        .await;
    assert_eq!(refused.status(), 403);
    let scaled = control
        .handle(signed(&owner, "POST", path, scale, ""))
        .await;
    assert_eq!(scaled.status(), 200);
    let info: AppInfo = serde_json::from_slice(&body(scaled).await).unwrap();
    assert_eq!((info.version, info.replicas), (1, 3));
    let autoscale = br#"{"autoscale":{"min":0,"max":2,"target_rps":20,"idle_s":60}}"#.to_vec();
    let scaled = control
        .handle(signed(&owner, "POST", path, autoscale, ""))
        .await;
    assert_eq!(scaled.status(), 200);
    let info: AppInfo = serde_json::from_slice(&body(scaled).await).unwrap();
    assert_eq!(info.replicas, 2, "clamped into the autoscale bounds");
    assert_eq!(info.autoscale.map(|a| a.max), Some(2));
    let blob = format!("/v1/blobs/{sha256}");
    let fetched = control.handle(request("GET", &blob, &[], vec![])).await;
    assert_eq!(fetched.status(), 200);
    let removed = control
        .handle(signed(&owner, "DELETE", "/v1/apps/hello", vec![], ""))
        .await;
    assert_eq!(removed.status(), 200);
    let listed = control
        .handle(request("GET", "/v1/apps", &[], vec![]))
        .await;
    let apps: Vec<AppInfo> = serde_json::from_slice(&body(listed).await).unwrap();
    assert!(apps.is_empty());
    let fetched = control.handle(request("GET", &blob, &[], vec![])).await;
    assert_eq!(fetched.status(), 404, "the last app using the blob is gone");
}

async fn a_name_belongs_to_its_first_owner(backend: Backend) {
    let control = backend.control();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let meta = r#"{"name":"hello","tier":"B"}"#;
    let first = Identity::generate();
    let published = control
        .handle(signed(&first, "POST", "/v1/apps", hello.clone(), meta))
        .await;
    assert_eq!(published.status(), 201);
    let second = control
        .handle(signed(
            &Identity::generate(),
            "POST",
            "/v1/apps",
            hello,
            meta,
        ))
        .await;
    assert_eq!(second.status(), 409);
    let text = String::from_utf8_lossy(&body(second).await).into_owned();
    assert!(text.contains("taken by another key"), "{text}");
    let info = control.app_info(&control.app("hello").unwrap()).unwrap();
    assert_eq!((info.owner, info.version), (first.public_hex(), 1));
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_while_another_key_is_served() {
    let control = Control::new(
        Arc::new(SledStore::temporary().unwrap()),
        ControlConfig {
            key_rate: fog_net::limit::Rate::new(1, 5),
            ..ControlConfig::default()
        },
    );
    let register = |key: &Identity, port: u16| {
        let relay = api::RelayInfo {
            addr: format!("127.0.0.1:{port}"),
            key: hex::encode([7u8; 32]),
        };
        signed(
            key,
            "POST",
            "/v1/relays",
            serde_json::to_vec(&relay).unwrap(),
            "",
        )
    };
    let (flooder, other) = (Identity::generate(), Identity::generate());
    let mut statuses = Vec::new();
    let mut refusal = None;
    for port in 0..8 {
        let response = control.handle(register(&flooder, 9000 + port)).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            refusal = Some(response);
        }
    }
    // The burst is served; the rest are refused (one more token at most refills meanwhile).
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 2,
        "{statuses:?}"
    );
    let refusal = refusal.unwrap();
    let retry_after: u64 = refusal.headers()[http::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let error: api::ErrorBody = serde_json::from_slice(&body(refusal).await).unwrap();
    assert_eq!(error.code, Some(api::ErrorCode::RateLimited));
    // Another key is not held back by the first one's flood.
    let response = control.handle(register(&other, 9100)).await;
    assert_eq!(response.status(), 200);
}

/// A signed request and an exact copy of it, as an eavesdropper who captured it would send.
fn signed_twice(
    key: &Identity,
    method: &str,
    path: &str,
    body: Vec<u8>,
    meta: &str,
) -> (http::Request<Full<Bytes>>, http::Request<Full<Bytes>>) {
    let header = key.sign(
        method,
        path,
        now_ms() / 1000,
        &auth::sha256_hex(&body),
        meta,
    );
    let headers = [(AUTH_HEADER, header.as_str()), (META_HEADER, meta)];
    (
        request(method, path, &headers, body.clone()),
        request(method, path, &headers, body),
    )
}

async fn refused_as_replay(control: &Arc<Control>, replay: http::Request<Full<Bytes>>) {
    let response = control.handle(replay).await;
    assert_eq!(response.status(), 401);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("replayed request"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

async fn app(control: &Arc<Control>, name: &str) -> Option<AppInfo> {
    let response = control
        .handle(request("GET", &format!("/v1/apps/{name}"), &[], vec![]))
        .await;
    if response.status() == 404 {
        return None;
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Some(serde_json::from_slice(&body).unwrap())
}

async fn a_replayed_publish_is_refused_and_changes_nothing(backend: Backend) {
    let control = backend.control();
    let key = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let (publish, replay) = signed_twice(
        &key,
        "POST",
        "/v1/apps",
        hello,
        r#"{"name":"hello","tier":"B"}"#,
    );
    assert_eq!(control.handle(publish).await.status(), 201);
    refused_as_replay(&control, replay).await;
    assert_eq!(app(&control, "hello").await.unwrap().version, 1);
}

async fn a_replayed_scale_is_refused_and_changes_nothing(backend: Backend) {
    let control = backend.control();
    let key = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let publish = signed(
        &key,
        "POST",
        "/v1/apps",
        hello,
        r#"{"name":"hello","tier":"B"}"#,
    );
    assert_eq!(control.handle(publish).await.status(), 201);
    let (to_three, replay) = signed_twice(
        &key,
        "POST",
        "/v1/apps/hello/scale",
        br#"{"replicas":3}"#.to_vec(),
        "",
    );
    assert_eq!(control.handle(to_three).await.status(), 200);
    let to_two = signed(
        &key,
        "POST",
        "/v1/apps/hello/scale",
        br#"{"replicas":2}"#.to_vec(),
        "",
    );
    assert_eq!(control.handle(to_two).await.status(), 200);
    refused_as_replay(&control, replay).await;
    assert_eq!(app(&control, "hello").await.unwrap().replicas, 2);
}

async fn a_replayed_rm_is_refused_and_changes_nothing(backend: Backend) {
    let control = backend.control();
    let key = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let meta = r#"{"name":"hello","tier":"B"}"#;
    let publish = signed(&key, "POST", "/v1/apps", hello.clone(), meta);
    assert_eq!(control.handle(publish).await.status(), 201);
    let (remove, replay) = signed_twice(&key, "DELETE", "/v1/apps/hello", vec![], "");
    assert_eq!(control.handle(remove).await.status(), 200);
    let again = signed(&key, "POST", "/v1/apps", hello, meta);
    assert_eq!(control.handle(again).await.status(), 201);
    refused_as_replay(&control, replay).await;
    assert!(app(&control, "hello").await.is_some());
}

/// A bundle holding `files` (path, contents), in the format `fog publish DIR` uploads.
fn bundle_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use fog_proto::bundle::{BundleFile, BundleManifest, header};
    let manifest = BundleManifest {
        files: files
            .iter()
            .map(|(path, content)| BundleFile {
                path: path.to_string(),
                size: content.len() as u64,
                sha256: auth::sha256_hex(content),
            })
            .collect(),
    };
    let mut out = header(&manifest);
    for (_, content) in files {
        out.extend_from_slice(content);
    }
    out
}

async fn bundles_with_escaping_paths_or_wrong_sizes_are_refused(backend: Backend) {
    let control = backend.control();
    let key = Identity::generate();
    let good = bundle_of(&[("index.html", b"<h1>hi</h1>")]);
    let escaping = bundle_of(&[("../etc/passwd", b"x")]);
    let mut short = good.clone();
    short.pop();
    for (body, status) in [
        (escaping, 400),
        (short, 400),
        (b"nope".to_vec(), 400),
        (good, 201),
    ] {
        let answer = control
            .handle(signed(&key, "POST", "/v1/bundles", body, ""))
            .await;
        assert_eq!(answer.status(), status);
    }
}

async fn a_site_must_name_an_uploaded_bundle_and_removing_it_drops_the_bundle(backend: Backend) {
    let control = backend.control();
    let key = Identity::generate();
    let fileserver = std::fs::read(fog_test_programs::FILESERVER).unwrap();
    let bundle = bundle_of(&[("index.html", b"<h1>hi</h1>")]);
    let sha = auth::sha256_hex(&bundle);
    let meta = |bundle: &str| {
        serde_json::to_string(&api::PublishMeta {
            name: "site".into(),
            tier: api::Tier::B,
            replicas: None,
            limits: fog_proto::Limits::default(),
            bundle: Some(bundle.into()),
            max_price: None,
            bid: None,
            allow_outbound: Vec::new(),
            vars: Default::default(),
            secrets: Default::default(),
            durable: false,
        })
        .unwrap()
    };
    let refused = control
        .handle(signed(
            &key,
            "POST",
            "/v1/apps",
            fileserver.clone(),
            &meta(&sha),
        ))
        .await;
    assert_eq!(refused.status(), 400);
    let stored = control
        .handle(signed(&key, "POST", "/v1/bundles", bundle, ""))
        .await;
    assert_eq!(stored.status(), 201);
    let published = control
        .handle(signed(&key, "POST", "/v1/apps", fileserver, &meta(&sha)))
        .await;
    assert_eq!(published.status(), 201);
    assert_eq!(
        control.site_bundle("site").unwrap().as_deref(),
        Some(sha.as_str())
    );
    // Removing the app removes the bundle it alone used.
    let removed = control
        .handle(signed(&key, "DELETE", "/v1/apps/site", vec![], ""))
        .await;
    assert_eq!(removed.status(), 200);
    let blob = control
        .handle(request("GET", &format!("/v1/blobs/{sha}"), &[], vec![]))
        .await;
    assert_eq!(blob.status(), 404);
}

async fn publishing_between_full_plans_places_the_new_app_and_moves_no_other(backend: Backend) {
    let control = Control::new(
        backend.store(),
        ControlConfig {
            replan_every: Duration::from_secs(3600),
            // Trust fixed at 0.5 whatever the devices do (a prior weighing more than any
            // behaviour): this test is about incremental placement, not about earning trust,
            // and its devices miss heartbeats while it waits out the start-up grace.
            trust: crate::trust::TrustConfig {
                prior: 0.5,
                prior_weight_s: 1e12,
                ..crate::trust::TrustConfig::default()
            },
            ..ControlConfig::default()
        },
    );
    let devices: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
    for device in &devices {
        let registration = admitted(
            &control,
            br#"{"region":"r","cpu":1,"mem_mb":1024,"disk_mb":1024}"#,
        );
        let registered = control
            .handle(signed(device, "POST", "/v1/devices", registration, ""))
            .await;
        assert_eq!(registered.status(), 200);
    }
    let heartbeat_all = || async {
        for device in &devices {
            let id = auth::device_id(&device.public_hex());
            let heartbeat = br#"{"harvestable":true,"cpu_free":1.0,"mem_free_mb":1024.0}"#.to_vec();
            let path = format!("/v1/devices/{id}/heartbeat");
            let answered = control
                .handle(signed(device, "POST", &path, heartbeat, ""))
                .await;
            assert_eq!(answered.status(), 200);
        }
    };
    heartbeat_all().await;
    let developer = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let publish = |name: &str| {
        signed(
            &developer,
            "POST",
            "/v1/apps",
            hello.clone(),
            &format!(r#"{{"name":"{name}","tier":"A"}}"#),
        )
    };
    assert_eq!(control.handle(publish("first")).await.status(), 201);
    control.reconcile().unwrap();
    let full_plan = *control.last_full_plan.lock().unwrap();
    assert!(full_plan.is_some(), "the first reconcile plans everything");
    let first = control.app_info(&control.app("first").unwrap()).unwrap();
    assert_eq!(first.assigned.len(), 2, "tier A: two replicas");
    // Past the start-up grace (while it lasts, placements are left alone after a restart),
    // with the devices still alive.
    let grace = control.config.heartbeat_interval * control.config.missed_heartbeats;
    tokio::time::sleep_until((control.started + grace).into()).await;
    heartbeat_all().await;

    assert_eq!(control.handle(publish("second")).await.status(), 201);
    control.reconcile().unwrap();
    let second = control.app_info(&control.app("second").unwrap()).unwrap();
    assert_eq!(
        second.assigned.len(),
        2,
        "the new app is placed: {second:?}"
    );
    let first_again = control.app_info(&control.app("first").unwrap()).unwrap();
    assert_eq!(first_again.assigned, first.assigned, "the other app stayed");
    assert_eq!(
        *control.last_full_plan.lock().unwrap(),
        full_plan,
        "placed without planning every app again"
    );
}

/// Two devices offering one core each; `busy` and `quiet` placed together on the first, as an
/// earlier plan left them. The first device then reports `busy` burning `busy_cores` (fuel
/// counters in its heartbeats, as a host sends them). Returns the events of both apps after one
/// reconcile.
async fn together_then_reconcile(backend: &Backend, busy_cores: f64) -> Vec<String> {
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
            br#"{"region":"r","cpu":1,"mem_mb":4096,"disk_mb":4096}"#,
        );
        let registered = control
            .handle(signed(device, "POST", "/v1/devices", registration, ""))
            .await;
        assert_eq!(registered.status(), 200);
    }
    let developer = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let mut sha = String::new();
    for name in ["busy", "quiet"] {
        let meta = format!(r#"{{"name":"{name}","tier":"B"}}"#);
        let published = control
            .handle(signed(&developer, "POST", "/v1/apps", hello.clone(), &meta))
            .await;
        assert_eq!(published.status(), 201);
        sha = control.app(name).unwrap().sha256;
        let together = crate::store::PlacementRecord {
            devices: vec![ids[0].clone()],
            problem: None,
        };
        control
            .store
            .put(
                crate::store::Table::Placements,
                name,
                &crate::store::encode(&together),
            )
            .unwrap();
    }
    let heartbeat = |device: usize, busy_fuel: u64| {
        let running = if device == 0 {
            serde_json::json!([
                { "app": "busy", "sha256": sha, "in_flight": 0, "requests": 1, "failures": 0, "fuel": busy_fuel },
                { "app": "quiet", "sha256": sha, "in_flight": 0, "requests": 0, "failures": 0, "fuel": 0 },
            ])
        } else {
            serde_json::json!([])
        };
        let body = serde_json::json!({
            "harvestable": true, "cpu_free": 1.0, "mem_free_mb": 4096.0, "running": running,
        });
        signed(
            &devices[device],
            "POST",
            &format!("/v1/devices/{}/heartbeat", ids[device]),
            serde_json::to_vec(&body).unwrap(),
            "",
        )
    };
    // Past the start-up grace, with both devices alive; the first reconcile plans everything
    // (it keeps the arrangement: nothing is overloaded yet).
    let grace = control.config.heartbeat_interval * control.config.missed_heartbeats;
    tokio::time::sleep_until((control.started + grace).into()).await;
    let started = std::time::Instant::now();
    for device in 0..2 {
        assert_eq!(control.handle(heartbeat(device, 0)).await.status(), 200);
    }
    control.reconcile().unwrap();
    // Then `busy` burns: a second report of its fuel counter.
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let fuel = (busy_cores * elapsed * fog_proto::api::FUEL_PER_CORE_SECOND) as u64;
    assert_eq!(control.handle(heartbeat(0, fuel)).await.status(), 200);
    assert_eq!(control.handle(heartbeat(1, 0)).await.status(), 200);
    control.reconcile().unwrap();
    ["busy", "quiet"]
        .iter()
        .flat_map(|name| {
            control
                .app_info(&control.app(name).unwrap())
                .unwrap()
                .events
        })
        .collect()
}

async fn a_busy_app_is_moved_off_a_device_it_overloads_and_an_idle_one_is_not(backend: Backend) {
    let idle = together_then_reconcile(&backend, 0.0).await;
    assert!(
        !idle.iter().any(|e| e.contains("moving from")),
        "nothing moves while nothing is busy: {idle:?}"
    );
    // Far more than the device offers (the measured rate depends on the control plane's clock
    // between two heartbeats, so aim well past one core).
    let busy = together_then_reconcile(&backend, 50.0).await;
    assert!(
        busy.iter().any(|e| e.contains("moving from")),
        "an overloaded device's apps are spread: {busy:?}"
    );
}

#[tokio::test]
async fn a_flood_of_strangers_devices_stops_at_the_pending_cap_and_admitted_ones_still_register() {
    const CAP: usize = 8;
    let control = Control::new(
        Arc::new(SledStore::temporary().unwrap()),
        ControlConfig {
            max_pending_devices: CAP,
            ..ControlConfig::default()
        },
    );
    let registration = br#"{"region":"r","cpu":1,"mem_mb":1024,"disk_mb":1024}"#;
    let register = |key: &Identity, body: Vec<u8>| {
        let control = control.clone();
        let request = signed(key, "POST", "/v1/devices", body, "");
        async move { control.handle(request).await }
    };
    let first = Identity::generate();
    assert_eq!(register(&first, registration.to_vec()).await.status(), 200);
    for _ in 1..CAP {
        let answer = register(&Identity::generate(), registration.to_vec()).await;
        assert_eq!(answer.status(), 200);
    }
    let refused = register(&Identity::generate(), registration.to_vec()).await;
    assert_eq!(refused.status(), 503);
    let text = String::from_utf8_lossy(&body(refused).await).into_owned();
    assert!(text.contains("waiting for admission"), "{text}");
    // A pending device already known may register again; one with the token is admitted.
    assert_eq!(register(&first, registration.to_vec()).await.status(), 200);
    let with_token = admitted(&control, registration);
    assert_eq!(
        register(&Identity::generate(), with_token).await.status(),
        200
    );
    assert_eq!(control.devices().unwrap().len(), CAP + 1);
}
