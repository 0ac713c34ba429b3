//! The plan index kept up to date key by key from the store's feed of changes holds the same
//! records as one read whole from the tables, whatever registry writes come in whatever order,
//! by this control plane or (on etcd) another sharing the registry.

use std::time::{Duration, Instant};

use fog_proto::Limits;
use fog_proto::api::Tier;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{Backend, on_both_backends};
use crate::store::{AppRecord, AppSettings, PlacementRecord, Table, encode};
use crate::{Control, ControlConfig};

on_both_backends!(the_incremental_plan_index_equals_a_full_rebuild);

/// One registry write: to which table, for which of a few apps, with what (`None`: remove),
/// and whether another control plane sharing the registry makes it.
#[derive(Debug, Clone)]
struct Write {
    table: Table,
    app: u8,
    value: Option<u8>,
    by_other: bool,
}

/// Writes to the four tables the index is built from, over few apps and devices so that they
/// collide; now and then the index is read between them.
fn writes() -> impl Strategy<Value = Vec<(Write, bool)>> {
    let table = prop_oneof![
        Just(Table::Apps),
        Just(Table::Placements),
        Just(Table::Sites),
        Just(Table::Settings),
    ];
    let write = (
        table,
        0u8..6,
        proptest::option::weighted(0.8, any::<u8>()),
        any::<bool>(),
    )
        .prop_map(|(table, app, value, by_other)| Write {
            table,
            app,
            value,
            by_other,
        });
    proptest::collection::vec((write, proptest::bool::weighted(0.3)), 1..40)
}

/// The record `seed` stands for in `table`.
fn record(table: Table, app: &str, seed: u8) -> Vec<u8> {
    match table {
        Table::Apps => encode(&AppRecord {
            name: app.to_string(),
            owner: "owner".into(),
            version: u32::from(seed),
            sha256: format!("{seed:064x}"),
            size: 1,
            tier: [Tier::S, Tier::A, Tier::B][usize::from(seed % 3)],
            replicas: u32::from(seed % 3) + 1,
            limits: Limits::default(),
            updated_ms: 0,
        }),
        Table::Placements => encode(&PlacementRecord {
            // Up to three of five devices, chosen by the seed's bits.
            devices: (0..5)
                .filter(|d| seed & (1 << d) != 0)
                .take(3)
                .map(|d| format!("device-{d}"))
                .collect(),
            problem: (seed & 0x80 != 0).then(|| "short".to_string()),
        }),
        Table::Sites => format!("{seed:064x}").into_bytes(),
        Table::Settings => encode(&AppSettings {
            durable: seed.is_multiple_of(2),
            vars: [("seed".to_string(), seed.to_string())].into(),
            ..AppSettings::default()
        }),
        other => unreachable!("{} is not a plan table", other.name()),
    }
}

/// Whether `control`'s index holds what the tables hold.
fn matches_tables(control: &Control) -> bool {
    let whole = control.read_plan_index().unwrap();
    control.plan_index().unwrap().same_records(&whole)
}

async fn the_incremental_plan_index_equals_a_full_rebuild(backend: Backend) {
    let mut prefix = [0u8; 8];
    getrandom::fill(&mut prefix).unwrap();
    let prefix = hex::encode(prefix);
    let control = Control::new(backend.store_at(&prefix), ControlConfig::default());
    // On etcd a second control plane's store on the same registry, whose writes reach the
    // index through the watch; sled is one process's, so there it is the same store.
    let other = match backend {
        Backend::Sled => control.store.clone(),
        Backend::Etcd(_) => backend.store_at(&prefix),
    };
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&writes(), |writes| {
            let mut others_unseen = false;
            for (write, read) in writes {
                let app = format!("app-{}", write.app);
                let store = if write.by_other {
                    &other
                } else {
                    &control.store
                };
                match write.value {
                    Some(seed) => store
                        .put(write.table, &app, &record(write.table, &app, seed))
                        .unwrap(),
                    None => store.delete(write.table, &app).unwrap(),
                }
                others_unseen |= write.by_other && !std::sync::Arc::ptr_eq(&other, &control.store);
                // This control plane's own writes show at once; another's once the watch has
                // delivered them.
                if read && !others_unseen {
                    prop_assert!(matches_tables(&control), "after {write:?}");
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches_tables(&control) {
                prop_assert!(
                    Instant::now() < deadline,
                    "the index never caught up with the tables"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
        .unwrap();
    // A watch that restarts may have missed changes: the index is read whole again.
    let epoch = control.plan_index().unwrap().epoch("device-0");
    if let Some(feed) = &control.plan_feed {
        feed.lose();
    }
    assert!(matches_tables(&control));
    assert_ne!(control.plan_index().unwrap().epoch("device-0"), epoch);
}
