//! `fog run`: one component served over HTTP, limits and state, bad input.

use std::process::{Command, Stdio};
use std::time::Duration;

use fog_test_programs as programs;

use crate::fog::{FOG, Running, spawn};

/// Start `fog run` with `args` on an ephemeral port.
fn fog_run(args: &[&str]) -> Running {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    spawn(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fog_run_serves_hello_over_http() {
    let running = fog_run(&[programs::HELLO]);
    let reply = fog_tests::request(running.addr, "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/html; charset=utf-8");
    assert!(reply.text().contains("Hello from Fog"));
    let css = fog_tests::request(running.addr, "GET", "/style.css", &[], "")
        .await
        .unwrap();
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fog_run_applies_limits_and_keeps_state_in_its_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    {
        let mut running = fog_run(&[programs::COUNTER, "--data", dir]);
        for _ in 0..2 {
            let reply = fog_tests::request(running.addr, "GET", "/", &[], "")
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
        }
        // SIGTERM stops fog cleanly, and a clean stop saves every write.
        running.terminate();
    }
    let running = fog_run(&[programs::COUNTER, "--data", dir]);
    let count = fog_tests::request(running.addr, "GET", "/api/count", &[], "")
        .await
        .unwrap();
    assert_eq!(count.text(), r#"{"visits":2}"#);
    drop(running);

    let running = fog_run(&[
        programs::INFINITE_LOOP,
        "--fuel",
        "1000000",
        "--timeout",
        "2000",
    ]);
    let reply = fog_tests::request(running.addr, "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(reply.text(), "guest exhausted its fuel budget of 1000000\n");
}

/// Run `fog run` on a bad file; it must exit quickly with code 3 and one error line.
fn assert_rejected(bytes: &[u8], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.wasm");
    std::fs::write(&path, bytes).unwrap();
    let mut child = Command::new(FOG)
        .args(["run", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("fog run kept running on a bad file ({expected})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{expected}: stderr {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line for {expected}: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(expected), "{expected:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn fog_run_rejects_bad_input_with_one_clear_line() {
    assert_rejected(b"<html>not wasm</html>", "is not a WebAssembly binary");
    // The smallest valid core module.
    assert_rejected(
        b"\0asm\x01\0\0\0",
        "is a core WebAssembly module, not a component",
    );
    // The smallest valid component: it exports nothing.
    assert_rejected(
        b"\0asm\x0d\0\x01\0",
        "does not export wasi:http/incoming-handler",
    );
    let hello = programs::bytes(programs::HELLO);
    assert_rejected(&hello[..hello.len() / 2], "is not a valid component");
}

#[test]
fn fog_run_reports_a_missing_file_and_bad_flags() {
    let output = Command::new(FOG)
        .args(["run", "/nonexistent/app.wasm"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/app.wasm"),
        "{stderr}"
    );
    let output = Command::new(FOG)
        .args(["run", programs::HELLO, "--memory", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("memory must be between"), "{stderr}");
    let output = Command::new(FOG).args(["run"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}
