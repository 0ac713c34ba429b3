//! Which way to put one write on disk for `--durable`: sled's flush after the write, then
//! `fdatasync` of sled's log file (what the host does), against appending the write to a log
//! file of our own and calling `fdatasync` (what a separate write-ahead log would cost), one writer, the same small record, the same
//! file system (a temporary directory; set TMPDIR to measure another disk). Neither includes
//! the group commit that shares one flush among concurrent requests (`benches/durable.sh`
//! measures the whole path with it).
//!
//! `cargo bench -p fog-benches --bench durable_store`

use std::io::Write;

use criterion::{Criterion, criterion_group, criterion_main};

/// A counter increment as the host logs it: a key and its new decimal value.
const KEY: &[u8] = b"\0visits";

fn durable_writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable write");
    group.sample_size(30);

    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path().join("sled"))
        .open()
        .unwrap();
    let tree = db.open_tree("kv/counter").unwrap();
    let mut n = 0u64;
    group.bench_function("sled insert", |b| {
        b.iter(|| {
            n += 1;
            tree.insert(KEY, n.to_string().as_bytes()).unwrap();
        })
    });
    group.bench_function("sled insert + flush", |b| {
        b.iter(|| {
            n += 1;
            tree.insert(KEY, n.to_string().as_bytes()).unwrap();
            db.flush().unwrap();
        })
    });

    // What the host does for a durable app (`fog_host::durable`): the flush, then `fdatasync`
    // of sled's log file, so the size and the disk's cache are committed too.
    let sled_log = std::fs::File::open(dir.path().join("sled").join("db")).unwrap();
    group.bench_function("sled insert + flush + fdatasync (the host)", |b| {
        b.iter(|| {
            n += 1;
            tree.insert(KEY, n.to_string().as_bytes()).unwrap();
            db.flush().unwrap();
            sled_log.sync_data().unwrap();
        })
    });

    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("wal"))
        .unwrap();
    group.bench_function("log append + fdatasync", |b| {
        b.iter(|| {
            n += 1;
            let value = n.to_string();
            let mut record = Vec::with_capacity(16 + KEY.len() + value.len());
            record.extend_from_slice(&n.to_be_bytes());
            record.extend_from_slice(&(value.len() as u32).to_be_bytes());
            record.extend_from_slice(KEY);
            record.extend_from_slice(value.as_bytes());
            log.write_all(&record).unwrap();
            log.sync_data().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, durable_writes);
criterion_main!(benches);
