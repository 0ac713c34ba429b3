//! Admission with separate processes: a device or relay that registered without the fog's
//! admission token is given no app and is on no path until the operator admits it with
//! `fog admit`; a wrong token is refused and nothing is registered.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fog_proto::api::{PendingKey, RelayInfo};
use fog_test_programs as programs;

use crate::fog::{FOG, Running, spawn, spawn_with_env};
use crate::publish::Fog;

/// Poll `check` every 200 ms until it gives a value or `secs` pass (then panic with `what`).
async fn until<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(fog: &Fog, path: &str) -> T {
    let reply = fog_tests::request(fog.control.addr, "GET", path, &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

fn pending(fog: &Fog) -> Vec<PendingKey> {
    let (code, out, err) = fog.fog(&["devices", "--pending", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// `fog admit WHO`, the token read from the control plane's data directory as an operator on
/// that machine would.
fn admit(fog: &Fog, who: &str) {
    let control = fog.control.url();
    let data = fog.dir.path().join("control");
    let (code, out, err) = crate::fog::run(&[
        "admit",
        who,
        "--control",
        &control,
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admitted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unadmitted_device_is_never_assigned_an_app_until_the_operator_admits_it() {
    let fog = Fog::start(0);
    // The only device with capacity registers without the token.
    let data = fog.dir.path().join("stranger");
    let control = fog.control.url();
    let host = spawn_with_env(
        &[
            "host",
            "--control",
            &control,
            "--data",
            data.to_str().unwrap(),
            "--cpu",
            "1",
            "--always-on",
        ],
        &[("FOG_ADMISSION_TOKEN", "")],
    );
    let device = until(20, "the stranger to heartbeat", || {
        fog.devices()
            .into_iter()
            .find(|d| host.line.contains(&d.id) && d.alive && d.harvestable)
    })
    .await;
    assert!(!device.admitted, "{device:?}");
    assert!(
        pending(&fog)
            .iter()
            .any(|p| p.kind == "device" && p.name == device.id),
        "listed as pending"
    );

    let (code, _, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--wait",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    // Placement runs and finds nowhere to put it: the pending device's capacity is not offered.
    let app = until(20, "a placement attempt", || {
        Some(fog.app("hello")).filter(|a| a.problem.is_some())
    })
    .await;
    assert!(app.assigned.is_empty(), "{app:?}");
    assert!(app.running.is_empty(), "{app:?}");

    admit(&fog, &device.id);
    let app = until(30, "hello to run on the admitted device", || {
        Some(fog.app("hello")).filter(|a| a.running.contains(&device.id))
    })
    .await;
    assert_eq!(app.assigned, vec![device.id.clone()]);
    assert!(pending(&fog).is_empty());
    drop(host);
}

/// A relay with `/metrics`, registering with `token` ("" for none).
fn relay(fog: &Fog, name: &str, token: &str) -> (Running, String) {
    let data = fog.dir.path().join(name);
    let control = fog.control.url();
    let relay = spawn_with_env(
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--control",
            &control,
            "--data",
            data.to_str().unwrap(),
        ],
        &[("FOG_ADMISSION_TOKEN", token)],
    );
    let metrics = relay
        .line
        .split_whitespace()
        .find(|w| w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {:?}", relay.line))
        .to_string();
    (relay, metrics)
}

/// Hops this relay was asked to forward (any result), from its `/metrics`.
async fn forwards(metrics: &str) -> f64 {
    let addr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let reply = fog_tests::request(addr, "GET", "/metrics", &[], "")
        .await
        .unwrap();
    reply
        .text()
        .lines()
        .filter(|l| l.starts_with("fog_relay_forwards"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unadmitted_relay_is_never_on_a_path() {
    let fog = Fog::start(1);
    let admitted: Vec<(Running, String)> = (0..3)
        .map(|i| relay(&fog, &format!("relay{i}"), crate::fog::ADMISSION_TOKEN))
        .collect();
    let (stranger, stranger_metrics) = relay(&fog, "stranger", "");
    let (code, out, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let app: fog_proto::api::AppInfo = serde_json::from_str(&out).unwrap();
    let name = app.betanet.iter().find(|n| n.starts_with("bn1:")).unwrap();
    // The stranger registered (it is pending), the three others are listed; the stranger is
    // not.
    let admitted_addrs: Vec<String> = admitted.iter().map(|(r, _)| r.addr.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (listed, waiting) = loop {
        let listed: Vec<RelayInfo> = get_json(&fog, "/v1/relays").await;
        let waiting = pending(&fog);
        let all_listed = admitted_addrs
            .iter()
            .all(|a| listed.iter().any(|r| &r.addr == a));
        if all_listed && waiting.len() == 1 {
            break (listed, waiting);
        }
        assert!(
            Instant::now() < deadline,
            "relays never registered: listed {listed:?}, pending {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(waiting[0].kind, "relay");
    assert_eq!(waiting[0].name, stranger.addr.to_string());
    assert!(
        !listed.iter().any(|r| r.addr == stranger.addr.to_string()),
        "a pending relay is listed: {listed:?}"
    );
    let pending_key = waiting[0].key.clone();

    // Visitors build strict 3-hop paths from the listed relays: were the stranger listed, each
    // path would take it with probability 3/4.
    let control = fog.control.url();
    let mut fetched = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while fetched < 6 {
        let (code, out, err) =
            crate::fog::run(&["fetch", "--mix", "strict", name, "--control", &control]);
        if code == 0 {
            assert!(out.contains("<html") || out.contains("<!doctype"), "{out}");
            fetched += 1;
        } else {
            assert!(Instant::now() < deadline, "fetch through relays: {err}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let mut used = 0.0;
    for (_, metrics) in &admitted {
        used += forwards(metrics).await;
    }
    assert!(used >= 6.0, "the admitted relays carried the paths: {used}");
    assert_eq!(
        forwards(&stranger_metrics).await,
        0.0,
        "no hop on the stranger"
    );

    // Admitted by the operator, it is listed like the others.
    admit(&fog, &pending_key);
    let listed: Vec<RelayInfo> = get_json(&fog, "/v1/relays").await;
    assert!(
        listed.iter().any(|r| r.addr == stranger.addr.to_string()),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admission_token_is_refused_and_nothing_is_registered() {
    let dir = tempfile::tempdir().unwrap();
    let control_data = dir.path().join("control");
    let control = spawn(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data",
        control_data.to_str().unwrap(),
    ]);
    let url = control.url();
    let host_data = dir.path().join("host");
    let mut host = Command::new(FOG)
        .args(["host", "--control", &url, "--always-on", "--data"])
        .arg(&host_data)
        .env("FOG_LOG", "warn")
        .env("FOG_ADMISSION_TOKEN", "not-this-fogs-token-at-all")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(host.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let refusal = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the host reports the refusal");
        if line.contains("/v1/devices") {
            break line;
        }
    };
    let _ = host.kill();
    let _ = host.wait();
    assert!(refusal.contains("403"), "{refusal}");
    assert!(refusal.contains("wrong admission token"), "{refusal}");
    for path in ["/v1/devices", "/v1/pending"] {
        let reply = fog_tests::request(control.addr, "GET", path, &[], "")
            .await
            .unwrap();
        assert_eq!(reply.text(), "[]", "{path}: nothing registered");
    }

    // The operator's command with a wrong token is refused the same way.
    let key = "ab".repeat(32);
    let (code, _, err) = crate::fog::run(&[
        "admit",
        &key,
        "--control",
        &url,
        "--admission-token",
        "not-this-fogs-token-at-all",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("403") && err.contains("wrong admission token"),
        "{err}"
    );
    // The right one (from the control plane's data directory) admits it.
    let (code, out, err) =
        crate::fog::run(&["admit", "token", "--data", control_data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), crate::fog::ADMISSION_TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_loses_its_replicas_to_an_admitted_one() {
    let fog = Fog::start(2);
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "hello", "--tier", "B"]);
    assert_eq!(code, 0, "{err}");
    let app = until(30, "hello to run", || {
        Some(fog.app("hello")).filter(|a| !a.running.is_empty())
    })
    .await;
    let first = app.running[0].clone();

    let control = fog.control.url();
    let data = fog.dir.path().join("control");
    let (code, out, err) = crate::fog::run(&[
        "admit",
        "--revoke",
        &first,
        "--control",
        &control,
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let app = until(40, "hello to move off the revoked device", || {
        Some(fog.app("hello"))
            .filter(|a| !a.assigned.contains(&first) && a.running.iter().any(|d| *d != first))
    })
    .await;
    assert_eq!(app.assigned.len(), 1, "{app:?}");
    let revoked = fog.devices().into_iter().find(|d| d.id == first).unwrap();
    assert!(!revoked.admitted && revoked.alive, "{revoked:?}");
}
