//! `fog logs`: `--follow` prints requests served after it started, as they are served; request
//! lines survive a restart of the host (its lines on disk, never acknowledged, are shipped
//! again) and of the control plane (which keeps each app's last lines on its own disk).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::fog::{FOG, spawn};
use crate::publish::Fog;

/// Publish hello (tier B) and wait until `addr` serves `target` of it (for `host`).
async fn publish_hello(fog: &Fog, addr: std::net::SocketAddr, host: Option<&str>, target: &str) {
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "hello", "--tier", "B"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get(addr, host, target).await == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "hello never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `target` at `addr` (with `host` as the Host header, if given); its status.
async fn get(addr: std::net::SocketAddr, host: Option<&str>, target: &str) -> u16 {
    let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
    match fog_tests::request(addr, "GET", target, &headers, "").await {
        Ok(reply) => reply.status,
        Err(_) => 0,
    }
}

/// `fog logs hello` until its output holds every one of `wanted`, or fail after `limit`.
async fn logs_show(fog: &Fog, wanted: &[&str], limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (code, out, err) = fog.fog(&["logs", "hello"]);
        if code == 0 && wanted.iter().all(|w| out.contains(w)) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "fog logs never showed {wanted:?}: {out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_prints_requests_served_after_it_started() {
    let fog = Fog::start(1);
    publish_hello(&fog, fog.router.addr, None, "/apps/hello/").await;
    let control = fog.control.url();
    let mut follow = Command::new(FOG)
        .args(["logs", "hello", "--follow", "--control", &control])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting fog logs --follow");
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Requests after it started, one at a time: each is printed before the next is made.
    // (hello has no such pages: each is a 404 of the app's, logged like any answer.)
    for n in 0..3 {
        let target = format!("/apps/hello/followed-{n}");
        assert_eq!(get(fog.router.addr, None, &target).await, 404);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("fog logs --follow never printed {target}: {e}"));
            if line.contains(&format!("GET /followed-{n} ")) {
                assert!(line.contains(" 404 "), "{line}");
                break;
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_survive_a_host_and_a_control_plane_restart() {
    // The host listens, so it can be asked directly while the control plane is down.
    let host_args = |_: usize, _: &std::path::Path| {
        ["--always-on", "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec()
    };
    let mut fog = Fog::start_with(1, host_args);
    let host = fog.hosts[0].addr;
    let name = Some("hello.localhost");
    publish_hello(&fog, host, name, "/").await;
    assert_eq!(get(host, name, "/before-restart").await, 404);
    logs_show(&fog, &["GET /before-restart "], Duration::from_secs(15)).await;

    // The control plane goes away; the host serves on, and its lines wait on its disk.
    let control_addr = fog.control.addr.to_string();
    let control_data = fog.dir.path().join("control").to_str().unwrap().to_string();
    fog.control.terminate();
    assert_eq!(get(host, name, "/while-control-down").await, 404);
    // Then the host dies before it could ship them.
    fog.hosts[0].kill();

    fog.control = spawn(&[
        "control",
        "--listen",
        &control_addr,
        "--data",
        &control_data,
        "--trust-router",
        &fog.router_key,
    ]);
    let control = fog.control.url();
    let data = fog.dir.path().join("host0").to_str().unwrap().to_string();
    fog.hosts[0] = spawn(&[
        "host",
        "--control",
        &control,
        "--data",
        &data,
        "--cpu",
        "1",
        "--always-on",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = logs_show(
        &fog,
        &["GET /before-restart ", "GET /while-control-down "],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        out.matches("GET /while-control-down ").count(),
        1,
        "a line shipped twice: {out}"
    );

    // Bad queries and names get a clear 400.
    for target in [
        "/v1/apps/hello/logs?after=soon",
        "/v1/apps/hello/logs?since=1",
        "/v1/apps/Bad_Name/logs",
    ] {
        let reply = fog_tests::request(fog.control.addr, "GET", target, &[], "")
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{target}: {}", reply.text());
    }
}
