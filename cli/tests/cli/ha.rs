//! No single control plane: three etcd members, three `fog control` processes on them, a router
//! and three hosts, each given every control plane's URL. Publish, scale and move go through
//! different control planes; then, under ~200 counter increments per second through the router,
//! the leading control plane is killed (`kill -9`), and later one etcd member.

use std::time::{Duration, Instant};

use fog_proto::api::{AppInfo, PlaneInfo};
use fog_proto::auth::Identity;
use fog_test_etcd::EtcdCluster;
use fog_test_programs as programs;

use crate::fog::{Running, run, spawn};
use crate::state::Increments;

/// `fog ARGS --control LIST --key KEY`, off the async workers (the load runs there).
pub(crate) async fn fog(args: &[&str], control: &str, key: &str) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--control", control, "--key", key].map(String::from));
    tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&all)
    })
    .await
    .unwrap()
}

pub(crate) async fn plane(url: &str) -> Option<PlaneInfo> {
    let addr = url.trim_start_matches("http://").parse().ok()?;
    let reply = fog_tests::request(addr, "GET", "/v1/plane", &[], "")
        .await
        .ok()?;
    serde_json::from_slice(&reply.body).ok()
}

/// The index of the one leading control plane among `urls` (the `None`s are dead), waiting
/// up to `limit` for one.
pub(crate) async fn leader(urls: &[Option<String>], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        for (i, url) in urls.iter().enumerate() {
            if let Some(url) = url
                && plane(url).await.is_some_and(|p| p.leading)
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no control plane leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn app(control: &str, key: &str) -> AppInfo {
    let (code, out, err) = fog(&["ps", "--json"], control, key).await;
    assert_eq!(code, 0, "{err}");
    let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
    apps.into_iter()
        .find(|a| a.name == "counter")
        .expect("listed")
}

/// Wait until `check` holds for the counter as `control` lists it.
pub(crate) async fn until(
    control: &str,
    key: &str,
    what: &str,
    check: impl Fn(&AppInfo) -> bool,
) -> AppInfo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = app(control, key).await;
        if check(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "{what}: {info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn wait_acked(load: &Increments, at_least: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.acked() < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} acknowledged",
            load.acked()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn count(router: std::net::SocketAddr) -> u64 {
    let reply = fog_tests::request(router, "GET", "/apps/counter/api/count", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let value: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    value["visits"].as_u64().unwrap_or(0)
}

/// The count, read again until it reaches `acked` or 10 s pass: the last value read.
pub(crate) async fn count_reaching(router: std::net::SocketAddr, acked: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reads = 0;
    loop {
        let total = count(router).await;
        reads += 1;
        if total >= acked || Instant::now() > deadline {
            if reads > 1 {
                println!("the count reached {total} at read {reads} ({acked} acknowledged)");
            }
            return total;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publish `hello` (a new version each time) until a control plane acknowledges it (the
/// component stored on two control planes; placing it is the leader's part): how long that took.
async fn publish_until_it_works(control: &str, key: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (code, _, err) = fog(
            &[
                "publish",
                programs::HELLO,
                "--name",
                "hello",
                "--tier",
                "A",
                "--wait",
                "0",
            ],
            control,
            key,
        )
        .await;
        if code == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "publishing never worked again: {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_control_planes_on_etcd_survive_the_leader_and_an_etcd_member_dying() {
    let mut etcd = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e}"));
    let store = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let (code, _, err) = run(&["keygen", "--key", &path("router/device.key")]);
    assert_eq!(code, 0, "{err}");
    let router_key = Identity::from_text(
        &std::fs::read_to_string(dir.path().join("router/device.key")).unwrap(),
    )
    .unwrap()
    .public_hex();
    let mut controls: Vec<Option<Running>> = (0..3)
        .map(|i| {
            Some(spawn(&[
                "control",
                "--listen",
                "127.0.0.1:0",
                "--data",
                &path(&format!("control{i}")),
                "--store",
                &store,
                "--trust-router",
                &router_key,
            ]))
        })
        .collect();
    let urls: Vec<String> = controls.iter().flatten().map(Running::url).collect();
    // Each component starts at a different control plane (hosts spread their heartbeats).
    let list = |first: usize| -> String {
        (0..3)
            .map(|i| urls[(first + i) % 3].clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let router = spawn(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--control",
        &list(0),
        "--data",
        &path("router"),
        "--betanet",
        "127.0.0.1:0",
        "--attach",
        "127.0.0.1:0",
        "--visitor-rate",
        "0",
    ]);
    let _hosts: Vec<Running> = (0..3)
        .map(|i| {
            spawn(&[
                "host",
                "--control",
                &list(i),
                "--data",
                &path(&format!("host{i}")),
                "--cpu",
                "1",
                "--always-on",
            ])
        })
        .collect();
    let key = path("developer.key");
    let (code, _, err) = run(&["keygen", "--key", &key]);
    assert_eq!(code, 0, "{err}");

    // Publish through the first control plane, scale through the second, move through the third.
    let (code, out, err) = fog(
        &[
            "publish",
            programs::COUNTER,
            "--name",
            "counter",
            "--tier",
            "A",
            "--json",
        ],
        &urls[0],
        &key,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let published: AppInfo = serde_json::from_str(&out).unwrap();
    assert_eq!(published.version, 1);
    // New devices earn the trust tier A needs within seconds, observed by whichever control
    // plane they heartbeat to and shared through the store.
    until(&urls[1], &key, "two replicas running", |a| {
        a.running.len() == 2
    })
    .await;
    let (code, _, err) = fog(&["scale", "counter", "3"], &urls[1], &key).await;
    assert_eq!(code, 0, "{err}");
    let scaled = until(&urls[1], &key, "three replicas running", |a| {
        a.running.len() == 3
    })
    .await;
    // Move the primary (first assigned) to another device running a replica.
    let spare = scaled.assigned[1].clone();
    let (code, _, err) = fog(&["move", "counter", "--to", &spare], &urls[2], &key).await;
    assert_eq!(code, 0, "{err}");
    until(&urls[0], &key, "moved", |a| {
        a.assigned.first() == Some(&spare) && a.running.contains(&spare)
    })
    .await;

    // ~200 increments/s through the router, then kill -9 the leader.
    let load = Increments::start(router.addr, 200);
    wait_acked(&load, 200, "increments before the kill").await;
    let alive: Vec<Option<String>> = urls.iter().cloned().map(Some).collect();
    let old = leader(&alive, Duration::from_secs(10)).await;
    let acked_at_kill = load.acked();
    controls[old].take().unwrap().kill();
    let killed = Instant::now();
    let mut survivors = alive.clone();
    survivors[old] = None;
    // Publishing through the list, the dead control plane first, while the others elect.
    let publishing = tokio::spawn({
        let (list, key) = (list(old), key.clone());
        async move { publish_until_it_works(&list, &key).await }
    });
    let new = leader(&survivors, Duration::from_secs(10)).await;
    let elected = killed.elapsed();
    let publish = publishing.await.unwrap();
    assert!(
        elected <= Duration::from_secs(5),
        "new leader after {elected:?}"
    );
    assert!(
        publish <= Duration::from_secs(5),
        "publishing worked again after {publish:?}"
    );
    // Keep the load on past the new leader's first reconciles.
    wait_acked(&load, acked_at_kill + 1000, "increments after the kill").await;

    // One etcd member dies: everything keeps working.
    etcd.kill(0);
    let acked_at_etcd = load.acked();
    let publish_after_etcd = publish_until_it_works(&list(new), &key).await;
    wait_acked(
        &load,
        acked_at_etcd + 400,
        "increments after an etcd member died",
    )
    .await;

    let (acked, failed, errors, rate) = load.finish().await;
    // Followers serve reads and may trail the primary by the writes still on their way (the
    // router reads from a follower while the primary is suspect or its routes are behind):
    // acknowledged increments all show within seconds; lost ones never do.
    let total = count_reaching(router.addr, acked).await;
    println!(
        "control-plane failover: new leader {:.2} s after kill -9, publish again {:.2} s; \
         {acked} increments acknowledged at {rate:.0}/s, {failed} failed, count {total}; \
         with an etcd member down, publish took {:.2} s",
        elected.as_secs_f64(),
        publish.as_secs_f64(),
        publish_after_etcd.as_secs_f64(),
    );
    assert_eq!(failed, 0, "failed visitor requests: {errors:?}");
    assert!(
        total >= acked,
        "acknowledged increments lost: {total} < {acked}"
    );
}
