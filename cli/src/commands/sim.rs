//! `fog sim`: simulated devices against a real control plane and real routers, for measuring
//! the control plane and routers at fleet sizes one machine cannot run real hosts for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use fog_host::agent::call;
use fog_host::attach::Attacher;
use fog_host::htx_server::static_key;
use fog_host::server::AppTable;
use fog_proto::api::{
    DeviceRegistered, DeviceRegistration, Heartbeat, HeartbeatReply, HtxEndpoint,
};
use fog_proto::auth::Identity;
use serde::Serialize;

/// Simulate devices: each registers with its own key, heartbeats (signed) like a host, and keeps
/// an attach connection (HTX, Noise XK with its device key) to every router the control plane
/// names, answering PINGs. Simulated devices run no apps: they report that they may not be
/// harvested, so nothing is placed on them. Prints the heartbeat latency seen.
#[derive(Debug, clap::Args)]
pub struct Sim {
    /// Base URL of the control plane.
    #[arg(long, env = "FOG_CONTROL", default_value = "http://127.0.0.1:7070")]
    control: String,
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS")]
    duration: Option<u64>,
    /// Time between one device's heartbeats, milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
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
    /// Seconds the simulation ran after every device registered.
    pub seconds: f64,
}

/// One simulated device's shared counters.
#[derive(Debug, Default)]
struct Counters {
    failed: AtomicU64,
    attached: AtomicU64,
}

impl Sim {
    pub fn execute(self) -> anyhow::Result<()> {
        anyhow::ensure!(self.devices > 0, "--devices must be at least 1");
        anyhow::ensure!(
            self.heartbeat_ms >= 10,
            "--heartbeat-ms must be at least 10"
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
        }
        Ok(())
    }

    async fn run(&self) -> anyhow::Result<Report> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(self.devices as usize)
            .build()?;
        let apps = AppTable::new();
        let counters = Arc::new(Counters::default());
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
        // Register every device first (a few at a time), so the fleet is whole when timing starts.
        let mut devices = Vec::new();
        for i in 0..self.devices {
            let identity = Identity::generate();
            let registration = DeviceRegistration {
                addr: None,
                region: "sim".into(),
                cpu: 1.0,
                mem_mb: 1024.0,
                disk_mb: 1024.0,
                price_cpu_hour: 0.0,
            };
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
        let stop = match self.duration {
            Some(seconds) => Instant::now() + Duration::from_secs(seconds),
            None => Instant::now() + Duration::from_secs(u64::MAX / 4),
        };
        let started = Instant::now();
        let interval = Duration::from_millis(self.heartbeat_ms);
        let mut tasks = Vec::new();
        for (n, (identity, id)) in devices.into_iter().enumerate() {
            let (client, control) = (client.clone(), self.control.clone());
            let (apps, counters, latencies) = (apps.clone(), counters.clone(), latencies.clone());
            // Spread the first heartbeats over one interval, as devices that started apart.
            let offset = interval.mul_f64(n as f64 / self.devices as f64);
            tasks.push(tokio::spawn(async move {
                let key = static_key(&identity.secret_bytes());
                let public = hex::encode(key.public);
                let attacher = Attacher::new(key, apps);
                let mut next = tokio::time::Instant::now() + offset;
                let mut fully_attached = false;
                while Instant::now() < stop {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                    let heartbeat = Heartbeat {
                        harvestable: false,
                        cpu_free: 0.0,
                        mem_free_mb: 0.0,
                        battery: None,
                        charging: true,
                        temperature_c: 0.0,
                        running: Vec::new(),
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
                            latencies.lock().expect("latencies lock").push(ms);
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
                    eprintln!(
                        "fog sim: {} of {total} devices attached to every router; {beats} heartbeats, {} failed",
                        counters.attached.load(Ordering::Relaxed),
                        counters.failed.load(Ordering::Relaxed)
                    );
                }
            })
        };
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        tokio::select! {
            () = all => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        progress.abort();
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
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
