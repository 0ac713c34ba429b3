//! Per-request cost of the host: a fresh store, instantiation and the handler, with Fog's limits
//! (fuel, memory cap, deadline, concurrency cap) on, measured without sockets.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fog_host::{App, Manifest, Runtime, RuntimeConfig};
use fog_test_programs as programs;
use http_body_util::Full;

// The allocator the `fog` binary uses, so the figure is the shipped host's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header("host", "bench.localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn load(runtime: &Arc<Runtime>, name: &str, path: &str) -> App {
    runtime
        .load_file(Manifest::new(name), std::path::Path::new(path))
        .expect("loading the app")
}

fn per_request(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pooled = Runtime::new(RuntimeConfig::default()).unwrap();
    assert!(
        pooled.uses_pooling(),
        "the pooling allocator is unavailable here"
    );
    // The pooling allocator resetting memory with madvise, as before keep-resident pages.
    let madvise = Runtime::new(RuntimeConfig {
        keep_resident: 0,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let on_demand = Runtime::new(RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })
    .unwrap();

    let mut group = c.benchmark_group("instantiate+handle");
    for (label, runtime) in [
        ("pooling", &pooled),
        ("pooling madvise", &madvise),
        ("on-demand", &on_demand),
    ] {
        let hello = load(runtime, "hello", programs::HELLO);
        let counter = load(runtime, "counter", programs::COUNTER);
        group.bench_function(format!("hello {label}"), |b| {
            b.to_async(&tokio).iter(|| async {
                let (response, _) = hello.handle(request("/")).await;
                assert_eq!(response.status(), 200);
            })
        });
        group.bench_function(format!("counter /api/count {label}"), |b| {
            b.to_async(&tokio).iter(|| async {
                let (response, _) = counter.handle(request("/api/count")).await;
                assert_eq!(response.status(), 200);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_request);
criterion_main!(benches);
