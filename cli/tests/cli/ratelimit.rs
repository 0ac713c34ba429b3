//! The router's per-visitor rate limit with real processes on loopback: a flood from one address
//! is answered 429 with `Retry-After`, while a visitor from another address keeps getting 200.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::publish::Fog;

async fn hello_from(fog: &Fog, from: &str) -> fog_tests::Reply {
    let from: IpAddr = from.parse().unwrap();
    fog_tests::request_from(Some(from), fog.router.addr, "GET", "/apps/hello/", &[], "")
        .await
        .unwrap_or_else(|e| panic!("GET hello from {from}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_gets_429_with_retry_after_while_another_visitor_gets_200() {
    let mut fog = Fog::start(1);
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "hello", "--tier", "B"]);
    assert_eq!(code, 0, "{err}");
    fog.restart_router(&["--visitor-rate", "5", "--visitor-burst", "10"]);
    // Ready once the new router serves hello (asked from a third address, under its rate).
    let deadline = Instant::now() + Duration::from_secs(30);
    while hello_from(&fog, "127.0.0.3").await.status != 200 {
        assert!(Instant::now() < deadline, "hello never answered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 127.0.0.1 floods (60 requests back to back); 127.0.0.2 visits every 300 ms meanwhile.
    let flood = async {
        let started = Instant::now();
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..60 {
            let reply = hello_from(&fog, "127.0.0.1").await;
            if reply.status == 429 {
                retry_after = Some(
                    reply.headers[http::header::RETRY_AFTER]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
            }
            statuses.push(reply.status);
        }
        (statuses, retry_after, started.elapsed())
    };
    let visitor = async {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(hello_from(&fog, "127.0.0.2").await.status);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        statuses
    };
    let ((flooded, retry_after, took), visited) = tokio::join!(flood, visitor);

    let served = flooded.iter().filter(|s| **s == 200).count();
    eprintln!("flood: {served} of {} served in {took:?}", flooded.len());
    assert!(
        flooded.iter().all(|s| *s == 200 || *s == 429),
        "{flooded:?}"
    );
    // The burst, plus what the rate refilled while the flood lasted, and no more.
    let allowed = 10 + (5.0 * took.as_secs_f64()).ceil() as usize;
    assert!(
        served <= allowed,
        "{served} served in {took:?}, at most {allowed} allowed"
    );
    assert!(served < flooded.len(), "nothing refused: {flooded:?}");
    assert_eq!(retry_after, Some(1), "Retry-After of a 5/s limit");
    assert!(visited.iter().all(|s| *s == 200), "{visited:?}");
}
