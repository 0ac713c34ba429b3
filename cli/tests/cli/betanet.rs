//! Visitors reach apps by their Betanet addresses: separate processes (control plane, router
//! with its Betanet front, hosts, three mix relays) and `fog fetch` as the visitor, directly and
//! through a strict 3-hop path; bad addresses fail clearly.

use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::fog::{Running, run, spawn};
use crate::publish::Fog;

/// `fog fetch ARGS --control URL` → (code, stdout, stderr).
fn fetch(fog: &Fog, args: &[&str]) -> (i32, String, String) {
    let control = fog.control.url();
    let mut all = vec!["fetch"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--control", &control]);
    run(&all)
}

fn relays(fog: &Fog, n: usize) -> Vec<Running> {
    (0..n)
        .map(|i| {
            let data = fog.dir.path().join(format!("relay{i}"));
            spawn(&[
                "relay",
                "--listen",
                "127.0.0.1:0",
                "--control",
                &fog.control.url(),
                "--data",
                data.to_str().unwrap(),
            ])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_fetch_apps_by_betanet_address_directly_and_through_three_relays() {
    let mut fog = Fog::start(2);
    let _relays = relays(&fog, 3);
    for (app, tier) in [("hello", "B"), ("counter", "A")] {
        let wasm = if app == "hello" {
            programs::HELLO
        } else {
            programs::COUNTER
        };
        let (code, out, err) = fog.fog(&["publish", wasm, "--name", app, "--tier", tier, "--json"]);
        assert_eq!(code, 0, "{err}");
        let _: fog_proto::api::AppInfo = serde_json::from_str(&out).unwrap();
    }
    let hello = fog.app("hello");
    let counter = fog.app("counter");
    assert_eq!(hello.betanet.len(), 2, "{hello:?}");
    let (hello_url, hello_bn1) = (&hello.betanet[0], &hello.betanet[1]);
    assert!(hello_url.starts_with("betanet://") && hello_bn1.starts_with("bn1:"));
    assert_ne!(hello.betanet, counter.betanet, "each app has its own key");

    // The front registers within a moment of the router starting.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (code, out, err) = loop {
        let fetched = fetch(&fog, &["-i", hello_bn1]);
        if fetched.0 == 0 || Instant::now() > deadline {
            break fetched;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("content-type: text/html"), "{out}");
    assert!(out.contains("0 relay hop(s)"), "{out}");
    assert!(out.contains("<html") || out.contains("<!doctype"), "{out}");

    // Both name forms, other paths and content types.
    let (code, out, err) = fetch(&fog, &["-i", &format!("{hello_url}/style.css")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("content-type: text/css"), "{out}");

    // The counter keeps its state across visits, over a strict 3-hop path too (once the
    // relays have registered).
    let counter_bn1 = counter
        .betanet
        .iter()
        .find(|n| n.starts_with("bn1:"))
        .unwrap();
    let (code, out, err) = fetch(&fog, &[counter_bn1]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("You are visitor 1<"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let (code, out, err) = loop {
        let fetched = fetch(&fog, &["-i", "--mix", "strict", counter_bn1]);
        if fetched.0 == 0 || Instant::now() > deadline {
            break fetched;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 relay hop(s)"), "{out}");
    assert!(out.contains("You are visitor 2<"), "{out}");
    let count = fog_tests::request(fog.router.addr, "GET", "/apps/counter/api/count", &[], "")
        .await
        .unwrap();
    assert_eq!(count.text(), "{\"visits\":2}");

    // A relay is no open forwarder: it refuses an address the control plane does not list,
    // without connecting to it.
    let listed = fog_tests::request(fog.control.addr, "GET", "/v1/relays", &[], "")
        .await
        .unwrap();
    let listed: Vec<fog_proto::api::RelayInfo> = serde_json::from_slice(&listed.body).unwrap();
    let first = &listed[0];
    let mut key = [0u8; 32];
    hex::decode_to_slice(&first.key, &mut key).unwrap();
    let path = [fog_htx::mix::Hop {
        relay: fog_htx::mix::Relay {
            addr: first.addr.clone(),
            key,
        },
        delay: Duration::ZERO,
    }];
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap().to_string();
    let err = match fog_htx::mix::dial(&path, &elsewhere_addr, Duration::from_secs(10)).await {
        Err(err) => err.to_string(),
        Ok(_) => panic!("the relay forwarded to an unlisted address"),
    };
    assert!(
        err.contains(&format!(
            "{elsewhere_addr} is not a relay, Betanet front or host the control plane lists"
        )),
        "{err}"
    );
    let reached = tokio::time::timeout(Duration::from_millis(300), elsewhere.accept()).await;
    assert!(
        reached.is_err(),
        "the relay connected to an unlisted address"
    );

    // Bad input: a name no app has, a malformed name, a web address.
    let unknown = format!("betanet://{}", "00".repeat(32));
    let (code, _, err) = fetch(&fog, &[&unknown]);
    assert_eq!(code, 1);
    assert!(err.contains("no app has the Betanet name"), "{err}");
    let (code, _, err) = fetch(&fog, &["bn1:notaname"]);
    assert_eq!(code, 1);
    assert!(err.contains("bn1"), "{err}");
    let (code, _, err) = fetch(&fog, &["http://hello.localhost/"]);
    assert_eq!(code, 1);
    assert!(err.contains("Betanet addresses"), "{err}");

    // A removed app's name no longer resolves; the other app is unaffected.
    let (code, _, err) = fog.fog(&["rm", "hello"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = fetch(&fog, &[hello_bn1]);
    assert_eq!(code, 1);
    assert!(err.contains("no app has the Betanet name"), "{err}");
    let (code, out, err) = fetch(&fog, &[&format!("{counter_bn1}/api/count")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"visits\":2}");

    // The same router restarted with its front inside TLS 1.3: the descriptor says so and the
    // visitor follows, directly and through relays; the address has not changed.
    fog.restart_router(&["--betanet-tls"]);
    for mix in ["performance", "balanced"] {
        let deadline = Instant::now() + Duration::from_secs(15);
        let (code, out, err) = loop {
            let fetched = fetch(
                &fog,
                &["-i", "--mix", mix, &format!("{counter_bn1}/api/count")],
            );
            if (fetched.0 == 0 && fetched.1.contains("over TLS")) || Instant::now() > deadline {
                break fetched;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("over TLS"), "{out}");
        assert!(out.ends_with("{\"visits\":2}"), "{out}");
    }
}
