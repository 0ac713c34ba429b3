//! Visitors reach apps at their `.onion` addresses: a private Tor network on loopback (Debian's
//! tor, started by `fog testnet`), a fog whose router runs an arti onion service per app, and
//! two visitors — a C tor client (curl through its SOCKS port) and arti (`fog fetch`).

use std::process::Command;
use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::fog::{Running, run, spawn};
use crate::publish::Fog;

/// `fog fetch -i URL` over the private network → (code, stdout, stderr).
fn arti_fetch(arti: &str, url: &str) -> (i32, String, String) {
    run(&["fetch", "-i", url, "--tor-network", arti])
}

/// curl through the C tor client → (status line and headers, body) or the error.
fn curl(socks: &str, url: &str) -> Result<(String, String), String> {
    let output = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-i",
            "-m",
            "60",
            "--socks5-hostname",
            socks,
            url,
        ])
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

/// Retry `attempt` until it succeeds or `limit` passes (descriptors take a while to publish).
fn eventually<T>(limit: Duration, what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(err) if Instant::now() > deadline => panic!("{what}: {err}"),
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

fn onion_of(fog: &Fog, app: &str) -> String {
    fog.app(app).onion.expect("every app has an onion address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_answer_at_their_onion_addresses_on_a_private_tor_network() {
    assert!(
        Command::new("tor").arg("--version").output().is_ok(),
        "this test needs Debian's tor: run scripts/setup.sh (apt-get install tor)"
    );
    let dir = tempfile::tempdir().unwrap();
    let testnet_dir = dir.path().join("testnet");
    // `fog testnet` prints its first line once the network has bootstrapped.
    let testnet: Running = spawn(&["testnet", "--dir", testnet_dir.to_str().unwrap()]);
    let socks = testnet.addr.to_string();
    let arti = testnet_dir.join("arti.toml").to_str().unwrap().to_string();

    let mut fog = Fog::start(2);
    fog.restart_router(&["--tor-network", &arti]);
    for (app, wasm) in [("hello", programs::HELLO), ("counter", programs::COUNTER)] {
        let (code, out, err) = fog.fog(&["publish", wasm, "--name", app, "--tier", "B"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(".onion/"),
            "publish prints the onion address: {out}"
        );
    }
    let (hello, counter) = (onion_of(&fog, "hello"), onion_of(&fog, "counter"));
    assert_eq!(hello.len(), 62);
    let (code, ps, _) = fog.fog(&["ps"]);
    assert_eq!(code, 0);
    assert!(ps.contains(&hello), "fog ps shows the onion address: {ps}");

    // arti reaches hello once its descriptor is published.
    let (head, _) =
        eventually(
            Duration::from_secs(240),
            "arti never reached hello",
            || match arti_fetch(&arti, &format!("http://{hello}/")) {
                (0, out, _) => Ok((out, ())),
                (_, _, err) => Err(err),
            },
        );
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    let (code, out, err) = arti_fetch(&arti, &format!("http://{hello}/style.css"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("content-type: text/css"), "{out}");

    // The C tor client, through its SOCKS port: hello, and counter's state across visits.
    let (head, body) = eventually(Duration::from_secs(120), "curl never reached hello", || {
        curl(&socks, &format!("http://{hello}/"))
    });
    assert!(
        head.contains("200 OK") && head.contains("text/html"),
        "{head}"
    );
    assert!(body.contains("<"), "{body}");
    let first = eventually(
        Duration::from_secs(120),
        "curl never reached counter",
        || curl(&socks, &format!("http://{counter}/")),
    );
    assert!(first.1.contains("You are visitor 1<"), "{:?}", first);
    let (_, second) = curl(&socks, &format!("http://{counter}/")).unwrap();
    assert!(second.contains("You are visitor 2<"), "{second}");
    let (code, out, err) = arti_fetch(&arti, &format!("http://{counter}/api/count"));
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("{\"visits\":2}"), "{out}");

    // The same addresses answer after the router restarts.
    fog.restart_router(&["--tor-network", &arti]);
    let (_, body) = eventually(
        Duration::from_secs(240),
        "counter gone after a router restart",
        || curl(&socks, &format!("http://{counter}/api/count")),
    );
    assert_eq!(body, "{\"visits\":2}");

    // Bad input: a well-formed address nobody serves; a removed app; its neighbour unaffected.
    let nobody = format!("{}d.onion", "a".repeat(55));
    let (code, _, err) = arti_fetch(&arti, &format!("http://{nobody}/"));
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = run(&["fetch", "http://not-an-onion.onion/"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a v3 onion address"), "{err}");
    let (code, _, err) = fog.fog(&["rm", "hello"]);
    assert_eq!(code, 0, "{err}");
    eventually(
        Duration::from_secs(60),
        "hello's service was not withdrawn",
        || match curl(&socks, &format!("http://{hello}/")) {
            Ok(answer) => Err(format!("still answering: {answer:?}")),
            Err(_) => Ok(()),
        },
    );
    let (_, body) =
        curl(&socks, &format!("http://{counter}/api/count")).expect("counter still served");
    assert_eq!(body, "{\"visits\":2}");

    // Every replica down: the onion service still answers, with the router's clear error.
    for host in &mut fog.hosts {
        host.kill();
    }
    let (head, body) = curl(&socks, &format!("http://{counter}/api/count")).expect("an answer");
    assert!(
        head.contains(" 502 ") || head.contains(" 503 "),
        "{head}\n{body}"
    );
    assert!(body.contains("counter"), "{body}");
    drop(testnet);
}
