//! Onion leases: which trusted router publishes each app's onion service, so that exactly one
//! does at a time and another takes over when it dies.
//!
//! A router with an onion front asks for its leases every few seconds (`POST
//! /v1/onion-leases`, signed). Each answer renews the leases it holds, may grant it apps nobody
//! holds, and carries the onion keys of exactly those apps: a router never receives the key of
//! an app it does not publish. A lease is a record per app in the store, changed only by
//! compare-and-swap, so control planes sharing one etcd never grant one app twice; no leader is
//! involved (the claimant itself takes a free lease), so a takeover does not wait for an
//! election.
//!
//! Why two routers never publish at once: the router stops a service when its lease runs out
//! by its own clock, counted from when it *sent* the request that was granted, so it stops no
//! later than the lease's expiry in the store; and another router is granted the lease only
//! [`ControlConfig::onion_lease_grace`] after that expiry, which absorbs clock differences
//! between control planes. A router killed outright stops publishing at once, and its lease
//! passes to another within the lease plus the grace plus one renewal interval.
//!
//! Balance: leases are spread over the routers that asked within one lease time; a router
//! takes free leases only up to its fair share (apps ÷ live routers, rounded up), and a router
//! above its share stops renewing the surplus (which then expires and is taken by one below).
//!
//! [`ControlConfig::onion_lease_grace`]: crate::ControlConfig::onion_lease_grace

use std::collections::BTreeMap;

use fog_proto::api::{OnionLease, OnionLeaseInfo, OnionLeaseTerm};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::{StoreError, Table, decode, encode};
use crate::{Control, names, now_ms};

/// Terms kept per app (the latest), for `GET /v1/onion-leases` and for checking that two
/// routers never held one lease at once.
const TERMS_KEPT: usize = 16;

/// One app's onion lease: its holders, the current one last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The latest terms, oldest first; the last is the current (or most recent) holder's.
    pub terms: Vec<OnionLeaseTerm>,
    /// The current holder was asked to give it up (it is above its share): the lease is no
    /// longer renewed and passes on when it expires.
    pub released: bool,
}

impl LeaseRecord {
    /// The router holding the lease at `now_ms`, if any.
    pub fn holder(&self, now_ms: u64) -> Option<&str> {
        self.terms
            .last()
            .filter(|t| now_ms < t.until_ms)
            .map(|t| t.router.as_str())
    }

    /// Whether `router` holds the lease at `now_ms` and may renew it.
    fn renewable_by(&self, router: &str, now_ms: u64) -> bool {
        !self.released && self.holder(now_ms) == Some(router)
    }

    /// Whether `router` may take the lease at `now_ms`: nobody ever held it; or `router` did
    /// last (it can overlap only with itself); or the last holder's term ended more than
    /// `grace_ms` ago.
    fn claimable_by(&self, router: &str, now_ms: u64, grace_ms: u64) -> bool {
        match self.terms.last() {
            None => true,
            Some(last) if last.router == router => self.released || now_ms >= last.until_ms,
            Some(last) => now_ms > last.until_ms.saturating_add(grace_ms),
        }
    }

    /// Extend the current term to `until_ms`.
    fn renew(&mut self, until_ms: u64) {
        if let Some(last) = self.terms.last_mut() {
            last.until_ms = last.until_ms.max(until_ms);
        }
    }

    /// Start a term of `router` from `now_ms` to `until_ms`.
    fn grant(&mut self, router: &str, now_ms: u64, until_ms: u64) {
        self.terms.push(OnionLeaseTerm {
            router: router.to_string(),
            from_ms: now_ms,
            until_ms,
        });
        self.released = false;
        let surplus = self.terms.len().saturating_sub(TERMS_KEPT);
        self.terms.drain(..surplus);
    }
}

/// What a router's request did to one lease.
enum Outcome {
    Held(u64),
    NotHeld,
}

impl Control {
    /// `POST /v1/onion-leases` from trusted `router`: renew what it holds (up to its share),
    /// take free leases (up to its share), and answer with the keys of exactly the apps it
    /// now holds.
    pub(crate) fn onion_leases_for(&self, router: &str) -> Result<Vec<OnionLease>, ApiError> {
        let now = now_ms();
        let lease_ms = self.config.onion_lease.as_millis() as u64;
        let grace_ms = self.config.onion_lease_grace.as_millis() as u64;
        self.store.put(Table::OnionRouters, router, &encode(&now))?;
        let live = self
            .store
            .list(Table::OnionRouters)?
            .iter()
            .filter(|(key, bytes)| {
                key == router
                    || decode::<u64>(Table::OnionRouters, key, bytes)
                        .is_ok_and(|seen| seen.saturating_add(lease_ms) >= now)
            })
            .count();
        let mut apps = self.apps()?;
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        let leases = self.lease_records()?;
        // Leases of removed apps go once no router may still run them.
        for (app, record) in &leases {
            if !apps.iter().any(|a| &a.name == app)
                && record.claimable_by("", now, grace_ms)
                && let Err(err) = self.store.delete(Table::OnionLeases, app)
            {
                tracing::warn!(app, "cannot drop the onion lease of a removed app: {err}");
            }
        }
        let share = apps.len().div_ceil(live.max(1));
        let mut held: Vec<(String, u64)> = Vec::new();
        // Renew first (name order), releasing what is above the share.
        for app in &apps {
            let record = leases.get(&app.name);
            if !record.is_some_and(|r| r.renewable_by(router, now)) {
                continue;
            }
            let release = held.len() >= share;
            let outcome = self.change_lease(&app.name, |record| {
                if !record.renewable_by(router, now) {
                    return false;
                }
                if release {
                    record.released = true;
                } else {
                    record.renew(now + lease_ms);
                }
                true
            })?;
            match outcome {
                Outcome::Held(until) if !release => held.push((app.name.clone(), until)),
                Outcome::Held(_) => {
                    tracing::info!(app = app.name, router, "onion lease released for balance");
                }
                Outcome::NotHeld => {}
            }
        }
        // Then take free leases, up to the share.
        for app in &apps {
            if held.len() >= share {
                break;
            }
            if held.iter().any(|(name, _)| name == &app.name)
                || leases
                    .get(&app.name)
                    .is_some_and(|r| !r.claimable_by(router, now, grace_ms))
            {
                continue;
            }
            let outcome = self.change_lease(&app.name, |record| {
                if !record.claimable_by(router, now, grace_ms) {
                    return false;
                }
                record.grant(router, now, now + lease_ms);
                true
            })?;
            if let Outcome::Held(until) = outcome {
                tracing::info!(app = app.name, router, "onion lease granted");
                held.push((app.name.clone(), until));
            }
        }
        let master = self.master()?;
        let answered = now_ms();
        Ok(apps
            .iter()
            .filter_map(|app| {
                let (_, until) = held.iter().find(|(name, _)| name == &app.name)?;
                let identity = names::onion_identity(&master, &app.owner, &app.name);
                Some(OnionLease {
                    app: app.name.clone(),
                    address: fog_htx::names::onion_address(&identity.public_bytes()),
                    secret: hex::encode(identity.secret_bytes()),
                    ttl_ms: until.saturating_sub(answered),
                })
            })
            .collect())
    }

    /// Compare-and-swap `app`'s lease with `change` (which returns false to leave it alone);
    /// whether the lease, as written, holds an unexpired term (and until when).
    fn change_lease(
        &self,
        app: &str,
        mut change: impl FnMut(&mut LeaseRecord) -> bool,
    ) -> Result<Outcome, ApiError> {
        let mut wrote = false;
        let record = self.update_record(Table::OnionLeases, app, "onion lease", |current| {
            let mut record: LeaseRecord = current.unwrap_or_default();
            wrote = change(&mut record);
            Ok(wrote.then_some(record))
        })?;
        Ok(match record.and_then(|r| r.terms.last().cloned()) {
            Some(term) if wrote => Outcome::Held(term.until_ms),
            _ => Outcome::NotHeld,
        })
    }

    /// Every app's lease record, by app name.
    pub(crate) fn lease_records(&self) -> Result<BTreeMap<String, LeaseRecord>, StoreError> {
        self.store
            .list(Table::OnionLeases)?
            .iter()
            .map(|(app, bytes)| Ok((app.clone(), decode(Table::OnionLeases, app, bytes)?)))
            .collect()
    }

    /// The router publishing `app`'s onion service now, if any.
    pub(crate) fn onion_router(&self, app: &str) -> Result<Option<String>, StoreError> {
        Ok(match self.store.get(Table::OnionLeases, app)? {
            Some(bytes) => decode::<LeaseRecord>(Table::OnionLeases, app, &bytes)?
                .holder(now_ms())
                .map(str::to_string),
            None => None,
        })
    }

    /// `GET /v1/onion-leases`: who publishes each app's onion service, and who did before.
    pub(crate) fn onion_lease_infos(&self) -> Result<Vec<OnionLeaseInfo>, StoreError> {
        let now = now_ms();
        let apps = self.apps()?;
        Ok(self
            .lease_records()?
            .into_iter()
            .filter(|(app, _)| apps.iter().any(|a| &a.name == app))
            .map(|(app, record)| OnionLeaseInfo {
                router: record.holder(now).map(str::to_string),
                app,
                terms: record.terms,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_passes_to_another_router_only_after_its_expiry_and_the_grace() {
        let mut record = LeaseRecord::default();
        assert!(record.claimable_by("a", 1_000, 2_000));
        record.grant("a", 1_000, 11_000);
        assert_eq!(record.holder(5_000), Some("a"));
        assert!(!record.claimable_by("b", 5_000, 2_000));
        // Expired, but within the grace: nobody else yet; its holder may take it again.
        assert_eq!(record.holder(12_000), None);
        assert!(!record.claimable_by("b", 12_000, 2_000));
        assert!(record.claimable_by("a", 12_000, 2_000));
        assert!(record.claimable_by("b", 13_001, 2_000));
        record.grant("b", 13_001, 23_001);
        assert_eq!(record.holder(14_000), Some("b"));
        assert!(record.terms[0].until_ms < record.terms[1].from_ms);
    }

    #[test]
    fn a_released_lease_is_not_renewed_and_still_runs_out_before_another_takes_it() {
        let mut record = LeaseRecord::default();
        record.grant("a", 0, 10_000);
        assert!(record.renewable_by("a", 1_000));
        record.released = true;
        assert!(!record.renewable_by("a", 1_000));
        assert!(!record.claimable_by("b", 5_000, 2_000));
        assert!(record.claimable_by("b", 12_001, 2_000));
    }

    #[test]
    fn only_the_latest_terms_are_kept() {
        let mut record = LeaseRecord::default();
        for i in 0..40u64 {
            record.grant(&format!("r{i}"), i * 10, i * 10 + 5);
        }
        assert_eq!(record.terms.len(), TERMS_KEPT);
        assert_eq!(record.terms.last().unwrap().router, "r39");
    }
}
