//! The store trait's contract, on sled and on etcd alike.

use super::{Backend, on_both_backends};
use crate::store::{Revision, StoreError, Table};

on_both_backends!(
    records_list_in_key_order_per_table_and_delete,
    a_conditional_write_fails_once_the_record_changed_since_its_read,
    only_one_of_two_creations_of_a_record_wins,
    bulk_tables_hold_values_larger_than_an_etcd_request,
    a_listing_returns_every_record_of_a_large_table,
);

async fn records_list_in_key_order_per_table_and_delete(backend: Backend) {
    let store = backend.store();
    for key in ["b", "c", "a"] {
        store
            .put(Table::Apps, key, format!("app {key}").as_bytes())
            .unwrap();
    }
    store.put(Table::Devices, "a", b"device a").unwrap();
    let keys: Vec<String> = store
        .list(Table::Apps)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(
        store.get(Table::Apps, "a").unwrap().as_deref(),
        Some(&b"app a"[..])
    );
    assert_eq!(
        store.get(Table::Devices, "a").unwrap().as_deref(),
        Some(&b"device a"[..])
    );
    store.delete(Table::Apps, "a").unwrap();
    assert_eq!(store.get(Table::Apps, "a").unwrap(), None);
    assert_eq!(store.list(Table::Apps).unwrap().len(), 2);
    assert!(store.get(Table::Devices, "a").unwrap().is_some());
    store.flush().unwrap();
}

async fn a_conditional_write_fails_once_the_record_changed_since_its_read(backend: Backend) {
    let store = backend.store();
    store.put(Table::Apps, "hello", b"v1").unwrap();
    let read = store.get_versioned(Table::Apps, "hello").unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v1"[..]));
    // Another writer gets in between the read and the write.
    store.put(Table::Apps, "hello", b"v2 by another").unwrap();
    let late = store.put_if(Table::Apps, "hello", b"v2", &read.revision);
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    assert_eq!(
        store.get(Table::Apps, "hello").unwrap().as_deref(),
        Some(&b"v2 by another"[..])
    );
    let again = store.get_versioned(Table::Apps, "hello").unwrap();
    store
        .put_if(Table::Apps, "hello", b"v3", &again.revision)
        .unwrap();
    assert_eq!(
        store.get(Table::Apps, "hello").unwrap().as_deref(),
        Some(&b"v3"[..])
    );
}

async fn only_one_of_two_creations_of_a_record_wins(backend: Backend) {
    let store = backend.store();
    let read = store.get_versioned(Table::Secrets, "master").unwrap();
    assert_eq!(read.value, None);
    assert_eq!(read.revision, Revision::absent());
    store
        .put_if(Table::Secrets, "master", b"first", &read.revision)
        .unwrap();
    let second = store.put_if(Table::Secrets, "master", b"second", &read.revision);
    assert!(
        matches!(second, Err(StoreError::Conflict { .. })),
        "{second:?}"
    );
    assert_eq!(
        store.get(Table::Secrets, "master").unwrap().as_deref(),
        Some(&b"first"[..])
    );
    // A deleted record can be created again.
    store.delete(Table::Secrets, "master").unwrap();
    store
        .put_if(Table::Secrets, "master", b"third", &Revision::absent())
        .unwrap();
}

async fn bulk_tables_hold_values_larger_than_an_etcd_request(backend: Backend) {
    let store = backend.store();
    // etcd refuses requests over 1.5 MiB; components may be up to 64 MiB.
    let component: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    store.put(Table::Blobs, "sha", &component).unwrap();
    store.put(Table::Snapshots, "hello", &component).unwrap();
    assert_eq!(store.get(Table::Blobs, "sha").unwrap(), Some(component));
    assert_eq!(store.list(Table::Snapshots).unwrap().len(), 1);
}

async fn a_listing_returns_every_record_of_a_large_table(backend: Backend) {
    let store = backend.store();
    // More than one etcd page (500 keys).
    let keys: Vec<String> = (0..1200).map(|i| format!("device-{i:05}")).collect();
    for key in &keys {
        store.put(Table::Devices, key, key.as_bytes()).unwrap();
    }
    let listed = store.list(Table::Devices).unwrap();
    assert_eq!(listed.len(), keys.len());
    assert!(
        listed
            .iter()
            .zip(&keys)
            .all(|((k, v), want)| k == want && v == want.as_bytes())
    );
}
