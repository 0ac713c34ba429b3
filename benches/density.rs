//! Density: what an idle app costs a host, how fast a cold app answers, and what one more app
//! costs to bring up on a host that already holds N.
//!
//! `cargo bench -p fog-benches --bench density` (apps from `FOG_DENSITY_APPS`, default
//! `200,1000`). Each measurement runs in a fresh child process (this binary re-executed) so that
//! one run's memory never counts in another's. Memory is the process's resident set from
//! `/proc/self/smaps_rollup` (anonymous, file-backed and shared-memory parts) and the live heap
//! from a counting global allocator. Prints Markdown tables for `benches/RESULTS.md`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fog_host::server::AppTable;
use fog_host::{Manifest, Runtime, RuntimeConfig};
use fog_test_programs as programs;
use http_body_util::Full;

/// The `fog` binary's allocator (mimalloc), counting the bytes live on the heap, so that the
/// memory measured here is what a host process holds.
struct Counting;

const INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to mimalloc unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { INNER.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Resident memory and live heap at one moment, in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss: i64,
    anon: i64,
    file: i64,
    shmem: i64,
    heap: i64,
}

impl Memory {
    fn now() -> Memory {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        let field = |name: &str| -> i64 {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory {
            rss: field("Rss:"),
            anon: field("Pss_Anon:"),
            file: field("Pss_File:"),
            shmem: field("Pss_Shmem:"),
            heap: HEAP.load(Ordering::Relaxed) as i64,
        }
    }

    /// `self - base`, divided by `n`.
    fn per(self, base: Memory, n: usize) -> Memory {
        let n = n.max(1) as i64;
        Memory {
            rss: (self.rss - base.rss) / n,
            anon: (self.anon - base.anon) / n,
            file: (self.file - base.file) / n,
            shmem: (self.shmem - base.shmem) / n,
            heap: (self.heap - base.heap) / n,
        }
    }

    fn kib(self) -> String {
        let k = |v: i64| v as f64 / 1024.0;
        format!(
            "{:.1} | {:.1} | {:.1} | {:.1} | {:.1}",
            k(self.rss),
            k(self.anon),
            k(self.file),
            k(self.shmem),
            k(self.heap)
        )
    }
}

fn request(app: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri("/")
        .header(fog_host::server::APP_HEADER, app)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn get(apps: &AppTable, app: &str) {
    let response = apps.handle(request(app)).await;
    assert_eq!(response.status(), 200, "{app}: {:?}", response.body());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

/// Let freed pages go back and background threads settle before reading memory.
fn settle() -> Memory {
    std::thread::sleep(Duration::from_millis(200));
    Memory::now()
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The app named for index `i`: even ones are copies of hello, odd ones of counter.
fn copy_of(i: usize) -> (String, &'static str) {
    if i.is_multiple_of(2) {
        (format!("hello-{i}"), programs::HELLO)
    } else {
        (format!("counter-{i}"), programs::COUNTER)
    }
}

/// One host with `n` apps: idle memory per app, cold first requests, the (n+1)th app.
fn child_apps(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hello = programs::bytes(programs::HELLO);
    let counter = programs::bytes(programs::COUNTER);
    let bytes = |path: &str| {
        if path == programs::HELLO {
            &hello
        } else {
            &counter
        }
    };
    tokio().block_on(async {
        let apps = AppTable::new();
        // The fixed base: the engine, the linker, the state database, and one app of each
        // component compiled, cached on disk and served once.
        for i in 0..2 {
            let (name, path) = copy_of(i);
            let app = runtime.load(Manifest::new(format!("base-{name}")), bytes(path));
            apps.insert(Arc::new(app.unwrap()));
            get(&apps, &format!("base-{name}")).await;
        }
        let base = settle();

        let mut loads = Vec::with_capacity(n);
        for i in 0..n {
            let (name, path) = copy_of(i);
            let started = Instant::now();
            let app = runtime.load(Manifest::new(name), bytes(path)).unwrap();
            apps.insert(Arc::new(app));
            loads.push(started.elapsed());
        }
        let idle = settle();

        // First requests to apps never visited, spread over the table: with their component
        // in memory (another app of it ran), then with nothing in memory (mapped from disk).
        let sample = 100.min(n / 2);
        let mut warm = Vec::with_capacity(sample);
        let mut cold = Vec::with_capacity(sample);
        let step = n / sample.max(1);
        // Two neighbours per sample, one copy of hello and one of counter, taking turns at being
        // the warm one.
        let pick = |k: usize, warm: bool| {
            let (a, b) = (k * step, k * step + 1);
            copy_of(if k.is_multiple_of(2) == warm { a } else { b }).0
        };
        for k in 0..sample {
            let started = Instant::now();
            get(&apps, &pick(k, true)).await;
            warm.push(started.elapsed());
        }
        for k in 0..sample {
            runtime.set_code_budget(0);
            let started = Instant::now();
            get(&apps, &pick(k, false)).await;
            cold.push(started.elapsed());
        }
        runtime.set_code_budget(fog_host::DEFAULT_CODE_BUDGET);
        let visit_started = Instant::now();
        for i in 0..n {
            get(&apps, &copy_of(i).0).await;
        }
        let visit = visit_started.elapsed();
        let visited = settle();

        // One more app on a host holding n: load to first response.
        let started = Instant::now();
        let app = runtime.load(Manifest::new("one-more"), &hello).unwrap();
        apps.insert(Arc::new(app));
        get(&apps, "one-more").await;
        let one_more = started.elapsed();

        let idle_per = idle.per(base, n);
        let visited_per = visited.per(base, n);
        let stats = runtime.code_stats();
        println!(
            "| {n} | {} | {} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
            base.rss >> 20,
            idle_per.kib(),
            visited_per.rss as f64 / 1024.0,
            visited_per.heap as f64 / 1024.0,
            stats.resident,
            ms(percentile(&mut loads, 0.5)),
            ms(percentile(&mut warm, 0.5)),
            ms(percentile(&mut cold, 0.5)),
            ms(percentile(&mut cold, 0.99)),
            visit.as_secs_f64() * 1e6 / n as f64,
            ms(one_more),
        );
    });
}

/// `bytes` with a custom section appended: a different component with the same behaviour.
fn unique(bytes: &[u8], tag: usize) -> Vec<u8> {
    let name = b"fog-density";
    let payload = (tag as u64).to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// `n` apps of `n` distinct components (hello, each with its own custom section), each loaded
/// and visited once, as when every publish is a new build: memory per app beyond the base.
fn child_distinct(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hello = programs::bytes(programs::HELLO);
    tokio().block_on(async {
        let apps = AppTable::new();
        apps.insert(Arc::new(
            runtime.load(Manifest::new("base"), &hello).unwrap(),
        ));
        get(&apps, "base").await;
        let base = settle();
        let started = Instant::now();
        for i in 0..n {
            let name = format!("distinct-{i}");
            let app = runtime
                .load(Manifest::new(&name), &unique(&hello, i))
                .unwrap();
            apps.insert(Arc::new(app));
            get(&apps, &name).await;
        }
        let per_publish = started.elapsed().as_secs_f64() * 1e3 / n as f64;
        let m = settle().per(base, n);
        println!("| {n} distinct | {} | {per_publish:.1} |", m.kib());
    });
}

/// `n` apps of one component assigned at once, as a host agent applies one heartbeat's
/// assignments: each load on the blocking pool (`spawn_blocking`, as the agent does), all at
/// the same time, then one request each. Memory per app beyond the base.
fn child_concurrent(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hello = Arc::new(programs::bytes(programs::HELLO));
    tokio().block_on(async {
        let apps = AppTable::new();
        let base = settle();
        let started = Instant::now();
        let loads: Vec<_> = (0..n)
            .map(|i| {
                let (runtime, hello) = (runtime.clone(), hello.clone());
                tokio::task::spawn_blocking(move || {
                    runtime.load(Manifest::new(format!("same-{i}")), &hello)
                })
            })
            .collect();
        for load in loads {
            apps.insert(Arc::new(load.await.unwrap().unwrap()));
        }
        for i in 0..n {
            get(&apps, &format!("same-{i}")).await;
        }
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        let m = settle().per(base, n);
        println!("| {n} at once | {} | {elapsed:.0} |", m.kib());
    });
}

/// What one `hello` app is made of: the same phases `Runtime::load` goes through, measured
/// separately over `n` apps.
fn child_breakdown(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hello = programs::bytes(programs::HELLO);
    tokio().block_on(async {
        let apps = AppTable::new();
        // Compile once so the on-disk cache holds the component, and warm the engine.
        apps.insert(Arc::new(
            runtime.load(Manifest::new("warm"), &hello).unwrap(),
        ));
        get(&apps, "warm").await;
        let mut keep_components = Vec::new();
        let mut keep_namespaces = Vec::new();
        let m0 = settle();
        for _ in 0..n {
            keep_components.push(runtime.compile(&hello, "hello").unwrap());
        }
        let m1 = settle();
        for i in 0..n {
            keep_namespaces.push(runtime.namespace(&format!("app-{i}")).unwrap());
        }
        let m2 = settle();
        for i in 0..n {
            let app = runtime.load(Manifest::new(format!("app-{i}")), &hello);
            apps.insert(Arc::new(app.unwrap()));
        }
        let m3 = settle();
        for i in 0..n {
            get(&apps, &format!("app-{i}")).await;
        }
        let m4 = settle();
        let rows = [
            (
                "component from the disk cache (`Runtime::compile`)",
                m1.per(m0, n),
            ),
            ("state namespace (2 sled trees)", m2.per(m1, n)),
            (
                "`Runtime::load` (component + linking + `App`)",
                m3.per(m2, n),
            ),
            ("first request served (then idle)", m4.per(m3, n)),
        ];
        for (what, m) in rows {
            println!("| {what} | {} |", m.kib());
        }
        drop((keep_components, keep_namespaces));
    });
}

/// Nanoseconds this thread has run on a CPU (from the scheduler's own accounting), so that
/// other load on a shared machine does not count.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time and wall time per `hello` request on one thread, with `keep_resident` bytes of
/// each memory slot reset in place: a figure that stays meaningful on a busy machine.
fn child_cpu(keep_resident: usize) {
    let runtime = Runtime::new(RuntimeConfig {
        keep_resident,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let apps = AppTable::new();
    let app = runtime.load(Manifest::new("hello"), &programs::bytes(programs::HELLO));
    apps.insert(Arc::new(app.unwrap()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..2000 {
            get(&apps, "hello").await;
        }
        let n = 20_000;
        let (cpu, wall) = (thread_cpu_ns(), Instant::now());
        for _ in 0..n {
            get(&apps, "hello").await;
        }
        let cpu = (thread_cpu_ns() - cpu) as f64 / 1e3 / n as f64;
        let wall = wall.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("| {} KiB | {cpu:.1} | {wall:.1} |", keep_resident >> 10);
    });
}

fn run_child(args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .arg("child")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "child {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("child") {
        let n: usize = args[2].parse().unwrap();
        match args[1].as_str() {
            "apps" => child_apps(n),
            "breakdown" => child_breakdown(n),
            "cpu" => child_cpu(n),
            "distinct" => child_distinct(n),
            "concurrent" => child_concurrent(n),
            other => panic!("unknown child mode {other}"),
        }
        return;
    }
    println!(
        "\nOne thread, 20,000 `hello` requests through `AppTable::handle` (µs per request):\n"
    );
    println!("| memory reset in place (keep-resident) | CPU µs | wall µs |");
    println!("|---|---|---|");
    let keeps = std::env::var("FOG_DENSITY_KEEP")
        .unwrap_or_else(|_| format!("0,{}", fog_host::DEFAULT_KEEP_RESIDENT));
    for keep in keeps.split(',') {
        print!("{}", run_child(&["cpu", keep.trim()]));
    }
    let counts = std::env::var("FOG_DENSITY_APPS").unwrap_or_else(|_| "200,1000".into());
    println!("\nWhat one idle `hello` app costs (per app, over 100 apps; KiB):\n");
    println!("| phase | RSS | anon | file | shmem | heap |");
    println!("|---|---|---|---|---|---|");
    print!("{}", run_child(&["breakdown", "100"]));
    println!(
        "\nN apps (copies of hello and counter) on one host (memory per app in KiB, beyond the base):\n"
    );
    println!(
        "| apps | base RSS MiB | idle RSS | anon | file | shmem | heap | visited RSS | visited heap | components in memory | load p50 ms | first request, code in memory, p50 ms | first request, code on disk, p50 ms | p99 ms | µs per app visit | one more app: load → first response ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in counts.split(',') {
        print!("{}", run_child(&["apps", n.trim()]));
    }
    println!(
        "\nApps of one component assigned at once and loaded concurrently on the blocking pool, as the agent does, then visited (per app, KiB):\n"
    );
    println!("| apps | RSS | anon | file | shmem | heap | ms for all |");
    println!("|---|---|---|---|---|---|---|");
    print!("{}", run_child(&["concurrent", "200"]));
    println!(
        "\nApps of distinct components (hello with a unique custom section), each loaded (compiled) and visited once (per app, KiB):\n"
    );
    println!("| apps | RSS | anon | file | shmem | heap | ms per load + first request |");
    println!("|---|---|---|---|---|---|---|");
    print!("{}", run_child(&["distinct", "200"]));
    println!(
        "\nmachine: {} cores, {}; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(str::to_string))
            .unwrap_or_default(),
        std::process::Command::new("date")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    );
}
