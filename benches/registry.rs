//! The control plane on its two registries, sled and etcd, in the same run: publish → placement
//! written (the API handler, then one reconcile), and one reconcile over 1,000 apps on 20 live
//! devices. No sockets to the control plane (handlers called directly); etcd is one real member
//! on loopback (Debian's `etcd`), sled an on-disk database in a temporary directory.
//!
//! `cargo bench -p fog-benches --bench registry`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fog_control::store::etcd::{EtcdConfig, EtcdStore};
use fog_control::store::{SledStore, Store};
use fog_control::{Control, ControlConfig};
use fog_proto::api::AppInfo;
use fog_proto::auth::{self, AUTH_HEADER, Identity, META_HEADER};
use fog_test_etcd::EtcdCluster;
use http_body_util::{BodyExt, Full};

mod support;

const APPS: usize = 1000;
const DEVICES: usize = 20;

fn signed(
    key: &Identity,
    method: &str,
    path: &str,
    body: Vec<u8>,
    meta: &str,
) -> http::Request<Full<Bytes>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = key.sign(method, path, now, &auth::sha256_hex(&body), meta);
    http::Request::builder()
        .method(method)
        .uri(path)
        .header(AUTH_HEADER, header)
        .header(META_HEADER, meta)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A control plane on `store` with `DEVICES` registered devices (their keys returned).
async fn control_with_devices(store: Arc<dyn Store>) -> (Arc<Control>, Vec<(String, Identity)>) {
    let control = Control::new(store, ControlConfig::default());
    let mut devices = Vec::new();
    for _ in 0..DEVICES {
        let key = Identity::generate();
        let registration = serde_json::to_vec(&serde_json::json!({
            "addr": "127.0.0.1:9", "region": "r", "cpu": 64, "mem_mb": 262144,
            "disk_mb": 262144, "admission_token": control.admission_token().unwrap(),
        }))
        .unwrap();
        let response = control
            .handle(signed(&key, "POST", "/v1/devices", registration, ""))
            .await;
        assert_eq!(response.status(), 200);
        devices.push((auth::device_id(&key.public_hex()), key));
    }
    (control, devices)
}

/// Every device heartbeats once (alive and harvestable), outside any timing.
async fn heartbeat(control: &Arc<Control>, devices: &[(String, Identity)]) {
    for (id, key) in devices {
        let body = br#"{"harvestable":true,"cpu_free":64,"mem_free_mb":262144}"#.to_vec();
        let path = format!("/v1/devices/{id}/heartbeat");
        let response = control.handle(signed(key, "POST", &path, body, "")).await;
        assert_eq!(response.status(), 200);
    }
}

async fn publish(control: &Arc<Control>, key: &Identity, name: &str, hello: &[u8]) {
    let meta = format!(r#"{{"name":"{name}","tier":"B"}}"#);
    let response = control
        .handle(signed(key, "POST", "/v1/apps", hello.to_vec(), &meta))
        .await;
    assert_eq!(response.status(), 201, "publishing {name}");
}

async fn assigned(control: &Arc<Control>, name: &str) -> bool {
    let request = http::Request::builder()
        .uri(format!("/v1/apps/{name}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = control
        .handle(request)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let info: AppInfo = serde_json::from_slice(&body).unwrap();
    !info.assigned.is_empty()
}

fn registry(c: &mut Criterion) {
    let runtime = support::runtime();
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let key = Identity::generate();
    let open = |backend: &str, prefix: &str| -> Arc<dyn Store> {
        let local = SledStore::open(&dir.path().join(format!("{backend}-{prefix}"))).unwrap();
        match backend {
            "sled" => Arc::new(local),
            _ => Arc::new(
                EtcdStore::connect(
                    EtcdConfig {
                        prefix: prefix.into(),
                        ..EtcdConfig::from_url(&cluster.url()).unwrap()
                    },
                    local,
                )
                .unwrap(),
            ),
        }
    };
    let grace =
        ControlConfig::default().heartbeat_interval * ControlConfig::default().missed_heartbeats;

    let mut group = c.benchmark_group("publish_to_placement");
    group.sample_size(20);
    for backend in ["sled", "etcd"] {
        let (control, devices) = runtime.block_on(control_with_devices(open(backend, "publish")));
        // Past the start-up grace, reconcile places at once.
        std::thread::sleep(grace);
        let mut round = 0;
        group.bench_function(backend, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let name = format!("app{round}");
                    runtime.block_on(heartbeat(&control, &devices));
                    let started = Instant::now();
                    runtime.block_on(publish(&control, &key, &name, &hello));
                    control.reconcile().unwrap();
                    total += started.elapsed();
                    assert!(runtime.block_on(assigned(&control, &name)), "{name} placed");
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("reconcile_1000_apps");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for backend in ["sled", "etcd"] {
        let (control, devices) = runtime.block_on(control_with_devices(open(backend, "fleet")));
        runtime.block_on(async {
            for i in 0..APPS {
                publish(&control, &key, &format!("app{i:04}"), &hello).await;
            }
        });
        std::thread::sleep(grace);
        runtime.block_on(heartbeat(&control, &devices));
        control.reconcile().unwrap();
        assert!(runtime.block_on(assigned(&control, "app0999")));
        group.bench_function(backend, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    runtime.block_on(heartbeat(&control, &devices));
                    let started = Instant::now();
                    control.reconcile().unwrap();
                    total += started.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
