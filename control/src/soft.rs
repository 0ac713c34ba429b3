//! Durable soft state: handovers in flight, apps parked at zero replicas, pending snapshot
//! restores and each app's recent events, kept in the store so that the control plane that
//! leads next (or this one, restarted) carries on where the last leader stopped.
//!
//! The leader writes them inside its fenced reconcile (a deposed leader writes nothing), and
//! writes a handover's new phase before the phase takes effect: a primary is fenced only once
//! the store says so. Handovers and restores are also kept in memory, where every heartbeat
//! reads them; a control plane loads them from the store when it becomes the leader and drops
//! them when it stops leading. Parked apps are read from the store at each reconcile.
//! Events are written by whichever control plane saw them (the leader's reconcile, or the one
//! a router asked to wake an app), with compare-and-swap so two never lose each other's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::replicas::{Handover, HandoverRecord};
use crate::store::{StoreError, Table, decode, encode};
use crate::{Control, now_ms};

/// Events kept per app.
pub const EVENTS_KEPT: usize = 20;

/// An app's recent events, oldest first, as the store keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsRecord {
    /// The last [`EVENTS_KEPT`] events, each stamped with the time.
    pub events: Vec<String>,
    /// Set while the latest event is an abandoned move (its words): `fog move` waits on this,
    /// a field, rather than on the words of the event.
    pub abandoned: Option<String>,
}

impl Control {
    /// Record `event` for `app`, stamped with the time. An event that cannot be written (the
    /// store is down, or this control plane was deposed meanwhile) is logged and dropped.
    pub(crate) fn record_event(&self, app: &str, event: String) {
        tracing::info!(app, "{event}");
        self.add_event(app, event, false);
    }

    /// Record that `app`'s move to `to` was abandoned, and why.
    pub(crate) fn abandon_move(&self, app: &str, to: &str, reason: &str) {
        let event = format!("move to {to} abandoned: {reason}");
        tracing::info!(app, "{event}");
        self.add_event(app, event, true);
    }

    fn add_event(&self, app: &str, event: String, abandoned: bool) {
        let stamped = format!("{} {event}", chrono::Utc::now().format("%H:%M:%S"));
        let added = self.update_record(Table::Events, app, "events of", |current| {
            let mut record: EventsRecord = current.unwrap_or_default();
            record.events.push(stamped.clone());
            let excess = record.events.len().saturating_sub(EVENTS_KEPT);
            record.events.drain(..excess);
            record.abandoned = abandoned.then(|| event.clone());
            Ok(Some(record))
        });
        if let Err(err) = added {
            tracing::warn!(app, "event not recorded: {err}");
        }
    }

    /// `app`'s recent events.
    pub(crate) fn events_of(&self, app: &str) -> Result<EventsRecord, StoreError> {
        match self.store.get(Table::Events, app)? {
            Some(bytes) => decode(Table::Events, app, &bytes),
            None => Ok(EventsRecord::default()),
        }
    }

    /// `app`'s handover in flight, as the store has it (whichever control plane leads).
    pub(crate) fn stored_handover(&self, app: &str) -> Result<Option<HandoverRecord>, StoreError> {
        match self.store.get(Table::Handovers, app)? {
            Some(bytes) => decode(Table::Handovers, app, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Store `handover` of `app` (a new one, or one that changed phase).
    pub(crate) fn save_handover(&self, app: &str, handover: &Handover) -> Result<(), StoreError> {
        self.store.put(
            Table::Handovers,
            app,
            &encode(&handover.to_record(now_ms())),
        )
    }

    /// Apps parked at zero replicas, with the devices holding their state.
    pub(crate) fn parked(&self) -> Result<HashMap<String, Vec<String>>, StoreError> {
        self.store
            .list(Table::Parked)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Parked, k, v)?)))
            .collect()
    }

    /// Load handovers and pending restores from the store, on becoming the leader.
    pub(crate) fn load_soft_state(&self) -> Result<(), StoreError> {
        let now = now_ms();
        // An app removed while a leader still stepped its handover (removal is not fenced by
        // the leadership) may have left a record behind: drop it rather than resume it.
        let apps: std::collections::HashSet<String> = self
            .store
            .list(Table::Apps)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for table in [Table::Handovers, Table::Restores] {
            for (app, _) in self.store.list(table)? {
                if !apps.contains(&app) {
                    self.store.delete(table, &app)?;
                }
            }
        }
        let handovers: HashMap<String, Handover> = self
            .store
            .list(Table::Handovers)?
            .into_iter()
            .map(|(app, bytes)| {
                let record: HandoverRecord = decode(Table::Handovers, &app, &bytes)?;
                Ok((app, Handover::from_record(record, now)))
            })
            .collect::<Result<_, StoreError>>()?;
        let restores: HashMap<String, String> = self
            .store
            .list(Table::Restores)?
            .into_iter()
            .map(|(app, device)| (app, String::from_utf8_lossy(&device).into_owned()))
            .collect();
        for (app, handover) in &handovers {
            self.record_event(
                app,
                format!(
                    "handover from {} to {} resumed by control plane {} ({:?})",
                    handover.from, handover.to, self.id, handover.phase
                )
                .to_lowercase(),
            );
        }
        let resumed = !handovers.is_empty();
        *self.handovers.lock().expect("handovers lock") = handovers;
        *self.restores.lock().expect("restores lock") = restores;
        if resumed {
            // A primary may have to be fenced again: devices must hear it now.
            self.phase_changed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Forget the leader's working copy, on ceasing to lead (the store keeps the truth).
    pub(crate) fn drop_soft_state(&self) {
        self.handovers.lock().expect("handovers lock").clear();
        self.restores.lock().expect("restores lock").clear();
    }

    /// Forget everything soft about a removed app.
    pub(crate) fn forget_soft_state(&self, app: &str) -> Result<(), StoreError> {
        for table in [
            Table::Handovers,
            Table::Parked,
            Table::Restores,
            Table::Events,
        ] {
            self.store.delete(table, app)?;
        }
        self.handovers.lock().expect("handovers lock").remove(app);
        self.restores.lock().expect("restores lock").remove(app);
        Ok(())
    }
}
