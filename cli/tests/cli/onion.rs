//! Visitors reach apps at their `.onion` addresses: a private Tor network on loopback (Debian's
//! tor, started by `fog testnet`), a fog whose router runs an arti onion service per app, and
//! two visitors — a C tor client (curl through its SOCKS port) and arti (`fog fetch`).

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fog_proto::api::OnionLeaseInfo;

use fog_test_programs as programs;

use crate::fog::{Running, run, spawn};
use crate::publish::Fog;

/// `fog fetch -i URL` over the private network → (code, stdout, stderr).
fn arti_fetch(arti: &str, url: &str) -> (i32, String, String) {
    arti_fetch_within(arti, url, 120)
}

/// [`arti_fetch`], giving up after `seconds`.
fn arti_fetch_within(arti: &str, url: &str, seconds: u32) -> (i32, String, String) {
    let seconds = seconds.to_string();
    run(&[
        "fetch",
        "-i",
        url,
        "--tor-network",
        arti,
        "--timeout",
        &seconds,
    ])
}

/// curl through the C tor client → (status line and headers, body) or the error.
fn curl(socks: &str, url: &str) -> Result<(String, String), String> {
    curl_within(socks, url, 60)
}

/// [`curl`], giving up after `seconds`.
fn curl_within(socks: &str, url: &str, seconds: u32) -> Result<(String, String), String> {
    let seconds = seconds.to_string();
    let output = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-i",
            "-m",
            &seconds,
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
    // A fresh arti client per fetch: on the small private network one can fail to build its
    // circuits now and then, so this one is retried like the first.
    let (out, _) = eventually(
        Duration::from_secs(120),
        "arti never fetched hello's style sheet",
        || match arti_fetch(&arti, &format!("http://{hello}/style.css")) {
            (0, out, _) => Ok((out, ())),
            (_, _, err) => Err(err),
        },
    );
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

/// Who holds `app`'s onion lease, and who did before (`GET /v1/onion-leases`).
fn lease_of(fog: &Fog, app: &str) -> OnionLeaseInfo {
    let url = format!("{}/v1/onion-leases", fog.control.url());
    let output = Command::new("curl")
        .args(["-s", "-S", "-f", &url])
        .output()
        .expect("running curl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let leases: Vec<OnionLeaseInfo> = serde_json::from_slice(&output.stdout).unwrap();
    leases
        .into_iter()
        .find(|l| l.app == app)
        .unwrap_or_else(|| panic!("no onion lease for {app}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_router_takes_over_the_onion_service_of_a_killed_router() {
    assert!(
        Command::new("tor").arg("--version").output().is_ok(),
        "this test needs Debian's tor: run scripts/setup.sh (apt-get install tor)"
    );
    let dir = tempfile::tempdir().unwrap();
    let testnet_dir = dir.path().join("testnet");
    let testnet: Running = spawn(&["testnet", "--dir", testnet_dir.to_str().unwrap()]);
    let socks = testnet.addr.to_string();
    let arti = testnet_dir.join("arti.toml").to_str().unwrap().to_string();

    // Two routers with onion fronts on the private network, one host.
    let mut fog = Fog::start_with_roles(1, &[], &["--tor-network", &arti], |_, _| {
        vec!["--always-on".to_string()]
    });
    let mut second = fog.second_router_with(&["--tor-network", &arti]);
    let keys = [fog.router_key.clone(), fog.second_router_key()];
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "hello", "--tier", "B"]);
    assert_eq!(code, 0, "{err}");
    let hello = onion_of(&fog, "hello");

    // One router takes hello's lease; `fog ps` names it.
    let holder = eventually(
        Duration::from_secs(240),
        "no router took hello's onion lease",
        || {
            fog.app("hello")
                .onion_router
                .ok_or("no holder yet".to_string())
        },
    );
    assert!(keys.contains(&holder), "{holder} is not one of our routers");
    let other = keys.iter().find(|k| **k != holder).unwrap().clone();
    let (_, ps, _) = fog.fog(&["ps"]);
    assert!(
        ps.contains(&format!("published by router {}", &holder[..16])),
        "{ps}"
    );
    let (head, _) = eventually(Duration::from_secs(240), "curl never reached hello", || {
        curl(&socks, &format!("http://{hello}/"))
    });
    assert!(head.contains("200 OK"), "{head}");
    assert!(
        lease_of(&fog, "hello")
            .terms
            .iter()
            .all(|t| t.router == holder),
        "only the first holder ever held hello's lease before the kill"
    );

    // kill -9 the publisher; the address answers again through the other router.
    let killed_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let killed = Instant::now();
    if holder == fog.router_key {
        fog.router.kill();
    } else {
        second.kill();
    }
    // Two kinds of visitor poll meanwhile: a new one (a fresh arti client each attempt, which
    // fetches the descriptor then) and a returning one (the C tor client, which holds the dead
    // router's descriptor from the visits above).
    let url = format!("http://{hello}/");
    // An attempt whose introduction an intro point acknowledged just as the router died waits
    // for a rendezvous that never comes: each attempt gives up after 20 s, as a visitor would
    // reload, and the C tor client abandons such a rendezvous after 31 s (`fog testnet` sets
    // its circuit build timeout; see README, "One router per onion service"). The takeover
    // takes about 15 s; 90 s leaves room for a loaded machine.
    let (new_visitor, returning_visitor) = std::thread::scope(|scope| {
        let fresh = scope.spawn(|| {
            eventually(
                Duration::from_secs(90),
                "hello never answered a new visitor after its router was killed",
                || match arti_fetch_within(&arti, &url, 20) {
                    (0, out, _) if out.starts_with("HTTP/1.1 200") => Ok(()),
                    (_, out, err) => Err(format!("{out}{err}")),
                },
            );
            killed.elapsed()
        });
        let returning = scope.spawn(|| {
            eventually(
                Duration::from_secs(90),
                "hello never answered a returning visitor after its router was killed",
                || {
                    let (head, _) = curl_within(&socks, &url, 20)?;
                    if head.contains("200 OK") {
                        Ok(())
                    } else {
                        Err(head)
                    }
                },
            );
            killed.elapsed()
        });
        (fresh.join().unwrap(), returning.join().unwrap())
    });
    let lease = lease_of(&fog, "hello");
    println!(
        "onion takeover: after its publisher was killed, hello's lease passed to the other \
         router after {:.1} s; hello answered a new visitor (fresh arti) after {:.1} s and a \
         returning visitor (C tor, descriptor cached) after {:.1} s",
        lease
            .terms
            .last()
            .map_or(0.0, |t| t.from_ms.saturating_sub(killed_ms) as f64 / 1000.0),
        new_visitor.as_secs_f64(),
        returning_visitor.as_secs_f64(),
    );
    assert_eq!(lease.router.as_deref(), Some(other.as_str()), "{lease:?}");
    // The other router was first granted the lease (and so the key) after the kill, and no two
    // terms of the lease ever overlapped.
    for term in lease.terms.iter().filter(|t| t.router == other) {
        assert!(
            term.from_ms >= killed_ms,
            "{other} held hello before the kill: {lease:?}"
        );
    }
    for pair in lease.terms.windows(2) {
        assert!(
            pair[0].until_ms < pair[1].from_ms,
            "overlapping terms: {lease:?}"
        );
    }
    drop(testnet);
}
