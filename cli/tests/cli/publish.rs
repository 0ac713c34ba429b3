//! The publish path with separate processes on loopback: a control plane, a router and three
//! hosts; publish, serve through the router, lose a host under load, restart the control plane,
//! and refuse bad input without harm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fog_proto::api::{AppInfo, DeviceInfo};
use fog_proto::auth::{self, Identity};
use fog_test_programs as programs;

use crate::fog::{Running, run, spawn};

/// A fog of separate processes.
#[derive(Debug)]
pub struct Fog {
    pub dir: tempfile::TempDir,
    pub control: Running,
    pub router: Running,
    pub hosts: Vec<Running>,
    pub key: String,
    /// The router's key (hex), which the control plane trusts to register a Betanet front.
    pub router_key: String,
}

/// `fog router` arguments for a router with its key in `data`. Every client of the tests comes
/// from one loopback address (the load generators too), so the per-visitor limit is off unless
/// a test sets one (`restart_router` with `--visitor-rate`).
fn router_args<'a>(control: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "router",
        "--listen",
        "127.0.0.1:0",
        "--control",
        control,
        "--data",
        data,
        "--betanet",
        "127.0.0.1:0",
        "--attach",
        "127.0.0.1:0",
        "--visitor-rate",
        "0",
    ]
}

impl Fog {
    /// Control plane, router and `hosts` hosts that ignore harvest policy.
    pub fn start(hosts: usize) -> Fog {
        Fog::start_with(hosts, |_, _| vec!["--always-on".to_string()])
    }

    /// Stop the router and start it again (same key) with `extra` arguments.
    pub fn restart_router(&mut self, extra: &[&str]) {
        self.router.terminate();
        let data = self.dir.path().join("router");
        let control = self.control.url();
        let mut args = router_args(&control, data.to_str().unwrap());
        if extra.contains(&"--visitor-rate") {
            args.truncate(args.len() - 2);
        }
        args.extend_from_slice(extra);
        self.router = spawn(&args);
    }

    /// Start a second router (its key, in `router2/`, is trusted from the start).
    pub fn second_router(&self) -> Running {
        self.second_router_with(&[])
    }

    /// [`Fog::second_router`] with `extra` arguments.
    pub fn second_router_with(&self, extra: &[&str]) -> Running {
        let data = self.dir.path().join("router2");
        let control = self.control.url();
        let mut args = router_args(&control, data.to_str().unwrap());
        args.extend_from_slice(extra);
        spawn(&args)
    }

    /// The second router's key (hex).
    pub fn second_router_key(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("router2/device.key")).unwrap();
        Identity::from_text(&text).unwrap().public_hex()
    }

    /// The index in `hosts` of the host running device `id`.
    pub fn host_of(&self, id: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.line.contains(id))
            .unwrap_or_else(|| panic!("no host of ours is device {id}"))
    }

    /// Control plane, router and `hosts` hosts with extra arguments from `host_args(i, dir)`.
    pub fn start_with(
        hosts: usize,
        host_args: impl Fn(usize, &std::path::Path) -> Vec<String>,
    ) -> Fog {
        Fog::start_with_control(hosts, &[], host_args)
    }

    /// Like [`Fog::start_with`], with extra arguments for the control plane.
    pub fn start_with_control(
        hosts: usize,
        control_args: &[&str],
        host_args: impl Fn(usize, &std::path::Path) -> Vec<String>,
    ) -> Fog {
        Fog::start_with_roles(hosts, control_args, &[], host_args)
    }

    /// Like [`Fog::start_with`], with extra arguments for the control plane and the router.
    pub fn start_with_roles(
        hosts: usize,
        control_args: &[&str],
        router_extra: &[&str],
        host_args: impl Fn(usize, &std::path::Path) -> Vec<String>,
    ) -> Fog {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
        // The routers' keys exist before the control plane starts, so they can be trusted.
        let router_key = |name: &str| {
            let (code, _, stderr) = run(&["keygen", "--key", &path(&format!("{name}/device.key"))]);
            assert_eq!(code, 0, "{stderr}");
            Identity::from_text(
                &std::fs::read_to_string(dir.path().join(format!("{name}/device.key"))).unwrap(),
            )
            .unwrap()
            .public_hex()
        };
        let (router_key, router2_key) = (router_key("router"), router_key("router2"));
        let control_data = path("control");
        let mut args = vec![
            "control",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &control_data,
            "--trust-router",
            &router_key,
            "--trust-router",
            &router2_key,
        ];
        args.extend_from_slice(control_args);
        let control = spawn(&args);
        let router_data = path("router");
        let control_url = control.url();
        let mut args = router_args(&control_url, &router_data);
        args.extend_from_slice(router_extra);
        let router = spawn(&args);
        let hosts = (0..hosts)
            .map(|i| {
                let data = path(&format!("host{i}"));
                let extra = host_args(i, dir.path());
                let control = control.url();
                let mut args = vec!["host", "--control", &control, "--data", &data, "--cpu", "1"];
                args.extend(extra.iter().map(String::as_str));
                spawn(&args)
            })
            .collect();
        let key = path("developer.key");
        let (code, _, stderr) = run(&["keygen", "--key", &key]);
        assert_eq!(code, 0, "{stderr}");
        Fog {
            dir,
            control,
            router,
            hosts,
            key,
            router_key,
        }
    }

    /// `fog ARGS --control URL --key KEY` → (code, stdout, stderr).
    pub fn fog(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        let control = self.control.url();
        all.extend_from_slice(&["--control", &control, "--key", &self.key]);
        run(&all)
    }

    /// Publish the counter example as `counter` in `tier`.
    pub fn publish_counter(&self, tier: &str) -> AppInfo {
        let (code, out, err) = self.fog(&[
            "publish",
            programs::COUNTER,
            "--name",
            "counter",
            "--tier",
            tier,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    pub fn app(&self, name: &str) -> AppInfo {
        let (code, out, err) = self.fog(&["ps", "--json"]);
        assert_eq!(code, 0, "{err}");
        let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
        apps.into_iter()
            .find(|a| a.name == name)
            .expect("app listed")
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        let (code, out, err) = self.fog(&["devices", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }
}

async fn through_router(fog: &Fog, method: &str, target: &str) -> Result<fog_tests::Reply, String> {
    fog_tests::request(fog.router.addr, method, target, &[], "").await
}

/// Load through the router until stopped: (successes, failures, time of the last failure).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Option<Instant>>>,
}

impl Load {
    pub fn start(addr: std::net::SocketAddr, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut last_failure = None;
                    while !stop.load(Ordering::Relaxed) {
                        let reply = fog_tests::request(
                            addr,
                            "POST",
                            "/apps/counter/api/increment",
                            &[],
                            "",
                        )
                        .await;
                        match reply {
                            Ok(reply) if reply.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                last_failure = Some(Instant::now());
                            }
                        }
                    }
                    last_failure
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    pub async fn finish(self) -> (u64, u64, Option<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut last = None;
        for task in self.tasks {
            if let Some(t) = task.await.unwrap() {
                last = Some(last.map_or(t, |l: Instant| l.max(t)));
            }
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            last,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_serve_survive_a_host_and_a_control_plane_restart() {
    let mut fog = Fog::start(3);

    // Publish counter as tier A: two replicas on two distinct devices.
    let info = fog.publish_counter("A");
    assert_eq!(info.replicas, 2);
    assert_eq!(info.running.len(), 2, "{info:?}");
    assert_ne!(info.running[0], info.running[1]);

    // 1,000 requests through the router, 8 at a time: all succeed.
    let mut handles = Vec::new();
    for worker in 0..8 {
        let addr = fog.router.addr;
        handles.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..125 {
                let target = if i % 2 == 0 {
                    "/apps/counter/api/increment"
                } else {
                    "/apps/counter/"
                };
                let method = if i % 2 == 0 { "POST" } else { "GET" };
                match fog_tests::request(addr, method, target, &[], "").await {
                    Ok(reply) if reply.status == 200 => {}
                    other => failures.push(format!("worker {worker} request {i}: {other:?}")),
                }
            }
            failures
        }));
    }
    for handle in handles {
        let failures = handle.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    let by_host = through_router(&fog, "GET", "/api/count").await;
    assert_eq!(
        by_host.unwrap().status,
        404,
        "a path without an app is refused"
    );
    let hostname = fog_tests::request(
        fog.router.addr,
        "GET",
        "/api/count",
        &[("host", "counter.localhost")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(hostname.status, 200);
    assert!(
        hostname.text().starts_with("{\"visits\":"),
        "{}",
        hostname.text()
    );

    // kill -9 the primary's host under load.
    let primary = &fog.app("counter").assigned[0];
    let victim = fog.host_of(primary);
    let load = Load::start(fog.router.addr, 8);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed = Instant::now();
    fog.hosts[victim].kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (ok, failed, last_failure) = load.finish().await;
    let recovered = last_failure.map_or(Duration::ZERO, |t| t.saturating_duration_since(killed));
    eprintln!(
        "host kill under load: {ok} requests succeeded, {failed} failed (8 in flight at most), \
         last failure {recovered:?} after the kill"
    );
    assert!(
        failed <= 8,
        "only in-flight requests may fail, {failed} did"
    );
    assert!(
        recovered < Duration::from_secs(5),
        "served again only after {recovered:?}"
    );
    // The control plane notices the dead device and places a second replica elsewhere.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let app = fog.app("counter");
        if app.running.len() == 2 && !app.running.contains(primary) {
            break;
        }
        assert!(Instant::now() < deadline, "counter not re-placed: {app:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Restart the control plane on the same address and data: registry intact, hosts reconcile.
    let before = fog.app("counter");
    let control_addr = fog.control.addr.to_string();
    let control_data = fog.dir.path().join("control").to_str().unwrap().to_string();
    fog.control.terminate();
    fog.control = spawn(&[
        "control",
        "--listen",
        &control_addr,
        "--data",
        &control_data,
        "--trust-router",
        &fog.router_key,
    ]);
    let after = fog.app("counter");
    assert_eq!(
        (after.version, &after.sha256, after.replicas),
        (before.version, &before.sha256, before.replicas)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let app = fog.app("counter");
        let alive = fog.devices().iter().filter(|d| d.alive).count();
        if alive == 2 && app.running.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hosts did not reconcile: {app:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = through_router(&fog, "GET", "/apps/counter/api/count")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    bad_input_is_refused_and_the_fog_keeps_serving(&fog).await;
}

/// A signed raw request, for the cases the CLI refuses to send.
pub async fn raw(
    fog: &Fog,
    identity: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
    meta: &str,
) -> fog_tests::Reply {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = identity.sign(method, path, ts, &auth::sha256_hex(body), meta);
    fog_tests::request(
        fog.control.addr,
        method,
        path,
        &[(auth::AUTH_HEADER, &header), (auth::META_HEADER, meta)],
        bytes::Bytes::copy_from_slice(body),
    )
    .await
    .unwrap()
}

async fn bad_input_is_refused_and_the_fog_keeps_serving(fog: &Fog) {
    let owner = Identity::from_text(&std::fs::read_to_string(&fog.key).unwrap()).unwrap();
    let stranger = Identity::generate();
    let counter = std::fs::read(programs::COUNTER).unwrap();
    let meta = r#"{"name":"counter","tier":"B"}"#;

    let check = |reply: fog_tests::Reply, status: u16, needle: &str| {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert!(
            reply.text().contains(needle),
            "{needle:?} not in {}",
            reply.text()
        );
    };
    // Oversized upload.
    let huge = vec![0u8; (fog_proto::api::MAX_COMPONENT_BYTES + 1) as usize];
    check(
        raw(
            fog,
            &owner,
            "POST",
            "/v1/apps",
            &huge,
            r#"{"name":"huge","tier":"B"}"#,
        )
        .await,
        413,
        "larger than the limit",
    );
    // Not a component.
    check(
        raw(
            fog,
            &owner,
            "POST",
            "/v1/apps",
            b"<html>",
            r#"{"name":"page","tier":"B"}"#,
        )
        .await,
        400,
        "not a WebAssembly binary",
    );
    check(
        raw(
            fog,
            &owner,
            "POST",
            "/v1/apps",
            b"\0asm\x01\0\0\0",
            r#"{"name":"core","tier":"B"}"#,
        )
        .await,
        400,
        "core WebAssembly module",
    );
    check(
        raw(
            fog,
            &owner,
            "POST",
            "/v1/apps",
            &counter[..counter.len() / 2],
            r#"{"name":"half","tier":"B"}"#,
        )
        .await,
        400,
        "not a valid component",
    );
    // Wrong signature: signed for another body.
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = owner.sign(
        "POST",
        "/v1/apps",
        ts,
        &auth::sha256_hex(b"something else"),
        meta,
    );
    let reply = fog_tests::request(
        fog.control.addr,
        "POST",
        "/v1/apps",
        &[(auth::AUTH_HEADER, &forged), (auth::META_HEADER, meta)],
        bytes::Bytes::from(counter.clone()),
    )
    .await
    .unwrap();
    check(reply, 401, "signature does not match");
    // Unsigned.
    let reply = fog_tests::request(fog.control.addr, "DELETE", "/v1/apps/counter", &[], "")
        .await
        .unwrap();
    check(reply, 401, "missing x-fog-auth");
    // Another owner's app, and its name.
    check(
        raw(fog, &stranger, "DELETE", "/v1/apps/counter", b"", "").await,
        403,
        "belongs to another key",
    );
    check(
        raw(
            fog,
            &stranger,
            "POST",
            "/v1/apps/counter/scale",
            br#"{"replicas":3}"#,
            "",
        )
        .await,
        403,
        "belongs to another key",
    );
    check(
        raw(fog, &stranger, "POST", "/v1/apps", &counter, meta).await,
        409,
        "taken by another key",
    );
    // Unknown app, malformed JSON, bad metadata.
    let (code, _, err) = fog.fog(&["scale", "nope", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("no app named \"nope\""), "{err}");
    check(
        raw(fog, &owner, "POST", "/v1/apps/counter/scale", b"{", "").await,
        400,
        "malformed JSON",
    );
    check(
        raw(fog, &owner, "POST", "/v1/apps", &counter, "{not json").await,
        400,
        "malformed x-fog-meta",
    );
    check(
        raw(
            fog,
            &owner,
            "POST",
            "/v1/apps",
            &counter,
            r#"{"name":"Bad_Name","tier":"B"}"#,
        )
        .await,
        400,
        "app name",
    );
    // Through the CLI: a file that is not a component is refused with the reason.
    let text = fog.dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let (code, _, err) = fog.fog(&["publish", text.to_str().unwrap(), "--wait", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a WebAssembly binary"), "{err}");

    // Nothing changed, and the fog still serves.
    let app = fog.app("counter");
    assert_eq!(app.version, 1);
    assert_eq!(app.replicas, 2);
    let (_, out, _) = fog.fog(&["ps", "--json"]);
    let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(apps.len(), 1, "no refused app was registered: {apps:?}");
    let reply = through_router(fog, "GET", "/apps/counter/api/count")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    // And `fog logs` shows the requests the hosts served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, out, _) = fog.fog(&["logs", "counter"]);
        assert_eq!(code, 0);
        if out.contains("GET /api/count") {
            break;
        }
        assert!(Instant::now() < deadline, "no log lines: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_use_htx_by_default_and_plain_http_on_request() {
    // Plain HTTP reaches only hosts that listen.
    let fog = Fog::start_with(2, |_, _| {
        ["--always-on", "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec()
    });
    fog.publish_counter("A");
    // The hosts announce their HTX endpoint (Noise static key) with their heartbeats.
    let routes = fog_tests::request(fog.control.addr, "GET", "/v1/routes", &[], "")
        .await
        .unwrap();
    let routes: Vec<fog_proto::api::Route> = serde_json::from_slice(&routes.body).unwrap();
    assert!(
        routes[0].replicas.iter().all(|r| r.htx.is_some()),
        "{routes:?}"
    );
    let router = spawn(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--control",
        &fog.control.url(),
        "--plain",
        "--betanet",
        "off",
        "--data",
        fog.dir.path().join("plain-router").to_str().unwrap(),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Alternate between the fog's router (HTX to the hosts) and a plain-HTTP one: both reach
    // the same primary replica, so the count goes up by one each time.
    for i in 1..=100u64 {
        let via = if i % 2 == 0 {
            router.addr
        } else {
            fog.router.addr
        };
        let reply = fog_tests::request(via, "POST", "/apps/counter/api/increment", &[], "")
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.text(), format!("{{\"visits\":{i}}}"));
    }
}

#[test]
fn bad_prices_and_bids_are_refused_on_the_command_line_before_anything_is_sent() {
    // An address nothing listens on: a request sent would fail with exit 1, not 2.
    let control = "http://127.0.0.1:9";
    for (args, reason) in [
        (
            vec!["publish", programs::HELLO, "--max-price=-1"],
            "must not be negative",
        ),
        (
            vec!["publish", programs::HELLO, "--max-price", "NaN"],
            "must be a number",
        ),
        (
            vec!["publish", programs::HELLO, "--max-price", "1e9"],
            "is absurd",
        ),
        (
            vec!["publish", programs::HELLO, "--bid", "auction"],
            "bid must be spot, on-demand or reserved",
        ),
        (vec!["host", "--price", "inf"], "must be a number"),
        (vec!["host", "--price=-0.5"], "must not be negative"),
    ] {
        let mut all = args.clone();
        all.extend(["--control", control]);
        let (code, _, err) = run(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(reason), "{args:?}: {err}");
    }
}
