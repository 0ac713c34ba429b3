//! The control plane's dashboard and a host's device page in a real browser: headless Chromium
//! (Debian's `chromium`) loads `/dashboard` from a running fog with an app, traffic and a move,
//! runs its script, and the DOM it leaves shows the devices, the app and the event; then the
//! device page of the host the app moved to, whose DOM shows the app and the harvest state;
//! a screenshot of each is kept as a test artefact. Bad dashboard and device-page requests get
//! a clear 4xx, and app names cannot carry HTML.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::publish::Fog;

/// Where test artefacts go: `artefacts/` beside the test binary's profile directory in the
/// cargo target directory.
fn artefacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/cli-… → target/<profile>/artefacts
    let dir = exe.parent().unwrap().parent().unwrap().join("artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run headless Chromium on `url` with `args`, letting the page's script run for a while of
/// virtual time (its fetches complete first); stdout. Fails with the reason when Chromium is
/// missing or does not finish.
fn chromium(url: &str, profile: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=6000", "--window-size=1280,900"])
        .args(args)
        .arg(url)
        .output()
        .expect("running timeout(1)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(127),
        "chromium is not installed (Debian package `chromium`; scripts/setup.sh installs it): \
         {stderr}"
    );
    assert!(
        output.status.success(),
        "chromium failed ({}): {stderr}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Sensors of a plugged-in, idle device: the default harvest policy harvests.
const PLUGGED: &str =
    r#"{"charging": true, "battery": 0.9, "cpus": 2, "mem_total_mb": 4096, "user_idle_s": 3600}"#;

/// Where a host's device page is, from the first line it printed.
fn device_page(line: &str) -> std::net::SocketAddr {
    line.split("device page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no device page in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_device_page_show_devices_apps_and_events_in_headless_chromium() {
    // Hosts under a real harvest policy (sensors from a file), each with its owner's page.
    let fog = Fog::start_with(2, |i, dir| {
        let sensors = dir.join(format!("sensors{i}.json"));
        std::fs::write(&sensors, PLUGGED).unwrap();
        vec![
            "--sensors".into(),
            sensors.to_str().unwrap().into(),
            "--status-listen".into(),
            "127.0.0.1:0".into(),
        ]
    });
    let (code, _, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    // Names cannot carry HTML: the control plane refuses them before anything is stored.
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "<img src=x>"]);
    assert_ne!(code, 0, "a name with HTML was published");
    assert!(err.contains("name"), "{err}");

    // Traffic, then a move: an event.
    for _ in 0..5 {
        let reply = loop {
            let reply = fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "")
                .await
                .unwrap();
            if reply.status == 200 {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(reply.status, 200);
    }
    let from = fog.app("hello").running[0].clone();
    let devices: Vec<String> = fog.devices().into_iter().map(|d| d.id).collect();
    assert_eq!(devices.len(), 2);
    let to = devices.iter().find(|d| **d != from).unwrap().clone();
    let (code, _, err) = fog.fog(&["move", "hello", "--to", &to]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fog.app("hello").events.iter().any(|e| e.contains("moving")) {
        assert!(Instant::now() < deadline, "{:?}", fog.app("hello"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad requests get a clear 4xx.
    for (target, status) in [
        ("/dashboard?app=%3Cscript%3E", 400),
        ("/dashboard/nope", 404),
    ] {
        let reply = fog_tests::request(fog.control.addr, "GET", target, &[], "")
            .await
            .unwrap();
        assert_eq!(reply.status, status, "{target}: {}", reply.text());
        assert!(reply.text().contains("dashboard"), "{}", reply.text());
    }

    let url = format!("{}/dashboard", fog.control.url());
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&url, profile.path(), &["--dump-dom"]);
    assert!(dom.contains("updated "), "the script never drew: {dom}");
    for device in &devices {
        assert!(
            dom.contains(&format!("data-device=\"{device}\"")),
            "{device}: {dom}"
        );
    }
    assert!(dom.contains("<td>hello</td>"), "{dom}");
    assert!(
        dom.contains(&format!("moving from {from} to {to}")),
        "{dom}"
    );

    let shot = artefacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        profile.path(),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());

    // The owner's page of the device hello moved to: the app, its harvest state, a chart.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fog.app("hello").running != [to.clone()] {
        assert!(Instant::now() < deadline, "{:?}", fog.app("hello"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some traffic on it, so its counters and fuel chart move.
    for _ in 0..5 {
        let reply = fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    let page = device_page(&fog.hosts[fog.host_of(&to)].line);
    for (target, status) in [("/?app=%3Cscript%3E", 400), ("/nope", 404)] {
        let reply = fog_tests::request(page, "GET", target, &[], "")
            .await
            .unwrap();
        assert_eq!(reply.status, status, "{target}: {}", reply.text());
        assert!(reply.text().contains("device page"), "{}", reply.text());
    }
    let url = format!("http://{page}/");
    let dom = chromium(&url, profile.path(), &["--dump-dom"]);
    assert!(dom.contains("updated "), "the script never drew: {dom}");
    assert!(dom.contains(&to), "the device id: {dom}");
    assert!(
        dom.contains("<tr data-app=\"hello\"><td>hello</td><td>primary</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<span id=\"harvest-state\" class=\"state ok\">harvesting</span>"),
        "{dom}"
    );
    assert!(dom.contains("<polyline class=\"line\""), "no chart: {dom}");
    let shot = artefacts().join("device.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        profile.path(),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
}
