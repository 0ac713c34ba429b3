//! Publish → first successful response through the router, on loopback: a control plane, a
//! router and one host in this process (as `fog up` runs them), real sockets, real HTTP.
//!
//! Each round publishes the `hello` example under a new name, made unique by a custom section so
//! the host compiles it afresh ("cold"), then publishes the same bytes again under another name
//! ("cached": the host's compiled-component cache hits). Prints a Markdown table.
//!
//! `cargo bench -p fog-benches --bench publish_path`

use std::time::Duration;

use fog_host::agent::{self, AgentConfig};
use fog_host::server::{self, AppTable};
use fog_host::{Runtime, RuntimeConfig};
use fog_proto::auth::Identity;
use fog_test_programs as programs;

mod support;
use support::stopped;

const ROUNDS: usize = 10;

/// `bytes` with a custom section appended: a different component with the same behaviour.
fn unique(bytes: &[u8], tag: usize) -> Vec<u8> {
    let name = b"fog-bench";
    let payload = tag.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(size as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

fn percentile(values: &mut [Duration], p: f64) -> f64 {
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i].as_secs_f64() * 1000.0
}

fn main() {
    support::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop = || stopped(&stop_rx);
        let (control_url, router_url, token) =
            support::control_and_router(dir.path(), &stop_rx).await;
        let runtime = Runtime::new(RuntimeConfig {
            data_dir: Some(dir.path().join("host")),
            pool_size: 100,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let apps = AppTable::new();
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let host_addr = listener.local_addr().unwrap();
        tokio::spawn(server::serve(listener, apps.clone(), stop()));
        let config = AgentConfig {
            control: control_url.parse().expect("a control-plane URL"),
            advertise: Some(host_addr),
            region: "local".into(),
            cpu: 4.0,
            mem_mb: 4096.0,
            disk_mb: 4096.0,
            price_cpu_hour: 0.0,
            heartbeat: Duration::from_secs(1),
            harvest: None,
            htx: None,
            attacher: None,
            admission_token: Some(token),
        };
        tokio::spawn(agent::run(
            runtime,
            apps,
            Identity::generate(),
            config,
            stop(),
        ));
        tokio::time::sleep(Duration::from_secs(4)).await;

        let client = reqwest::Client::new();
        let key = Identity::generate();
        let hello = std::fs::read(programs::HELLO).unwrap();
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let bytes = unique(&hello, round);
            cold.push(
                support::publish_and_wait(
                    &client,
                    (&control_url, &router_url),
                    &key,
                    (&format!("cold-{round}"), "B"),
                    &bytes,
                )
                .await,
            );
            cached.push(
                support::publish_and_wait(
                    &client,
                    (&control_url, &router_url),
                    &key,
                    (&format!("warm-{round}"), "B"),
                    &bytes,
                )
                .await,
            );
        }
        println!("| case | rounds | p50 ms | p90 ms | max ms |");
        println!("|---|---|---|---|---|");
        for (label, values) in [
            ("hello, first publish (host compiles)", &mut cold),
            ("hello, same component again (compile cache)", &mut cached),
        ] {
            let max = values.iter().max().unwrap().as_secs_f64() * 1000.0;
            println!(
                "| {label} | {ROUNDS} | {:.0} | {:.0} | {max:.0} |",
                percentile(values, 0.5),
                percentile(values, 0.9)
            );
        }
    });
}
