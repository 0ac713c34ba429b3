//! `fog sim`: simulated devices against a real control plane and real routers, for measuring
//! the control plane and routers at fleet sizes one machine cannot run real hosts for.
//!
//! With `--apps M` the simulator also publishes M apps (copies of `hello` under different
//! names), its devices offer capacity and report running what they are assigned, and once every
//! app is placed it publishes one more app and measures how long until a device is told to run
//! it (publish to placement). Heartbeats are answered at once (the simulator does not send the
//! digest a real host sends to have its heartbeat held until something changes), so their round
//! trip is the control plane's work for one heartbeat, assignments included.

use fog_net::control_urls::ControlUrls;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use fog_host::agent::call;
use fog_host::attach::Attacher;
use fog_host::htx_server::static_key;
use fog_host::server::AppTable;
use fog_proto::api::{
    AppInfo, DeviceRegistered, DeviceRegistration, Heartbeat, HeartbeatReply, HtxEndpoint,
    RunningApp,
};
use fog_proto::auth::Identity;
use serde::Serialize;

/// Simulate devices: each registers with its own key, heartbeats (signed) like a host, and keeps
/// an attach connection (HTX, Noise XK with its device key) to every router the control plane
/// names, answering PINGs. Without `--apps`, simulated devices report that they may not be
/// harvested, so nothing is placed on them; with `--apps M` they offer one core each and report
/// running what they are assigned (they run no code). Prints the heartbeat latency seen.
#[derive(Debug, clap::Args)]
pub struct Sim {
    /// The control planes' base URLs, comma-separated: requests go to the one that answered
    /// last and fail over to the next on connection errors, timeouts and 503. With several,
    /// device N heartbeats first to the Nth (round the list), so the fleet spreads over them.
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    control: ControlUrls,
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Measure heartbeats for this many seconds once the fleet is set up (default: until
    /// Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS")]
    duration: Option<u64>,
    /// Time between one device's heartbeats, milliseconds, until the control plane announces
    /// another interval (which the devices then follow).
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Publish this many apps (copies of `hello` named `sim-app-N`, tier B) once the devices
    /// heartbeat, offer capacity, and measure publish-to-placement of one more app.
    #[arg(long, default_value_t = 0)]
    apps: u32,
    /// Churn while heartbeats are measured: every minute this percentage of the devices
    /// either leave (stop heartbeating for four intervals, so the control plane declares them
    /// dead and moves their replicas, then join again: register and start afresh) or drain
    /// (report they may not be harvested for four intervals, so their replicas move, then offer
    /// capacity again), half of each.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
    /// The fog's admission token, so the simulated devices are admitted (without it they stay
    /// pending and get no apps).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FOG_ADMISSION_TOKEN",
        hide_env_values = true
    )]
    admission_token: Option<String>,
}

/// What a simulation measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Devices that registered.
    pub devices: u32,
    /// Devices holding an attach connection to every router named to them at the end.
    pub attached: u32,
    /// Heartbeats answered.
    pub heartbeats: u64,
    /// Heartbeats that failed.
    pub failed: u64,
    /// Heartbeat round trip, milliseconds: median, 99th percentile and maximum.
    pub heartbeat_p50_ms: f64,
    /// 99th percentile.
    pub heartbeat_p99_ms: f64,
    /// Maximum.
    pub heartbeat_max_ms: f64,
    /// Seconds heartbeats were measured (after every device registered and, with `--apps`,
    /// every app was placed).
    pub seconds: f64,
    /// Apps published (besides the probe).
    pub apps: u32,
    /// Seconds from the first app's publish until every app was assigned to a device.
    pub apps_placed_s: Option<f64>,
    /// Milliseconds the probe app's publish request took.
    pub probe_publish_ms: Option<f64>,
    /// Milliseconds from sending the probe app's publish until the control plane answered that
    /// it is assigned to a device (polled every 10 ms).
    pub probe_placed_ms: Option<f64>,
    /// Milliseconds from sending the probe app's publish until a simulated device heard it is to
    /// run it (includes waiting for that device's next heartbeat: up to one interval).
    pub probe_heard_ms: Option<f64>,
    /// Times a device stopped heartbeating on purpose (`--churn`).
    pub churned: u64,
    /// Times a device that had left registered and joined again (`--churn`).
    pub rejoined: u64,
    /// Times a device drained: reported it may not be harvested (`--churn`).
    pub drained: u64,
    /// The heartbeat interval the control plane announced last, milliseconds (0: none).
    pub heartbeat_interval_ms: u64,
}

/// One simulated device's shared counters.
#[derive(Debug, Default)]
struct Counters {
    failed: AtomicU64,
    attached: AtomicU64,
    /// Distinct apps some device is assigned.
    assigned: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Heartbeat round trips are recorded only while this is set.
    measuring: AtomicBool,
    /// When the probe's publish was sent, and when a device first heard of it.
    probe_sent: OnceLock<Instant>,
    probe_heard: OnceLock<Instant>,
    churned: AtomicU64,
    rejoined: AtomicU64,
    drained: AtomicU64,
    interval_ms: AtomicU64,
}

/// Name of the app published to measure publish-to-placement.
const PROBE: &str = "sim-probe";

impl Sim {
    pub fn execute(self) -> anyhow::Result<()> {
        anyhow::ensure!(self.devices > 0, "--devices must be at least 1");
        anyhow::ensure!(
            self.heartbeat_ms >= 10,
            "--heartbeat-ms must be at least 10"
        );
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.churn),
            "--churn is a percentage of the devices per minute, between 0 and 100"
        );
        let report = crate::client::runtime()?.block_on(self.run())?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "fog sim: {} devices ({} attached to every router), {} heartbeats ({} failed) in \
                 {:.0} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                report.devices,
                report.attached,
                report.heartbeats,
                report.failed,
                report.seconds,
                report.heartbeat_p50_ms,
                report.heartbeat_p99_ms,
                report.heartbeat_max_ms
            );
            println!(
                "fog sim: heartbeat interval announced: {} ms; churn: {} left (and {} joined \
                 again), {} drained",
                report.heartbeat_interval_ms, report.churned, report.rejoined, report.drained
            );
            if self.apps > 0 {
                let ms = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0} ms"));
                println!(
                    "fog sim: {} apps placed in {}; one more app's publish took {}, placed {} \
                     after it was sent (a device told after {})",
                    report.apps,
                    report
                        .apps_placed_s
                        .map_or("never".to_string(), |s| format!("{s:.1} s")),
                    ms(report.probe_publish_ms),
                    ms(report.probe_placed_ms),
                    ms(report.probe_heard_ms)
                );
            }
        }
        Ok(())
    }

    async fn run(&self) -> anyhow::Result<Report> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(self.devices as usize)
            .build()?;
        let table = AppTable::new();
        let counters = Arc::new(Counters::default());
        let hosting = self.apps > 0;
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
        // Register every device first (a few at a time), so the fleet is whole when timing starts.
        let mut devices = Vec::new();
        let registration = DeviceRegistration {
            addr: None,
            region: "sim".into(),
            cpu: 1.0,
            mem_mb: 1024.0,
            disk_mb: 1024.0,
            price_cpu_hour: 0.0,
            admission_token: self.admission_token.clone().filter(|t| !t.is_empty()),
        };
        for i in 0..self.devices {
            let identity = Identity::generate();
            let registered: DeviceRegistered = call(
                &client,
                &identity,
                &self.control,
                "/v1/devices",
                &registration,
            )
            .await
            .with_context(|| format!("registering simulated device {i}"))?;
            devices.push((identity, registered.device_id));
            if (i + 1) % 500 == 0 {
                eprintln!("fog sim: {} devices registered", i + 1);
            }
        }
        // Set when the measurement is over: devices stop after their next heartbeat.
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let interval = Duration::from_millis(self.heartbeat_ms);
        let mut tasks = Vec::new();
        for (n, (identity, id)) in devices.into_iter().enumerate() {
            // Each device heartbeats first to its own plane of the list (round robin).
            let (client, control) = (client.clone(), self.control.starting_at(n));
            let registration = registration.clone();
            let (table, counters, latencies) = (table.clone(), counters.clone(), latencies.clone());
            let churn = self.churn;
            let stop = stop.clone();
            // Spread the first heartbeats over one interval, as devices that started apart.
            let offset = interval.mul_f64(n as f64 / self.devices as f64);
            tasks.push(tokio::spawn(async move {
                let key = static_key(&identity.secret_bytes());
                let public = hex::encode(key.public);
                let attacher = Attacher::new(key, table);
                let mut next = tokio::time::Instant::now() + offset;
                let mut fully_attached = false;
                let mut running: Vec<RunningApp> = Vec::new();
                // Seeds spread over the whole range: xorshift from a small seed draws numbers
                // near 0 for its first steps (every device would churn at once).
                let mut rng_state = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                // xorshift: each device draws on its own, without a shared generator.
                let mut draw = move || {
                    rng_state ^= rng_state << 13;
                    rng_state ^= rng_state >> 7;
                    rng_state ^= rng_state << 17;
                    (rng_state >> 11) as f64 / (1u64 << 53) as f64
                };
                // The interval the control plane announced (until then, --heartbeat-ms).
                let mut interval = interval;
                // Draining until then (`--churn`).
                let mut draining_until: Option<tokio::time::Instant> = None;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                    // Churn only while measuring, each heartbeat with the chance that makes
                    // `churn` % of the devices a minute.
                    if churn > 0.0
                        && counters.measuring.load(Ordering::Relaxed)
                        && draining_until.is_none()
                        && draw() < churn / 100.0 * interval.as_secs_f64() / 60.0
                    {
                        let away = interval * 4;
                        if draw() < 0.5 {
                            counters.drained.fetch_add(1, Ordering::Relaxed);
                            draining_until = Some(tokio::time::Instant::now() + away);
                        } else {
                            // Leave, then join again as a restarted host does: register first.
                            counters.churned.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(away).await;
                            running.clear();
                            match call::<DeviceRegistered>(
                                &client,
                                &identity,
                                &control,
                                "/v1/devices",
                                &registration,
                            )
                            .await
                            {
                                Ok(_) => {
                                    counters.rejoined.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(err) => {
                                    counters.failed.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!(device = id, "registering again failed: {err}");
                                }
                            }
                            next = tokio::time::Instant::now();
                            continue;
                        }
                    }
                    if draining_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                        draining_until = None;
                    }
                    let offering = hosting && draining_until.is_none();
                    let heartbeat = Heartbeat {
                        harvestable: offering,
                        cpu_free: if offering { 1.0 } else { 0.0 },
                        mem_free_mb: if offering { 1024.0 } else { 0.0 },
                        battery: None,
                        charging: true,
                        temperature_c: 0.0,
                        running: running.clone(),
                        logs: Vec::new(),
                        known: None,
                        periods: Vec::new(),
                        htx: Some(HtxEndpoint {
                            addr: None,
                            key: public.clone(),
                        }),
                        attached: attacher.links(),
                        harvest: None,
                    };
                    let path = format!("/v1/devices/{id}/heartbeat");
                    let sent = Instant::now();
                    match call::<HeartbeatReply>(&client, &identity, &control, &path, &heartbeat)
                        .await
                    {
                        Ok(reply) => {
                            let ms = sent.elapsed().as_secs_f64() * 1e3;
                            // Counted inside the measured window only (devices stop after
                            // their next heartbeat, a departed one after it rejoins).
                            if counters.measuring.load(Ordering::Relaxed)
                                && !stop.load(Ordering::Relaxed)
                            {
                                latencies.lock().expect("latencies lock").push(ms);
                            }
                            // Run (report running) what the device is assigned.
                            running = reply
                                .assignments
                                .iter()
                                .map(|a| RunningApp {
                                    app: a.manifest.name.clone(),
                                    sha256: a.sha256.clone(),
                                    in_flight: 0,
                                    requests: 0,
                                    failures: 0,
                                    fuel: 0,
                                    state_seq: 0,
                                    role: a.replication.role,
                                    caught_up: true,
                                    fenced: a.replication.fenced,
                                    // Simulated devices run no guest: nothing is measured.
                                    memory_bytes: None,
                                })
                                .collect();
                            if !running.is_empty() {
                                let mut assigned = counters.assigned.lock().expect("assigned lock");
                                for r in &running {
                                    if r.app == PROBE {
                                        let _ = counters.probe_heard.set(Instant::now());
                                    }
                                    if !assigned.contains(&r.app) {
                                        assigned.insert(r.app.clone());
                                    }
                                }
                            }
                            // Follow the interval the control plane announces; when it changes,
                            // the next heartbeat comes at a random point of the new one, so
                            // devices that learnt it within the same second spread out.
                            if reply.heartbeat_interval_ms > 0 {
                                let told = Duration::from_millis(reply.heartbeat_interval_ms);
                                if told != interval {
                                    next = tokio::time::Instant::now() + told.mul_f64(draw());
                                    interval = told;
                                }
                                counters
                                    .interval_ms
                                    .store(reply.heartbeat_interval_ms, Ordering::Relaxed);
                            }
                            attacher.set_routers(&id, &reply.attach);
                            let now = !reply.attach.is_empty()
                                && attacher.links().len() == reply.attach.len();
                            if now != fully_attached {
                                if now {
                                    counters.attached.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    counters.attached.fetch_sub(1, Ordering::Relaxed);
                                }
                                fully_attached = now;
                            }
                        }
                        Err(err) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(device = id, "heartbeat failed: {err}");
                        }
                    }
                }
                attacher.close_all();
            }));
        }
        let progress = {
            let (counters, latencies, total) = (counters.clone(), latencies.clone(), self.devices);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let beats = latencies.lock().expect("latencies lock").len();
                    let assigned = counters.assigned.lock().expect("assigned lock").len();
                    eprintln!(
                        "fog sim: {} of {total} devices attached to every router; {assigned} apps \
                         assigned; {beats} heartbeats measured, {} failed",
                        counters.attached.load(Ordering::Relaxed),
                        counters.failed.load(Ordering::Relaxed)
                    );
                }
            })
        };
        let mut placed = (None, None, None);
        let mut measured_from = Instant::now();
        let work = async {
            if hosting {
                placed = self.publish_and_probe(&counters, interval).await?;
            }
            measured_from = Instant::now();
            counters.measuring.store(true, Ordering::Relaxed);
            eprintln!("fog sim: fleet set up; measuring heartbeats");
            match self.duration {
                Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
                None => std::future::pending().await,
            }
            anyhow::Ok(())
        };
        tokio::select! {
            done = work => done?,
            _ = tokio::signal::ctrl_c() => {}
        }
        let measured = measured_from.elapsed();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        progress.abort();
        let _ = started;
        let mut latencies = latencies.lock().expect("latencies lock").clone();
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        };
        Ok(Report {
            devices: self.devices,
            attached: counters.attached.load(Ordering::Relaxed) as u32,
            heartbeats: latencies.len() as u64,
            failed: counters.failed.load(Ordering::Relaxed),
            heartbeat_p50_ms: quantile(0.5),
            heartbeat_p99_ms: quantile(0.99),
            heartbeat_max_ms: latencies.last().copied().unwrap_or(0.0),
            seconds: measured.as_secs_f64(),
            apps: self.apps,
            apps_placed_s: placed.0,
            probe_publish_ms: placed.1,
            probe_placed_ms: placed.2,
            probe_heard_ms: match (counters.probe_sent.get(), counters.probe_heard.get()) {
                (Some(sent), Some(heard)) => {
                    Some(heard.saturating_duration_since(*sent).as_secs_f64() * 1e3)
                }
                _ => None,
            },
            churned: counters.churned.load(Ordering::Relaxed),
            rejoined: counters.rejoined.load(Ordering::Relaxed),
            drained: counters.drained.load(Ordering::Relaxed),
            heartbeat_interval_ms: counters.interval_ms.load(Ordering::Relaxed),
        })
    }

    /// Publish `--apps` copies of `hello` (a few at a time), wait until a device is assigned
    /// each, then publish the probe: (seconds until all were placed, the probe's publish ms, ms
    /// until it was placed).
    async fn publish_and_probe(
        &self,
        counters: &Counters,
        interval: Duration,
    ) -> anyhow::Result<(Option<f64>, Option<f64>, Option<f64>)> {
        let api = Arc::new(crate::client::Api::with_identity(
            &self.control,
            Identity::generate(),
        )?);
        let first = Instant::now();
        let mut next = 0u32;
        let mut in_flight = tokio::task::JoinSet::new();
        // Eight publishes in flight at a time, like a few developers at once.
        while next < self.apps || !in_flight.is_empty() {
            while next < self.apps && in_flight.len() < 8 {
                in_flight.spawn(publish(api.clone(), format!("sim-app-{next}")));
                next += 1;
                if next.is_multiple_of(1000) {
                    eprintln!("fog sim: publishing app {next} of {}", self.apps);
                }
            }
            if let Some(done) = in_flight.join_next().await {
                done??;
            }
        }
        // Placed when some device is assigned every app; give up after a generous while.
        let deadline = Instant::now() + Duration::from_secs(600).max(interval * 100);
        let placed = loop {
            let assigned = counters.assigned.lock().expect("assigned lock").len();
            if assigned >= self.apps as usize {
                break Some(first.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                eprintln!(
                    "fog sim: only {assigned} of {} apps placed; giving up",
                    self.apps
                );
                break None;
            }
            tokio::time::sleep(interval / 4).await;
        };
        let sent = Instant::now();
        let _ = counters.probe_sent.set(sent);
        publish(api.clone(), PROBE.to_string()).await?;
        let probe_ms = sent.elapsed().as_secs_f64() * 1e3;
        let give_up = Instant::now() + Duration::from_secs(120);
        let probe_placed = loop {
            let info: AppInfo = api.get(&format!("/v1/apps/{PROBE}")).await?;
            if !info.assigned.is_empty() {
                break Some(sent.elapsed().as_secs_f64() * 1e3);
            }
            if Instant::now() > give_up {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Ok((placed, Some(probe_ms), probe_placed))
    }
}

/// Publish a copy of `hello` as `name` (tier B).
async fn publish(api: Arc<crate::client::Api>, name: String) -> anyhow::Result<AppInfo> {
    let meta = serde_json::json!({ "name": name, "tier": "B" }).to_string();
    api.signed(
        reqwest::Method::POST,
        "/v1/apps",
        fog_test_programs::shipped::HELLO.to_vec(),
        &meta,
    )
    .await
    .with_context(|| format!("publishing {name}"))
}
