//! Moving apps with their state, and waking apps from zero, on loopback: a control plane, a
//! router and two hosts (HTX data plane, as `fog up` runs them) in this process.
//!
//! 1. For 1, 10 and 100 MB of key-value state (1 MiB notes in the `counter` example), move the
//!    app's primary to the other host (`POST /v1/apps/{app}/move`) while one client sends
//!    increments back to back. Reported: time from the request to the switch, the control
//!    plane's copy time and write pause, the worst latency the client saw, its failures, and
//!    whether the count equals the acknowledged increments.
//! 2. Park an autoscaled `hello` at zero replicas and time the first request through the router
//!    (held while a replica starts), against publishing a new app to its first response (the
//!    peer in the same run).
//!
//! `cargo bench -p fog-benches --bench state_moves`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fog_host::agent::{self, AgentConfig};
use fog_host::server::{self, AppTable};
use fog_host::{Runtime, RuntimeConfig};
use fog_proto::api::AppInfo;
use fog_proto::auth::{self, AUTH_HEADER, Identity, META_HEADER};
use fog_test_programs as programs;

mod support;
use support::{Stop, stopped};

async fn start_host(dir: &std::path::Path, control: &str, token: &str, stop: &Stop) {
    let identity = Identity::generate();
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: Some(dir.to_path_buf()),
        pool_size: 64,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let apps = AppTable::new();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, apps.clone(), stopped(stop)));
    let key = fog_host::htx_server::static_key(&identity.secret_bytes());
    let htx_listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let htx = fog_proto::api::HtxEndpoint {
        addr: Some(htx_listener.local_addr().unwrap().to_string()),
        key: hex::encode(key.public),
    };
    tokio::spawn(fog_host::htx_server::serve(
        htx_listener,
        apps.clone(),
        key,
        stopped(stop),
    ));
    let config = AgentConfig {
        control: control.parse().expect("a control-plane URL"),
        advertise: Some(addr),
        region: "local".into(),
        cpu: 4.0,
        mem_mb: 8192.0,
        disk_mb: 8192.0,
        price_cpu_hour: 0.0,
        heartbeat: Duration::from_secs(1),
        harvest: None,
        htx: Some(htx),
        attacher: None,
        admission_token: Some(token.to_string()),
    };
    tokio::spawn(agent::run(runtime, apps, identity, config, stopped(stop)));
}

struct Api {
    client: reqwest::Client,
    control: String,
    router: String,
    key: Identity,
}

impl Api {
    async fn signed(&self, path: &str, body: Vec<u8>, meta: &str) -> reqwest::Response {
        let auth = self.key.sign(
            "POST",
            path,
            fog_proto::auth::now_s(),
            &auth::sha256_hex(&body),
            meta,
        );
        self.client
            .post(format!("{}{path}", self.control))
            .header(AUTH_HEADER, auth)
            .header(META_HEADER, meta)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn publish(&self, name: &str, wasm: &str, tier: &str) -> Duration {
        let bytes = std::fs::read(wasm).unwrap();
        support::publish_and_wait(
            &self.client,
            (&self.control, &self.router),
            &self.key,
            (name, tier),
            &bytes,
        )
        .await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: String) -> T {
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn app(&self, name: &str) -> AppInfo {
        self.get(format!("{}/v1/apps/{name}", self.control)).await
    }

    /// The counter's count.
    async fn count(&self, name: &str) -> u64 {
        let count: serde_json::Value = self
            .get(format!("{}/apps/{name}/api/count", self.router))
            .await;
        count["visits"].as_u64().unwrap_or(0)
    }
}

/// One client sending increments back to back: (acknowledged, failed, worst latency).
struct Prober {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    worst_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    fn start(client: reqwest::Client, url: String) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let worst_us = Arc::new(AtomicU64::new(0));
        let (s, a, f, w) = (
            stop.clone(),
            acked.clone(),
            failed.clone(),
            worst_us.clone(),
        );
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = client
                    .post(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                w.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if ok {
                    a.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Prober {
            stop,
            acked,
            failed,
            worst_us,
            task,
        }
    }

    async fn finish(self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            Duration::from_micros(self.worst_us.load(Ordering::Relaxed)),
        )
    }
}

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn main() {
    support::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (control_url, router_url, token) = support::control_and_router(dir.path(), &stop).await;
        for i in 0..2 {
            start_host(
                &dir.path().join(format!("host{i}")),
                &control_url,
                &token,
                &stop,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let api = Api {
            client: reqwest::Client::new(),
            control: control_url.clone(),
            router: router_url.clone(),
            key: Identity::generate(),
        };

        println!(
            "| state | move total ms | copy ms (control) | writes paused ms (control) | worst \
             client latency ms | failed | count = acknowledged |"
        );
        println!("|---|---|---|---|---|---|---|");
        let note = vec![0x5au8; 1 << 20];
        for mb in [1usize, 10, 100] {
            let name = format!("state-{mb}");
            api.publish(&name, programs::COUNTER, "B").await;
            for i in 0..mb {
                let response = api
                    .client
                    .put(format!("{router_url}/apps/{name}/api/notes/n{i}"))
                    .body(note.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            }
            let before = api.app(&name).await;
            let from = before.assigned[0].clone();
            let devices: Vec<fog_proto::api::DeviceInfo> =
                api.get(format!("{control_url}/v1/devices")).await;
            let to = devices.iter().find(|d| d.id != from).unwrap().id.clone();
            // Publishing polled `GET /`, which counts a visit: start from what is there.
            let baseline = api.count(&name).await;
            let prober = Prober::start(
                api.client.clone(),
                format!("{router_url}/apps/{name}/api/increment"),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            let body = serde_json::to_vec(&serde_json::json!({ "to": to })).unwrap();
            let response = api.signed(&format!("/v1/apps/{name}/move"), body, "").await;
            assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
            let after = loop {
                let app = api.app(&name).await;
                if app.moving.is_none() && app.assigned.first() == Some(&to) {
                    break app;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "{name} did not move: {app:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let total = started.elapsed();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (acked, failed, worst) = prober.finish().await;
            let count = api.count(&name).await - baseline;
            let event = after
                .events
                .iter()
                .rev()
                .find(|e| e.contains("moved from"))
                .cloned()
                .unwrap_or_default();
            println!(
                "| {mb} MB | {} | {} | {} | {} | {failed} | {} ({} vs {acked}) |",
                total.as_millis(),
                number_after(&event, "caught up in ").map_or("?".into(), |v| v.to_string()),
                number_after(&event, "writes paused ").map_or("?".into(), |v| v.to_string()),
                worst.as_millis(),
                if count == acked { "yes" } else { "NO" },
                count,
            );
            // Free the devices for the next size.
            let response = api
                .client
                .delete(format!("{control_url}/v1/apps/{name}"))
                .header(
                    AUTH_HEADER,
                    api.key.sign(
                        "DELETE",
                        &format!("/v1/apps/{name}"),
                        fog_proto::auth::now_s(),
                        &auth::sha256_hex(b""),
                        "",
                    ),
                )
                .header(META_HEADER, "")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }

        // Wake from zero against a fresh publish.
        let mut cold = Vec::new();
        for round in 0..3 {
            cold.push(
                api.publish(&format!("fresh-{round}"), programs::HELLO, "B")
                    .await,
            );
        }
        api.publish("sleepy", programs::HELLO, "B").await;
        let scale = serde_json::to_vec(&serde_json::json!({
            "autoscale": { "min": 0, "max": 1, "target_rps": 100.0, "idle_s": 1 }
        }))
        .unwrap();
        let response = api.signed("/v1/apps/sleepy/scale", scale, "").await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let mut wakes = Vec::new();
        for _ in 0..5 {
            loop {
                let app = api.app("sleepy").await;
                if app.replicas == 0 && app.running.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Let the routers see the empty route.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let reply = api
                .client
                .get(format!("{router_url}/apps/sleepy/"))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            wakes.push(started.elapsed());
        }
        wakes.sort();
        cold.sort();
        println!();
        println!("| case | rounds | p50 ms | max ms |");
        println!("|---|---|---|---|");
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| first request to an app parked at zero (held while it wakes) | {} | {:.0} | {:.0} |",
            wakes.len(),
            ms(&wakes[wakes.len() / 2]),
            ms(wakes.last().unwrap())
        );
        println!(
            "| publish a new app to its first response (peer) | {} | {:.0} | {:.0} |",
            cold.len(),
            ms(&cold[cold.len() / 2]),
            ms(cold.last().unwrap())
        );
    });
}
