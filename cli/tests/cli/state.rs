//! Apps keep their state when they move or lose a device: separate processes (control plane,
//! router, three hosts), a steady stream of counter increments through the router, and the
//! count checked against the increments that were acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fog_proto::api::AppInfo;
use fog_test_programs as programs;

use crate::publish::Fog;

/// About `rate` increments per second through the router until stopped.
pub(crate) struct Increments {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Increments {
    pub(crate) fn start(router: std::net::SocketAddr, rate: u64) -> Increments {
        let workers = 8u64;
        let interval = Duration::from_secs_f64(workers as f64 / rate as f64);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, acked, failed, errors) =
                    (stop.clone(), acked.clone(), failed.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut next = tokio::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        next += interval;
                        let reply = fog_tests::request(
                            router,
                            "POST",
                            "/apps/counter/api/increment",
                            &[],
                            "",
                        )
                        .await;
                        match reply {
                            Ok(reply) if reply.status == 200 => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(reply) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!(
                                    "{} {}",
                                    reply.status,
                                    reply.text().trim()
                                ));
                            }
                            Err(err) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(err);
                            }
                        }
                        tokio::time::sleep_until(next).await;
                    }
                })
            })
            .collect();
        Increments {
            stop,
            acked,
            failed,
            errors,
            tasks,
            started: Instant::now(),
        }
    }

    /// Stop: (acknowledged, failed, the first few errors, requests per second).
    /// Increments acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    pub(crate) async fn finish(self) -> (u64, u64, Vec<String>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let acked = self.acked.load(Ordering::Relaxed);
        let rate = acked as f64 / self.started.elapsed().as_secs_f64();
        let errors = self
            .errors
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .cloned()
            .collect();
        (acked, self.failed.load(Ordering::Relaxed), errors, rate)
    }
}

pub(crate) async fn count(fog: &Fog) -> u64 {
    let reply = fog_tests::request(fog.router.addr, "GET", "/apps/counter/api/count", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let value: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    value["visits"].as_u64().unwrap_or(0)
}

/// Wait until `done` holds of `name`'s app, or fail after `limit`.
pub(crate) async fn wait_for(
    fog: &Fog,
    name: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&AppInfo) -> bool,
) -> AppInfo {
    let deadline = Instant::now() + limit;
    loop {
        let app = fog.app(name);
        if done(&app) {
            return app;
        }
        assert!(Instant::now() < deadline, "{what}: {app:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `follower` leads the `counter` app and runs it, or fail after 15 s.
pub(crate) async fn wait_promoted(fog: &Fog, follower: &str) -> AppInfo {
    wait_for(
        fog,
        "counter",
        Duration::from_secs(15),
        "follower not promoted",
        |app| {
            app.assigned.first().map(String::as_str) == Some(follower)
                && app.running.iter().any(|d| d == follower)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_move_under_load_fails_nothing_and_loses_nothing() {
    let fog = Fog::start(3);
    let info = fog.publish_counter("A");
    let (primary, follower) = (info.assigned[0].clone(), info.assigned[1].clone());
    let target = fog
        .devices()
        .into_iter()
        .map(|d| d.id)
        .find(|d| *d != primary && *d != follower)
        .expect("a third device");
    // Let the follower catch up before the load starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let load = Increments::start(fog.router.addr, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moved_at = Instant::now();
    let (code, out, err) = fog.fog(&["move", "counter", "--to", &target]);
    assert_eq!(code, 0, "{err}");
    let took = moved_at.elapsed();
    println!("fog move: {}", out.trim());
    assert!(
        out.contains(&format!("moved from {primary} to {target}")),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failed, errors, rate) = load.finish().await;

    let app = fog.app("counter");
    assert_eq!(app.assigned[0], target, "the target is primary: {app:#?}");
    assert!(
        !app.assigned.contains(&primary),
        "the old primary let go: {app:#?}"
    );
    assert_eq!(app.assigned.len(), 2);
    let total = count(&fog).await;
    println!(
        "planned move: {acked} increments acknowledged at {rate:.0}/s, {failed} failed, \
         count {total}, move took {took:?}"
    );
    assert_eq!(failed, 0, "failed requests during the move: {errors:?}");
    assert_eq!(total, acked, "the count equals the acknowledged increments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tier_a_primary_is_replaced_by_its_follower_without_losing_acknowledged_writes() {
    let mut fog = Fog::start(3);
    let info = fog.publish_counter("A");
    let (primary, follower) = (info.assigned[0].clone(), info.assigned[1].clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = Increments::start(fog.router.addr, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = fog.host_of(&primary);
    fog.hosts[victim].kill();
    let killed = Instant::now();
    let app = wait_promoted(&fog, &follower).await;
    let promoted = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failed, errors, rate) = load.finish().await;
    let total = count(&fog).await;
    println!(
        "tier A failover: promoted in {promoted:?}; {acked} acknowledged at {rate:.0}/s, \
         {failed} failed, count {total}; events {:?}",
        app.events
    );
    assert!(
        promoted <= Duration::from_secs(5),
        "promotion took {promoted:?}"
    );
    assert!(
        total >= acked,
        "acknowledged increments were lost: {total} < {acked}"
    );
    // A request that failed may still have been applied before its answer was lost.
    assert!(
        total <= acked + failed,
        "{total} > {acked} + {failed}: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_b_app_loses_at_most_one_snapshot_interval() {
    let interval = Duration::from_secs(2);
    let mut fog = Fog::start_with_control(2, &["--snapshot-every", "2"], |_, _| {
        vec!["--always-on".to_string()]
    });
    let info = fog.publish_counter("B");
    let primary = info.assigned[0].clone();
    let load = Increments::start(fog.router.addr, 100);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let victim = fog.host_of(&primary);
    fog.hosts[victim].kill();
    // The count the router saw acknowledged by the time the device died.
    let (acked, failed, _, rate) = load.finish().await;
    let app = wait_for(
        &fog,
        "counter",
        Duration::from_secs(20),
        "not re-placed",
        |app| app.assigned.first().is_some_and(|d| *d != primary) && !app.running.is_empty(),
    )
    .await;
    let total = count(&fog).await;
    let lost = acked.saturating_sub(total);
    let bound = (rate * interval.as_secs_f64()).ceil() as u64 + 8;
    println!(
        "tier B: {acked} acknowledged at {rate:.0}/s ({failed} failed), {total} restored: lost \
         {lost} (one {interval:?} snapshot interval is about {bound}); events {:?}",
        app.events
    );
    assert!(total > 0, "nothing was restored");
    assert!(lost <= bound, "lost {lost} > {bound}");
}

/// About `rate` GETs per second of `hello` through the router until stopped; returns failures.
fn reads(
    router: std::net::SocketAddr,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let workers = 4u64;
        let interval = Duration::from_secs_f64(workers as f64 / rate as f64);
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut next = tokio::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        next += interval;
                        match fog_tests::request(router, "GET", "/apps/hello/", &[], "").await {
                            Ok(reply) if reply.status == 200 => ok += 1,
                            _ => failed += 1,
                        }
                        tokio::time::sleep_until(next).await;
                    }
                    (ok, failed)
                })
            })
            .collect();
        let mut total = (0, 0);
        for task in tasks {
            let (ok, failed) = task.await.unwrap();
            total = (total.0 + ok, total.1 + failed);
        }
        total
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_follows_load_parks_an_idle_app_and_wakes_it() {
    let fog = Fog::start(3);
    let (code, _, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "S",
        "--replicas",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = fog.fog(&[
        "scale", "hello", "--min", "0", "--max", "3", "--target", "20", "--idle", "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("autoscales between 0 and 3"), "{out}");
    // A burst of 150 req/s (7 times the target for one replica): scale out.
    let stop = Arc::new(AtomicBool::new(false));
    let burst = reads(fog.router.addr, 150, stop.clone());
    let out = wait_for(
        &fog,
        "hello",
        Duration::from_secs(30),
        "no scale-out under the burst",
        |app| app.replicas >= 2 && app.running.len() >= 2,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = burst.await.unwrap();
    println!("burst: {ok} served, {failed} failed; {:?}", out.events);
    assert_eq!(failed, 0);

    // A trickle of 4 req/s (under half the target per replica): scale in, one step at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = reads(fog.router.addr, 4, stop.clone());
    let quiet = wait_for(
        &fog,
        "hello",
        Duration::from_secs(40),
        "no scale-in when quiet",
        |app| app.replicas == 1,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (_, failed) = trickle.await.unwrap();
    assert_eq!(failed, 0);
    assert!(
        quiet.events.iter().any(|e| e.contains("scaled in")),
        "{:?}",
        quiet.events
    );

    // Nothing for 3 s: zero replicas.
    let parked = wait_for(
        &fog,
        "hello",
        Duration::from_secs(20),
        "not parked when idle",
        |app| app.replicas == 0 && app.running.is_empty(),
    )
    .await;
    assert!(
        parked.events.iter().any(|e| e.contains("scaled to zero")),
        "{:?}",
        parked.events
    );

    // The next request is held while a replica starts, and answered.
    let started = Instant::now();
    let reply = fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "")
        .await
        .unwrap();
    let woke = started.elapsed();
    println!("woken from zero in {woke:?}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let app = fog.app("hello");
    assert_eq!(app.replicas, 1);
    assert!(
        app.events.iter().any(|e| e.contains("woken by a request")),
        "{:?}",
        app.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_s_reads_anywhere_and_sends_every_write_to_the_one_primary() {
    let fog = Fog::start(3);
    let info = fog.publish_counter("S");
    assert_eq!(info.replicas, 3);
    wait_for(
        &fog,
        "counter",
        Duration::from_secs(15),
        "three replicas",
        |app| app.running.len() == 3,
    )
    .await;
    // Let the followers restore and catch up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Writes and reads mixed, 8 at a time: reads spread over the replicas, writes a follower
    // refuses go to the primary; every write lands exactly once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = fog.router.addr;
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..50 {
                let (method, path) = if i % 2 == 0 {
                    ("POST", "/apps/counter/api/increment")
                } else {
                    ("GET", "/apps/counter/api/count")
                };
                match fog_tests::request(router, method, path, &[], "").await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failures.push(format!("{} {}", reply.status, reply.text())),
                    Err(err) => failures.push(err),
                }
            }
            failures
        }));
    }
    for task in tasks {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert_eq!(count(&fog).await, 200);
    // Every replica served some of the load, and only the primary wrote. (Request lines reach
    // the control plane with heartbeats: wait for all 400 successes.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let (code, out, err) = fog.fog(&["logs", "counter", "--json"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<fog_proto::api::LogLine> = serde_json::from_str(&out).unwrap();
        if lines.iter().filter(|l| l.status == 200).count() >= 400 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let app = fog.app("counter");
    let primary = &app.assigned[0];
    let served_by = |device: &str| {
        lines
            .iter()
            .filter(|l| l.device == device && l.status == 200)
            .count()
    };
    for device in &app.assigned {
        assert!(served_by(device) > 0, "{device} served nothing");
    }
    let follower_writes = lines
        .iter()
        .filter(|l| l.device != *primary && l.method == "POST" && l.status == 200)
        .count();
    assert_eq!(follower_writes, 0, "a follower acknowledged a write");
    assert!(
        lines.iter().any(|l| l.error.as_deref() == Some("follower")),
        "no write was refused by a follower (all went to the primary by chance?)"
    );
}
