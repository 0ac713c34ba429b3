//! `fog up`: the demo from the bare binary (a copy of `fog` alone in an empty directory, no
//! example files), and flags checked before anything starts.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::fog::{FOG, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fog_up_demo_runs_from_the_bare_binary() {
    let home = tempfile::tempdir().unwrap();
    let bare = home.path().join("fog");
    std::fs::copy(FOG, &bare).unwrap();
    let mut child = Command::new(&bare)
        .args([
            "up",
            "--demo",
            "--hosts",
            "1",
            "--data",
            home.path().join("data").to_str().unwrap(),
            "--control-listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
            "--betanet",
            "off",
        ])
        .current_dir(home.path())
        .env_clear()
        .env("HOME", home.path())
        .env("FOG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the copied fog");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut router: Option<SocketAddr> = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("reading fog up's output");
        if let Some(rest) = line.split("router http://").nth(1) {
            router = rest.split(',').next().and_then(|a| a.parse().ok());
        }
        seen.push(line.clone());
        if line.starts_with("fog: up") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    // Killed (and waited for) when the test ends, pass or fail.
    let router = router.unwrap_or_else(|| panic!("no router address in {seen:#?}"));
    let _running = Running {
        child,
        addr: router,
        line: seen.first().cloned().unwrap_or_default(),
    };
    let output = seen.join("\n");
    for name in ["hello", "counter", "api", "docs"] {
        assert!(output.contains(&format!("published {name} ")), "{output}");
    }

    let hello = fog_tests::request(router, "GET", "/", &[("host", "hello.localhost")], "")
        .await
        .unwrap();
    assert_eq!(hello.status, 200);
    assert!(hello.text().contains("Hello from Fog"), "{}", hello.text());
    let docs = fog_tests::request(router, "GET", "/docs/", &[("host", "docs.localhost")], "")
        .await
        .unwrap();
    assert_eq!(docs.status, 200);
    assert!(
        docs.text().contains("Publishing a static site"),
        "{}",
        docs.text()
    );
}

#[test]
fn fog_up_refuses_bad_flags_before_starting_anything() {
    // A refusal names the flag, prints nothing on stdout (where `fog up` reports what it
    // started) and leaves no data directory behind.
    let missing = tempfile::tempdir().unwrap().path().join("no-such-dir");
    for (args, reason) in [
        (vec!["up", "--hosts", "0"], "--hosts must be between 1 and"),
        (vec!["up", "--relays", "999"], "--relays must be at most"),
        (
            vec![
                "up",
                "--control-listen",
                "127.0.0.1:7999",
                "--router-listen",
                "127.0.0.1:7999",
            ],
            "are both 127.0.0.1:7999",
        ),
        (
            vec!["up", "--demo", "--examples", missing.to_str().unwrap()],
            "no hello.wasm there",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let output = Command::new(FOG)
            .args(&args)
            .args(["--data", data.path().join("up").to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} started something: {stdout}");
        // Nothing was created in the data directory.
        assert!(
            !data.path().join("up").exists(),
            "{args:?} wrote its data directory"
        );
    }
}
