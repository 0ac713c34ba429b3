//! Prometheus metrics of every role, scraped over HTTP from real processes (control plane,
//! router, host, two mix relays) before and after real traffic, and parsed with a Prometheus
//! text-format parser: counters and histograms move with the traffic, and no label carries a
//! visitor's address, a request path or a request id.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fog_test_programs as programs;
use prometheus_parse::{Sample, Scrape, Value};

use crate::fog::{Running, run, spawn};
use crate::publish::Fog;

const PLUGGED: &str =
    r#"{"charging": true, "battery": 0.9, "cpus": 2, "mem_total_mb": 4096, "user_idle_s": 3600}"#;

/// A request target (path and query) no label may carry.
const SECRET_PATH: &str = "/apps/hello/?private-visitor-path-4711";

/// The `/metrics` address a `fog` process printed in its first line.
fn metrics_addr(process: &Running) -> SocketAddr {
    process
        .line
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {:?}", process.line))
}

/// One scrape of `GET /metrics` at `addr`: the raw text and its parse.
async fn scrape(addr: SocketAddr) -> (String, Vec<Sample>) {
    let reply = fog_tests::request(addr, "GET", "/metrics", &[], "")
        .await
        .unwrap_or_else(|e| panic!("scraping {addr}: {e}"));
    assert_eq!(reply.status, 200, "{addr}: {}", reply.text());
    assert!(
        reply.headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        reply.headers
    );
    let text = reply.text();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{addr} is not in the Prometheus text format: {e}\n{text}"));
    (text, parsed.samples)
}

/// The value of `metric` with exactly `labels` among `samples` (a histogram's count), or 0.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("{metric} is a summary"),
        })
        .sum()
}

/// Scrape `addr` until `done` holds, or fail after `limit` saying `what`.
async fn scrape_until(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + limit;
    loop {
        let (text, samples) = scrape(addr).await;
        if done(&samples) {
            return (text, samples);
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No label value is a visitor's address, a request path or one of `request_ids`.
fn assert_bounded_labels(
    role: &str,
    text: &str,
    samples: &[Sample],
    request_ids: &HashSet<String>,
) {
    // On the raw text too: the parser splits labels naively.
    assert!(
        !text.contains("127.0.0.1"),
        "{role} shows an address:\n{text}"
    );
    assert!(
        !text.contains("private-visitor-path"),
        "{role} shows a path:\n{text}"
    );
    for sample in samples {
        for (name, label) in sample.labels.iter() {
            assert!(
                label != "127.0.0.1" && !label.contains('/') && !request_ids.contains(label),
                "{role}: {}{{{name}={label:?}}} carries a visitor's address, a path or a \
                 request id",
                sample.metric
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_exports_metrics_that_move_with_traffic_and_name_no_visitor() {
    let fog = Fog::start_with_roles(1, &[], &["--metrics-listen", "127.0.0.1:0"], |i, dir| {
        // A real harvest policy (sensors from a file), so its state shows in the metrics.
        let sensors = dir.join(format!("sensors{i}.json"));
        std::fs::write(&sensors, PLUGGED).unwrap();
        let policy = dir.join("harvest.toml");
        std::fs::write(&policy, "[harvest]\nmin_idle_s = 0\n").unwrap();
        vec![
            "--sensors".into(),
            sensors.to_str().unwrap().into(),
            "--harvest".into(),
            policy.to_str().unwrap().into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ]
    });
    let relays: Vec<Running> = (0..2)
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
                "--metrics-listen",
                "127.0.0.1:0",
            ])
        })
        .collect();
    let control = fog.control.addr;
    let router = metrics_addr(&fog.router);
    let host = metrics_addr(&fog.hosts[0]);
    let relay_addrs: Vec<SocketAddr> = relays.iter().map(metrics_addr).collect();

    let (code, out, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let info: fog_proto::api::AppInfo = serde_json::from_str(&out).unwrap();
    let bn1 = info
        .betanet
        .iter()
        .find(|n| n.starts_with("bn1:"))
        .unwrap()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "")
        .await
        .map_or(true, |r| r.status != 200)
    {
        assert!(
            Instant::now() < deadline,
            "hello never answered through the router"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ok = [("app", "hello"), ("status", "200")];
    let hello = [("app", "hello")];
    let (_, router_before) = scrape(router).await;
    let (_, host_before) = scrape(host).await;
    let (_, control_before) = scrape(control).await;
    let mut relays_before = Vec::new();
    for addr in &relay_addrs {
        relays_before.push(scrape(*addr).await.1);
    }

    // Traffic: 20 visits to one path, one to an app that does not exist, one over Betanet
    // through both relays.
    const VISITS: f64 = 20.0;
    let mut request_ids = HashSet::new();
    for _ in 0..VISITS as usize {
        let reply = fog_tests::request(fog.router.addr, "GET", SECRET_PATH, &[], "")
            .await
            .unwrap();
        assert!(
            reply.status == 200 || reply.status == 404,
            "{}",
            reply.status
        );
        if let Some(id) = reply.headers.get("x-fog-request-id") {
            request_ids.insert(id.to_str().unwrap().to_string());
        }
    }
    let unknown = fog_tests::request(fog.router.addr, "GET", "/apps/no-such-app-x/", &[], "")
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, err) = run(&[
            "fetch",
            "--mix",
            "balanced",
            &bn1,
            "--control",
            &fog.control.url(),
        ]);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Betanet fetch through 2 relays: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The router: every visit counted under the app and its status, timed, nothing under the
    // name of an app that does not exist; the host's attach connection and its RTT.
    let router_ok = value(&router_before, "fog_router_requests_total", &ok);
    let (text, after) = scrape_until(
        router,
        Duration::from_secs(10),
        "the router never measured the host's RTT",
        |s| value(s, "fog_router_attached_rtt_seconds", &[]) >= 1.0,
    )
    .await;
    // The visits and the Betanet fetch.
    let counted = value(&after, "fog_router_requests_total", &ok);
    assert!(counted - router_ok >= VISITS + 1.0, "{text}");
    assert!(
        value(&after, "fog_router_request_duration_seconds", &hello)
            - value(
                &router_before,
                "fog_router_request_duration_seconds",
                &hello
            )
            >= VISITS + 1.0,
        "{text}"
    );
    assert!(
        value(
            &after,
            "fog_router_requests_total",
            &[("app", ""), ("status", "404")]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&after, "fog_router_attached_hosts", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(value(&after, "fog_router_apps_routed", &[]), 1.0, "{text}");
    assert_bounded_labels("router", &text, &after, &request_ids);

    // The host: requests, latency and fuel per app; what it holds; its harvest state.
    let (text, after) = scrape(host).await;
    assert!(
        value(&after, "fog_host_requests_total", &ok)
            - value(&host_before, "fog_host_requests_total", &ok)
            >= VISITS + 1.0,
        "{text}"
    );
    assert!(
        value(&after, "fog_host_request_duration_seconds", &hello)
            - value(&host_before, "fog_host_request_duration_seconds", &hello)
            >= VISITS + 1.0,
        "{text}"
    );
    assert!(
        value(&after, "fog_host_fuel_burnt_total", &hello)
            > value(&host_before, "fog_host_fuel_burnt_total", &hello),
        "{text}"
    );
    // `hello`, and the canary every device runs for spot checks.
    assert_eq!(value(&after, "fog_host_apps_loaded", &[]), 2.0, "{text}");
    assert!(
        value(&after, "fog_host_resident_memory_bytes", &[]) > 1e6,
        "{text}"
    );
    assert_eq!(
        value(
            &after,
            "fog_host_harvest_state",
            &[("state", "harvesting"), ("cause", "rules_hold")]
        ),
        1.0,
        "{text}"
    );
    assert!(
        value(&after, "fog_host_cpu_offered_cores", &[]) > 0.0,
        "{text}"
    );
    assert_bounded_labels("host", &text, &after, &request_ids);

    // The control plane: heartbeats keep arriving; placement was timed; what it holds.
    let heartbeats = value(&control_before, "fog_control_heartbeats_total", &[]);
    let (text, after) = scrape_until(
        control,
        Duration::from_secs(10),
        "no heartbeat counted",
        |s| value(s, "fog_control_heartbeats_total", &[]) > heartbeats,
    )
    .await;
    assert!(
        value(&after, "fog_control_placement_duration_seconds", &[]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&after, "fog_control_devices", &[("state", "harvestable")]),
        1.0,
        "{text}"
    );
    assert_eq!(value(&after, "fog_control_apps", &[]), 1.0, "{text}");
    assert_eq!(
        value(&after, "fog_control_replicas_running", &[]),
        1.0,
        "{text}"
    );
    assert_bounded_labels("control plane", &text, &after, &request_ids);

    // Each relay allowed the hop the Betanet visit asked of it.
    for (addr, before) in relay_addrs.iter().zip(&relays_before) {
        let allowed = [("result", "allowed")];
        let (text, after) = scrape(*addr).await;
        assert!(
            value(&after, "fog_relay_forwards_total", &allowed)
                > value(before, "fog_relay_forwards_total", &allowed),
            "{text}"
        );
        assert_bounded_labels("relay", &text, &after, &request_ids);
    }

    // A metrics listener serves only /metrics.
    let other = fog_tests::request(host, "GET", "/apps/hello/", &[], "")
        .await
        .unwrap();
    assert_eq!(other.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_exports_its_replication_lag_and_sequence() {
    let fog = Fog::start_with(2, |_, _| {
        ["--always-on", "--metrics-listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec()
    });
    let info = fog.publish_counter("A");
    assert_eq!(info.running.len(), 2, "{info:?}");
    let app = fog.app("counter");
    let primary = metrics_addr(&fog.hosts[fog.host_of(&app.assigned[0])]);
    let follower = metrics_addr(&fog.hosts[fog.host_of(&app.assigned[1])]);
    let counter = [("app", "counter")];

    // Writes on the primary.
    const WRITES: usize = 10;
    for _ in 0..WRITES {
        let reply = fog_tests::request(
            fog.router.addr,
            "POST",
            "/apps/counter/api/increment",
            &[],
            "",
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let (_, at_primary) = scrape(primary).await;
    let head = value(&at_primary, "fog_host_replication_seq", &counter);
    assert!(head >= WRITES as f64, "primary's head {head}");
    assert!(
        !at_primary
            .iter()
            .any(|s| s.metric == "fog_host_replication_lag_entries"),
        "a primary has no lag"
    );
    // The follower: a lag series for the app, and it holds the primary's head (lag 0) once
    // caught up. (Semi-synchronous writes wait for a caught-up follower, so it is soon.)
    let (text, samples) = scrape_until(
        follower,
        Duration::from_secs(15),
        "the follower never caught up",
        |s| value(s, "fog_host_replication_seq", &counter) >= head,
    )
    .await;
    assert!(
        samples
            .iter()
            .any(|s| s.metric == "fog_host_replication_lag_entries"
                && s.labels.get("app") == Some("counter")),
        "no lag series on the follower:\n{text}"
    );
    assert_eq!(
        value(&samples, "fog_host_replication_lag_entries", &counter),
        0.0,
        "{text}"
    );
    assert_bounded_labels("follower", &text, &samples, &HashSet::new());
}
