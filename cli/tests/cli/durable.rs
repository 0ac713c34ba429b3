//! `fog run --durable`: killed with SIGKILL at random moments while increments stream in, it
//! never loses an increment it acknowledged.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::fog::{Running, spawn};

/// Kill-and-restart rounds, each on the data directory the previous one left.
const ROUNDS: u64 = 20;
/// Increments in flight at once (so kills land in the middle of writes and flushes).
const WORKERS: usize = 4;

/// A random number in `1..=max`, different in every process and call.
fn random_up_to(max: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % max + 1
}

/// The counter's value, read through `GET /api/count`.
async fn count(addr: SocketAddr) -> u64 {
    let reply = fog_tests::request(addr, "GET", "/api/count", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    visits(&reply.text())
}

fn visits(json: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["visits"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_loses_an_acknowledged_durable_write() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let run = || {
        spawn(&[
            "run",
            programs::COUNTER,
            "--data",
            dir,
            "--durable",
            "--listen",
            "127.0.0.1:0",
        ])
    };
    // Increments sent (some may have been written without an answer) and the highest count an
    // answer carried: the counter only grows, so every restart must show at least that.
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        let mut running: Running = run();
        let now = count(running.addr).await;
        let (highest, total) = (acked.load(Ordering::Acquire), sent.load(Ordering::Acquire));
        assert!(
            now >= highest,
            "round {round}: the count is {now} after kill -9, but {highest} was acknowledged \
             (kills after {kills:?} answers)"
        );
        assert!(now <= total, "round {round}: {now} counted, {total} sent");

        let answers = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (addr, sent, acked, answers, stop) = (
                    running.addr,
                    sent.clone(),
                    acked.clone(),
                    answers.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        sent.fetch_add(1, Ordering::AcqRel);
                        let reply =
                            fog_tests::request(addr, "POST", "/api/increment", &[], "").await;
                        match reply {
                            Ok(reply) if reply.status == 200 => {
                                acked.fetch_max(visits(&reply.text()), Ordering::AcqRel);
                                answers.fetch_add(1, Ordering::AcqRel);
                            }
                            Ok(reply) => panic!("increment answered {}", reply.status),
                            // Killed: connections are refused from now on.
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        // A random moment: after a random number of answers, with other increments in flight.
        let kill_after = random_up_to(40);
        let deadline = Instant::now() + Duration::from_secs(60);
        while answers.load(Ordering::Acquire) < kill_after {
            assert!(
                Instant::now() < deadline,
                "round {round}: increments stalled"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        running.kill();
        kills.push(kill_after);
        stop.store(true, Ordering::Release);
        for worker in workers {
            worker.await.unwrap();
        }
    }
    let running = run();
    let now = count(running.addr).await;
    let (highest, total) = (acked.load(Ordering::Acquire), sent.load(Ordering::Acquire));
    assert!(now >= highest, "the count is {now}, {highest} acknowledged");
    assert!(now <= total, "{now} counted, {total} sent");
}
