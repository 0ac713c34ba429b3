//! Every hostile guest gets its documented status within its limit, the host's memory stays
//! bounded, and a well-behaved app on the same host keeps answering throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fog_host::{Limits, Manifest, Permissions};
use fog_test_programs as programs;
use fog_tests::{Reply, TestHost, get, resident_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls the `hello` app every 20 ms while hostile requests run, recording every non-200.
struct Watchdog {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Watchdog {
    fn start(host: &TestHost) -> Watchdog {
        let addr = host.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), ok.clone());
        let task = tokio::spawn(async move {
            let mut problems = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let reply =
                    fog_tests::request(addr, "GET", "/", &[("x-fog-app", "hello")], "").await;
                match reply {
                    Ok(reply) if reply.status == 200 && reply.elapsed < Duration::from_secs(2) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => problems.push(format!("{} in {:?}", reply.status, reply.elapsed)),
                    Err(err) => problems.push(err),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            problems
        });
        Watchdog { stop, ok, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let problems = self.task.await.unwrap();
        assert!(
            problems.is_empty(),
            "the well-behaved app failed: {problems:?}"
        );
        assert!(
            self.ok.load(Ordering::Relaxed) > 0,
            "the well-behaved app was never polled"
        );
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    f(&mut limits);
    limits
}

fn manifest(name: &str, limits: Limits) -> Manifest {
    Manifest {
        limits,
        ..Manifest::new(name)
    }
}

fn assert_failure(reply: &Reply, status: u16, kind: &str, reason: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert_eq!(reply.header("x-fog-error"), kind, "body: {}", reply.text());
    assert!(
        reply.text().contains(reason),
        "reason {:?} not in {:?}",
        reason,
        reply.text()
    );
    assert_eq!(
        reply.text().trim_end().lines().count(),
        1,
        "one-line reason: {:?}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_guest_gets_its_documented_error_and_the_host_keeps_serving() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("hello"), programs::HELLO);
    host.add(
        manifest("loop-fuel", limits(|l| l.fuel = 50_000_000)),
        programs::INFINITE_LOOP,
    );
    host.add(
        manifest(
            "loop-time",
            limits(|l| {
                l.fuel = u64::MAX / 2;
                l.timeout = Duration::from_millis(300)
            }),
        ),
        programs::INFINITE_LOOP,
    );
    host.add(
        manifest("bomb", limits(|l| l.memory_bytes = 32 << 20)),
        programs::MEMORY_BOMB,
    );
    host.add(Manifest::new("overflow"), programs::STACK_OVERFLOW);
    host.add(Manifest::new("trap"), programs::TRAP);
    host.add(
        manifest("huge", limits(|l| l.max_response_body = 1 << 20)),
        programs::HUGE_RESPONSE,
    );
    host.add(
        manifest("slow", limits(|l| l.timeout = Duration::from_millis(500))),
        programs::SLOW_BODY,
    );
    let watchdog = Watchdog::start(&host);

    let reply = get(host.addr, "loop-fuel", "/").await;
    assert_failure(&reply, 500, "fuel", "exhausted its fuel budget of 50000000");
    assert!(
        reply.elapsed < Duration::from_secs(5),
        "{:?}",
        reply.elapsed
    );

    let reply = get(host.addr, "loop-time", "/").await;
    assert_failure(&reply, 500, "timeout", "deadline of 300 ms");
    assert!(
        reply.elapsed >= Duration::from_millis(300),
        "{:?}",
        reply.elapsed
    );
    assert!(
        reply.elapsed < Duration::from_secs(2),
        "{:?}",
        reply.elapsed
    );

    let reply = get(host.addr, "bomb", "/").await;
    assert_failure(&reply, 500, "memory", "memory limit of 32 MiB");

    let reply = get(host.addr, "overflow", "/").await;
    assert_failure(&reply, 500, "stack-overflow", "overflowed its stack");

    let reply = get(host.addr, "trap", "/").await;
    assert_failure(&reply, 500, "trap", "hostile guest panicked on purpose");

    let reply = get(host.addr, "huge", "/").await;
    assert_failure(&reply, 500, "response-too-large", "limit of 1048576 bytes");

    let reply = get(host.addr, "slow", "/").await;
    assert_failure(&reply, 500, "timeout", "deadline of 500 ms");
    assert!(
        reply.elapsed < Duration::from_secs(2),
        "{:?}",
        reply.elapsed
    );

    watchdog.finish().await;
    let meter = host.apps.get("loop-fuel").unwrap().meter();
    assert_eq!((meter.requests, meter.failures), (1, 1));
    assert!(
        meter.fuel >= 50_000_000 * 9 / 10,
        "fuel metered: {}",
        meter.fuel
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_floods_keep_host_memory_bounded() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("hello"), programs::HELLO);
    host.add(
        manifest("bomb", limits(|l| l.memory_bytes = 48 << 20)),
        programs::MEMORY_BOMB,
    );
    host.add(
        manifest("loop", limits(|l| l.fuel = 20_000_000)),
        programs::INFINITE_LOOP,
    );
    host.add(
        manifest("huge", limits(|l| l.max_response_body = 4 << 20)),
        programs::HUGE_RESPONSE,
    );
    // Warm up so allocator pools and caches exist before the baseline.
    for app in ["bomb", "loop", "huge"] {
        assert_eq!(get(host.addr, app, "/").await.status, 500);
    }
    let before = resident_bytes();
    let watchdog = Watchdog::start(&host);
    for round in 0..10 {
        let mut waves = Vec::new();
        for app in ["bomb", "loop", "huge"] {
            for _ in 0..3 {
                let addr = host.addr;
                waves.push(tokio::spawn(async move { get(addr, app, "/").await }));
            }
        }
        for wave in waves {
            let reply = wave.await.unwrap();
            assert_eq!(reply.status, 500, "round {round}: {}", reply.text());
        }
    }
    watchdog.finish().await;
    let after = resident_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "resident memory before {} MiB, after {} MiB",
        before >> 20,
        after >> 20
    );
    // 90 hostile requests, each allowed up to 48 MiB: the host must give the memory back.
    assert!(
        growth < 160 << 20,
        "host memory grew by {} MiB",
        growth >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_503_and_oversized_uploads_413() {
    let host = TestHost::start(None).await;
    host.add(
        manifest(
            "slow",
            limits(|l| {
                l.max_concurrency = 2;
                l.timeout = Duration::from_millis(800)
            }),
        ),
        programs::SLOW_BODY,
    );
    host.add(
        manifest("api", limits(|l| l.max_request_body = 1024)),
        programs::API,
    );
    let mut calls = Vec::new();
    for _ in 0..4 {
        let addr = host.addr;
        calls.push(tokio::spawn(async move { get(addr, "slow", "/").await }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut statuses = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        if reply.status == 503 {
            assert_failure(&reply, 503, "overloaded", "concurrency limit of 2");
            assert_eq!(reply.header("retry-after"), "1");
        }
        statuses.push(reply.status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![500, 500, 503, 503]);

    let big = "x".repeat(4096);
    let reply = fog_tests::request(host.addr, "POST", "/echo", &[("x-fog-app", "api")], big)
        .await
        .unwrap();
    assert_failure(&reply, 413, "request-too-large", "limit of 1024 bytes");
}

/// Accept connections on a loopback port, answering each with a tiny 200, and count them.
async fn counting_server() -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_is_denied_unless_the_manifest_allows_it() {
    let (port, connections) = counting_server().await;
    let host = TestHost::start(None).await;
    host.add(Manifest::new("denied"), programs::OUTBOUND_HTTP);
    let mut allowed = Manifest::new("allowed");
    allowed.permissions = Permissions {
        outbound_http: true,
        ..Permissions::default()
    };
    host.add(allowed, programs::OUTBOUND_HTTP);

    let reply = get(host.addr, "denied", &format!("/?port={port}")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().starts_with("blocked:"), "{}", reply.text());
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    assert_eq!(
        connections.load(Ordering::Relaxed),
        0,
        "a denied request reached the network"
    );

    let reply = get(host.addr, "allowed", &format!("/?port={port}")).await;
    assert_eq!(reply.text(), "reached: 200");
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_sockets_are_denied_unless_the_manifest_allows_them() {
    let (port, connections) = counting_server().await;
    let host = TestHost::start(None).await;
    host.add(Manifest::new("denied"), programs::FILE_ACCESS);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/passwd"), "app-visible file\n").unwrap();
    let mut allowed = Manifest::new("allowed");
    allowed.permissions = Permissions {
        sockets: true,
        read_dir: Some(root.path().to_path_buf()),
        ..Permissions::default()
    };
    host.add(allowed, programs::FILE_ACCESS);

    let started = Instant::now();
    let reply = get(host.addr, "denied", &format!("/?port={port}")).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("file: blocked"), "{text}");
    assert!(lines[1].starts_with("dir: blocked"), "{text}");
    assert!(lines[2].starts_with("socket: blocked"), "{text}");
    assert_eq!(
        connections.load(Ordering::Relaxed),
        0,
        "a denied socket reached the network"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let reply = get(host.addr, "allowed", &format!("/?port={port}")).await;
    let text = reply.text();
    assert!(text.contains("file: open (17 bytes)"), "{text}");
    assert!(text.contains("dir: open (1 entries)"), "{text}");
    assert!(text.contains("socket: open"), "{text}");
}
