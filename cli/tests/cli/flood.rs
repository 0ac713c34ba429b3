//! A router's attach endpoint under a flood of half-open connections: TCP connections that never
//! finish (or never start) the Noise handshake. The router's memory stays bounded, visitors keep
//! being served, and hosts already attached stay attached.

use std::time::{Duration, Instant};

use fog_proto::api::AttachPoint;
use fog_test_programs as programs;

use crate::publish::Fog;

/// Connections the flood holds open at once.
const FLOOD: usize = 3000;
/// Most the router's resident memory may grow under the flood.
const MAX_GROWTH_KIB: u64 = 64 << 10;

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Let this test process hold `FLOOD` sockets and more.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let wanted = (FLOOD as u64 * 2 + 1024).min(limit.rlim_max);
        assert!(
            wanted >= FLOOD as u64 + 256,
            "this machine allows only {} open files; the flood test needs {}",
            limit.rlim_max,
            FLOOD + 256
        );
        limit.rlim_cur = wanted;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

async fn hello_through_router(fog: &Fog) -> u16 {
    match fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "").await {
        Ok(reply) => reply.status,
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_attach_connections_is_bounded_and_the_router_keeps_serving() {
    raise_fd_limit();
    let fog = Fog::start(1);
    let (code, _, err) = fog.fog(&["publish", programs::HELLO, "--name", "hello", "--tier", "B"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while hello_through_router(&fog).await != 200 {
        assert!(Instant::now() < deadline, "hello never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = fog_tests::request(fog.control.addr, "GET", "/v1/attach", &[], "")
        .await
        .unwrap();
    let points: Vec<AttachPoint> = serde_json::from_slice(&reply.body).unwrap();
    let attach = points[0].addr.clone();
    let pid = fog.router.child.id();
    let before = rss_kib(pid);

    // Half of the flood sends nothing; the other half sends a few bytes of a handshake and
    // stalls. None ever completes.
    let mut flood = Vec::with_capacity(FLOOD);
    let opened = Instant::now();
    for i in 0..FLOOD {
        let connect = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&attach),
        )
        .await;
        // A refused or timed-out connect means the kernel's backlog is full: the router is not
        // accepting faster than the flood.
        if let Ok(Ok(mut socket)) = connect {
            if i % 2 == 1 {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(&[0, 0, 48, 1, 2, 3]).await;
            }
            flood.push(socket);
        }
    }
    let held = flood.len();
    println!(
        "flood: {held} of {FLOOD} half-open connections held after {:?}",
        opened.elapsed()
    );

    // The router keeps serving visitors while the flood is held.
    let mut served = 0;
    for _ in 0..20 {
        if hello_through_router(&fog).await == 200 {
            served += 1;
        }
    }
    let during = rss_kib(pid);
    // The host attached before the flood is still attached, and reports a fresh RTT.
    let devices = fog.devices();
    println!(
        "router RSS: {before} KiB before, {during} KiB under the flood ({} KiB more); \
         {served}/20 visitor requests served",
        during.saturating_sub(before)
    );
    assert_eq!(served, 20, "visitors were refused during the flood");
    assert!(
        during.saturating_sub(before) <= MAX_GROWTH_KIB,
        "the router grew by {} KiB under {held} half-open connections",
        during - before
    );
    assert!(
        devices[0].alive && !devices[0].attached.is_empty(),
        "the attached host lost its router: {devices:#?}"
    );
    drop(flood);

    // The handshake deadline frees the router: a stalled handshake is closed by the router.
    let mut stalled = tokio::net::TcpStream::connect(&attach).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection that never handshakes is never closed"
    );
}
