//! Durable soft state (handovers, pending restores, parked apps, events) written by one control
//! plane and read by the next over the same registry, on sled and on etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Backend, on_both_backends};
use crate::replicas::{Handover, Phase};
use crate::soft::EVENTS_KEPT;
use crate::store::{Store, Table, as_leader, encode};
use crate::{Control, ControlConfig};

on_both_backends!(
    what_one_leader_left_in_flight_is_loaded_by_the_next,
    events_are_bounded_and_an_abandoned_move_is_flagged_until_the_next_event,
    a_removed_apps_soft_state_is_forgotten,
);

/// Two control planes over one registry: on etcd two clients of one prefix; sled has one
/// writer, so the second is the first's store reopened in the same process.
fn two_controls(backend: &Backend) -> (Arc<Control>, Arc<Control>) {
    let mut prefix = [0u8; 8];
    getrandom::fill(&mut prefix).unwrap();
    let prefix = hex::encode(prefix);
    let first: Arc<dyn Store> = backend.store_at(&prefix);
    let second = match backend {
        Backend::Sled => first.clone(),
        Backend::Etcd(_) => backend.store_at(&prefix),
    };
    (
        Control::new(first, ControlConfig::default()),
        Control::new(second, ControlConfig::default()),
    )
}

async fn what_one_leader_left_in_flight_is_loaded_by_the_next(backend: Backend) {
    let (first, second) = two_controls(&backend);
    let handover = Handover {
        from: "d1".into(),
        to: "d2".into(),
        phase: Phase::Fencing,
        reason: "requested".into(),
        started: Instant::now() - Duration::from_secs(5),
        fenced_at: Some(Instant::now() - Duration::from_secs(1)),
        others: vec!["d3".into()],
    };
    let first_for_writes = first.clone();
    let handover_for_writes = handover.clone();
    tokio::task::spawn_blocking(move || {
        let first = first_for_writes;
        assert_eq!(
            first.store.lead(&first.id).unwrap(),
            crate::store::Leadership::Leader
        );
        as_leader(|| {
            // Only the keys of app records matter here.
            for app in ["counter", "stateful"] {
                first.store.put(Table::Apps, app, b"app").unwrap();
            }
            first
                .save_handover("counter", &handover_for_writes)
                .unwrap();
            // A handover of an app removed meanwhile.
            first.save_handover("gone", &handover_for_writes).unwrap();
            first.store.put(Table::Restores, "stateful", b"d4").unwrap();
            first
                .store
                .put(Table::Parked, "idle", &encode(&vec!["d5".to_string()]))
                .unwrap();
            first.record_event("counter", "moving from d1 to d2 (requested)".into());
        });
    })
    .await
    .unwrap();
    drop(first);

    tokio::task::spawn_blocking(move || {
        // Nothing in the next control plane's memory until it loads what the store holds.
        assert!(second.handovers.lock().unwrap().is_empty());
        second.load_soft_state().unwrap();
        let loaded = second.handovers.lock().unwrap().get("counter").cloned();
        let loaded = loaded.expect("the handover in flight is loaded");
        assert!(
            second.stored_handover("gone").unwrap().is_none(),
            "a removed app's handover is dropped, not resumed"
        );
        assert_eq!(second.handovers.lock().unwrap().len(), 1);
        assert_eq!(loaded.phase, Phase::Fencing);
        assert_eq!(loaded.devices(), handover.devices());
        assert!(
            loaded.started.elapsed() >= Duration::from_millis(4_900),
            "its timeout counts the time it already ran: {:?}",
            loaded.started.elapsed()
        );
        assert_eq!(
            second
                .restores
                .lock()
                .unwrap()
                .get("stateful")
                .map(String::as_str),
            Some("d4")
        );
        assert_eq!(
            second.parked().unwrap().get("idle"),
            Some(&vec!["d5".to_string()])
        );
        // Every control plane answers `moving` from the store.
        let moving = second.stored_handover("counter").unwrap().unwrap();
        assert_eq!((moving.from.as_str(), moving.to.as_str()), ("d1", "d2"));
        let events = second.events_of("counter").unwrap().events;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].ends_with("moving from d1 to d2 (requested)"));
        assert!(
            events[1].contains(&format!("resumed by control plane {}", second.id)),
            "{events:?}"
        );
        // Ceasing to lead drops the working copy, not the store's.
        second.drop_soft_state();
        assert!(second.handovers.lock().unwrap().is_empty());
        assert!(second.stored_handover("counter").unwrap().is_some());
    })
    .await
    .unwrap();
}

async fn events_are_bounded_and_an_abandoned_move_is_flagged_until_the_next_event(
    backend: Backend,
) {
    let (control, _) = two_controls(&backend);
    tokio::task::spawn_blocking(move || {
        for i in 0..EVENTS_KEPT + 5 {
            control.record_event("app", format!("event {i}"));
        }
        let record = control.events_of("app").unwrap();
        assert_eq!(record.events.len(), EVENTS_KEPT);
        assert!(record.events[0].ends_with("event 5"), "{:?}", record.events);
        assert!(record.events[EVENTS_KEPT - 1].ends_with(&format!("event {}", EVENTS_KEPT + 4)));
        assert_eq!(record.abandoned, None);
        control.abandon_move("app", "d9", "d9 never started the app");
        let abandoned = control.events_of("app").unwrap().abandoned;
        assert_eq!(
            abandoned.as_deref(),
            Some("move to d9 abandoned: d9 never started the app")
        );
        control.record_event("app", "moving again".into());
        assert_eq!(control.events_of("app").unwrap().abandoned, None);
    })
    .await
    .unwrap();
}

async fn a_removed_apps_soft_state_is_forgotten(backend: Backend) {
    let (control, _) = two_controls(&backend);
    tokio::task::spawn_blocking(move || {
        let handover = Handover {
            from: "d1".into(),
            to: "d2".into(),
            phase: Phase::Copying,
            reason: "requested".into(),
            started: Instant::now(),
            fenced_at: None,
            others: Vec::new(),
        };
        control.store.put(Table::Apps, "app", b"app").unwrap();
        control.save_handover("app", &handover).unwrap();
        control.store.put(Table::Restores, "app", b"d2").unwrap();
        control
            .store
            .put(Table::Parked, "app", &encode(&vec!["d1".to_string()]))
            .unwrap();
        control.record_event("app", "something".into());
        control.load_soft_state().unwrap();
        assert!(control.handovers.lock().unwrap().contains_key("app"));
        control.forget_soft_state("app").unwrap();
        for table in [
            Table::Handovers,
            Table::Restores,
            Table::Parked,
            Table::Events,
        ] {
            assert!(
                control.store.get(table, "app").unwrap().is_none(),
                "{table:?}"
            );
        }
        assert!(control.handovers.lock().unwrap().is_empty());
        assert!(control.restores.lock().unwrap().is_empty());
    })
    .await
    .unwrap();
}
