//! Reconcile: the loop that turns apps and live devices into placements with
//! [`fog_scheduler::placement::plan`], the autoscaler, and leadership of each app's replicas
//! (promotion and handovers, see [`crate::replicas`]).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use fog_proto::api::{self, Heartbeat};
use fog_scheduler::market::Pricing;
use fog_scheduler::placement::{self, AppDemand, Device};

use crate::store::{
    AppRecord, AppTerms, DeviceRecord, Leadership, PlacementRecord, StoreError, Table, decode,
    encode,
};
use crate::{ApiError, Control, autoscale, observe, replicas, trust};

/// How often a reconcile tick renews the leadership while it runs (the lease lives 3 s).
const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a computed CPU ceiling prices replicas (see [`Control::cpu_ceiling`]).
const CEILING_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Control {
    /// Run the autoscaler over every autoscaled app; true if a replica count changed.
    pub(crate) fn autoscale(
        &self,
        live: &HashMap<String, (bool, Heartbeat)>,
    ) -> Result<bool, StoreError> {
        let settings: Vec<(String, api::Autoscale)> = self
            .store
            .list(Table::Scaling)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Scaling, k, v)?)))
            .collect::<Result<_, StoreError>>()?;
        let mut changed = false;
        for (name, settings) in settings {
            let Some(bytes) = self.store.get(Table::Apps, &name)? else {
                continue;
            };
            let record: AppRecord = decode(Table::Apps, &name, &bytes)?;
            let counts: HashMap<String, u64> = live
                .iter()
                .filter(|(_, (alive, _))| *alive)
                .filter_map(|(id, (_, hb))| {
                    hb.running
                        .iter()
                        .find(|r| r.app == name)
                        .map(|r| (id.clone(), r.requests))
                })
                .collect();
            let decision = {
                let mut loads = self.loads.lock().expect("loads lock");
                let load = loads
                    .entry(name.clone())
                    .or_insert_with(|| autoscale::AppLoad::new(counts.clone()));
                autoscale::check(load, &settings, record.replicas, counts)
            };
            if let Some(decision) = decision {
                let _guard = self.writes.lock().expect("writes lock");
                if decision.replicas == 0 {
                    // Remember where the state is, to wake there (in the store: the control
                    // plane that wakes it may be another, or this one restarted).
                    if let Some(placement) = self.placements()?.get(&name) {
                        self.store
                            .put(Table::Parked, &name, &encode(&placement.devices))?;
                    }
                }
                // The record read above may be stale by now: change only the replica count.
                let scaled = self.update_app(&name, |current| {
                    Ok(current.map(|mut current| {
                        current.replicas = decision.replicas;
                        current
                    }))
                });
                match scaled {
                    Ok(_) => {
                        self.record_event(&name, decision.reason);
                        changed = true;
                    }
                    // Removed meanwhile.
                    Err(ApiError::NotFound(_)) => {}
                    Err(ApiError::Registry(err)) => return Err(err),
                    Err(other) => tracing::warn!(app = name, "autoscaling skipped: {other}"),
                }
            }
        }
        Ok(changed)
    }

    /// The cores one replica of an app is planned with: CPU demand as measured on live devices
    /// (fuel burnt, see [`crate::usage::planned_cpu`]), not a fixed reservation. Placement
    /// places with it and `fog ps` prices it.
    pub(crate) fn planned_cpu(
        &self,
        devices: &[DeviceRecord],
        live: &HashMap<String, (bool, Heartbeat)>,
    ) -> impl Fn(&AppRecord) -> f64 {
        let busiest = self
            .usage
            .busiest(|d| live.get(d).is_some_and(|(alive, _)| *alive));
        let ceiling = self.cpu_ceiling_of(devices, live);
        let floor = self.config.replica_cpu_floor;
        move |app: &AppRecord| {
            crate::usage::planned_cpu(app.tier, busiest.get(&app.name).copied(), floor, ceiling)
        }
    }

    /// The most any usable device offers now, capped by what it registered; remembered for
    /// [`Control::cpu_ceiling`].
    fn cpu_ceiling_of(
        &self,
        devices: &[DeviceRecord],
        live: &HashMap<String, (bool, Heartbeat)>,
    ) -> f64 {
        let ceiling = devices
            .iter()
            .filter_map(|d| match live.get(&d.id) {
                Some((true, hb)) if hb.harvestable => Some(hb.cpu_free.min(d.cpu)),
                _ => None,
            })
            .fold(0.0, f64::max);
        *self.cpu_ceiling.lock().expect("ceiling lock") = Some((Instant::now(), ceiling));
        ceiling
    }

    /// The most any usable device offers, as computed within the last second (each reconcile
    /// computes it): pricing one app's replicas reads no device records.
    pub(crate) fn cpu_ceiling(&self) -> Result<f64, StoreError> {
        if let Some((at, ceiling)) = *self.cpu_ceiling.lock().expect("ceiling lock")
            && at.elapsed() < CEILING_FRESH
        {
            return Ok(ceiling);
        }
        Ok(self.cpu_ceiling_of(&self.admitted_devices()?, &self.live_heartbeats()))
    }

    /// The cores one replica of `app` is planned with, as [`Control::planned_cpu`] says, from
    /// the devices running it only.
    pub(crate) fn planned_cpu_of(
        &self,
        app: &AppRecord,
        running: &[String],
    ) -> Result<f64, StoreError> {
        let busiest = self
            .usage
            .busiest_of(&app.name, running.iter().map(String::as_str));
        Ok(crate::usage::planned_cpu(
            app.tier,
            busiest,
            self.config.replica_cpu_floor,
            self.cpu_ceiling()?,
        ))
    }

    /// Every device's last heartbeat, and whether it is alive.
    pub(crate) fn live_heartbeats(&self) -> HashMap<String, (bool, Heartbeat)> {
        self.live
            .lock()
            .expect("live lock")
            .iter()
            .map(|(id, l)| (id.clone(), (self.is_alive(l), l.heartbeat.clone())))
            .collect()
    }

    /// Compute placements for every app from the registered devices and write them (after the
    /// start-up grace period of `missed_heartbeats` intervals).
    pub fn reconcile(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut apps = self.apps()?;
        // Only admitted devices are placed on: a pending one is never given work.
        let devices = self.admitted_devices()?;
        let placements = self.placements()?;
        // The interval devices were told depends on the fleet's size: a restarted control
        // plane waits as long as the registered fleet may take to heartbeat.
        let in_grace = self.started.elapsed()
            < self.heartbeat_interval_in(devices.len()) * self.config.missed_heartbeats;
        if in_grace && placements.values().any(|p| !p.devices.is_empty()) {
            return Ok(());
        }
        let live = self.live_heartbeats();
        if self.autoscale(&live)? {
            apps = self.apps()?;
        }
        self.save_evidence(false)?;
        self.observed
            .preload(self.store.as_ref(), devices.iter().map(|d| d.id.as_str()))?;
        // What is measured of each device, as placement takes it (see `observe`).
        let latency = observe::placement_latencies(
            &devices
                .iter()
                .map(|d| self.latency_of(&d.id).map(|l| l.rtt_ms))
                .collect::<Vec<_>>(),
        );
        let mut fleet: Vec<Device> = devices
            .iter()
            .zip(latency)
            .map(|(d, latency_ms)| {
                let trust = observe::placement_trust(self.trust_of(&d.id)?.0);
                // What the device offers now (its harvest policy's share), capped by what it
                // registered; battery and heat feed the energy objective.
                let (alive, harvestable, cpu, mem, battery, charging, temperature) =
                    match live.get(&d.id) {
                        Some((alive, hb)) => (
                            *alive,
                            hb.harvestable,
                            hb.cpu_free.min(d.cpu),
                            hb.mem_free_mb.min(d.mem_mb),
                            hb.battery,
                            hb.charging,
                            hb.temperature_c,
                        ),
                        None => (false, false, 0.0, 0.0, None, true, 0.0),
                    };
                Ok(Device {
                    id: d.id.clone(),
                    cpu_capacity: cpu.max(1e-6),
                    cpu_free: cpu,
                    mem_capacity_mb: mem.max(1e-6),
                    mem_free_mb: mem,
                    disk_free_mb: d.disk_mb,
                    harvestable,
                    healthy: alive,
                    heartbeat_age_s: if alive { 0.0 } else { f64::INFINITY },
                    battery,
                    charging,
                    temperature_c: temperature,
                    region: d.region.clone(),
                    latency_ms,
                    // Timed downloads and uploads; a device never timed enters with the prior.
                    bandwidth_mbps: observe::placement_bandwidth(
                        self.throughput_of(&d.id).as_ref(),
                    ),
                    trust,
                    price_cpu_hour: d.price_cpu_hour,
                    price_gb_hour: 0.01,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let terms: HashMap<String, AppTerms> = self
            .store
            .list(Table::Terms)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Terms, k, v)?)))
            .collect::<Result<_, StoreError>>()?;
        let planned = self.planned_cpu(&devices, &live);
        // Memory demand as measured: the footprints hosts report (see `usage`).
        let footprints = self
            .usage
            .footprints(|d| live.get(d).is_some_and(|(alive, _)| *alive));
        let mut demands: Vec<AppDemand> = apps
            .iter()
            .filter(|a| a.replicas > 0)
            .map(|a| {
                let tier = a.tier;
                let mut demand = AppDemand::new(
                    a.name.clone(),
                    planned(a),
                    crate::usage::planned_memory(
                        tier,
                        footprints.get(&a.name).copied(),
                        self.config.replica_memory_floor_mb,
                        (a.limits.memory_bytes >> 20) as f64,
                    ),
                    tier,
                );
                demand.replicas = Some(a.replicas);
                demand.min_trust = match tier {
                    api::Tier::S | api::Tier::A => trust::MIN_TRUST,
                    api::Tier::B => trust::MIN_TRUST_B,
                };
                demand.component_mb = a.size as f64 / (1 << 20) as f64;
                if let Some(terms) = terms.get(&a.name) {
                    demand.max_price = terms.max_price;
                    demand.pricing = match terms.bid {
                        api::Bid::Spot => Pricing::Spot,
                        api::Bid::OnDemand => Pricing::OnDemand,
                        api::Bid::Reserved => Pricing::Reserved,
                    };
                }
                demand
            })
            .collect();
        let parked = self.parked()?;
        // A reserved app parked at zero keeps its capacity on the devices holding its state
        // (its memory limit and the CPU floor, as measured use is gone with its replicas), so
        // what it reserved is there when it wakes.
        for app in apps.iter().filter(|a| {
            a.replicas == 0
                && terms
                    .get(&a.name)
                    .is_some_and(|t| t.bid == api::Bid::Reserved)
        }) {
            let Some(held) = parked.get(&app.name) else {
                continue;
            };
            for device in fleet.iter_mut().filter(|d| held.contains(&d.id)) {
                device.cpu_free = (device.cpu_free - self.config.replica_cpu_floor).max(0.0);
                device.mem_free_mb =
                    (device.mem_free_mb - (app.limits.memory_bytes >> 20) as f64).max(0.0);
            }
        }
        let current: placement::Assignment = placements
            .iter()
            .map(|(app, p)| {
                // A woken app starts where its state is.
                let devices = match parked.get(app) {
                    Some(devices) if p.devices.is_empty() => devices.clone(),
                    _ => p.devices.clone(),
                };
                (app.clone(), devices)
            })
            .collect();
        keep_untrusted_primaries(&mut demands, &current, &fleet);
        // Spot apps parked to make room for higher bids: each reconcile tries to place them
        // again (their state's devices seed the plan), and they count for nothing on a device
        // until placed.
        let spot_parked: HashSet<String> = apps
            .iter()
            .filter(|a| {
                a.replicas > 0
                    && parked.contains_key(&a.name)
                    && placements.get(&a.name).is_none_or(|p| p.devices.is_empty())
                    && terms.get(&a.name).is_some_and(|t| t.bid == api::Bid::Spot)
            })
            .map(|a| a.name.clone())
            .collect();
        let held: placement::Assignment = current
            .iter()
            .filter(|(app, _)| !spot_parked.contains(*app))
            .map(|(app, devices)| (app.clone(), devices.clone()))
            .collect();
        // The whole fleet is planned again when it changed (a device came, went, or stopped
        // offering capacity) and on a slow cadence; otherwise only the apps that need a place.
        let fleet_now = fleet_signature(&fleet);
        let full = match *self.last_full_plan.lock().expect("plan lock") {
            Some((at, fleet_then)) => {
                fleet_then != fleet_now
                    || at.elapsed() >= self.config.replan_every
                    || overloaded(&demands, &held, &fleet)
            }
            None => true,
        };
        let mut pending = if full {
            HashSet::new()
        } else {
            let mut pending = unplaced(&demands, &current, &fleet);
            pending.extend(spot_parked.iter().cloned());
            pending
        };
        let planning = Instant::now();
        let read = planning.duration_since(started);
        let outcome = if full {
            let outcome = placement::plan(&fleet, &demands, &current, &self.config.placement);
            *self.last_full_plan.lock().expect("plan lock") = Some((Instant::now(), fleet_now));
            outcome
        } else {
            placement::plan_some(&fleet, &demands, &current, &pending, &self.config.placement)
        };
        // On-demand and reserved apps short of room take it from spot apps (see `preempt`).
        let outcome =
            crate::preempt::make_room(outcome, &fleet, &demands, &current, &self.config.placement);
        // A spot app that gave way has a new problem even when it was not pending.
        pending.extend(outcome.unplaceable.iter().map(|u| u.app.clone()));
        let planned_in = planning.elapsed();
        self.metrics.placement.observe(planned_in.as_secs_f64());
        let problems: HashMap<&str, &str> = outcome
            .unplaceable
            .iter()
            .map(|u| (u.app.as_str(), u.reason.as_str()))
            .collect();
        let _guard = self.writes.lock().expect("writes lock");
        let mut changed = false;
        // What each live device reports of each app.
        let reports: HashMap<(String, String), api::RunningApp> = live
            .iter()
            .filter(|(_, (alive, _))| *alive)
            .flat_map(|(id, (_, hb))| {
                hb.running
                    .iter()
                    .map(move |r| ((id.clone(), r.app.clone()), r.clone()))
            })
            .collect();
        let alive = |d: &str| live.get(d).is_some_and(|(alive, _)| *alive);
        // The moves asked for, in one read: not a read per app (on etcd a round trip each,
        // thousands a tick, which outlasted the leader's lease at 4,000 apps).
        let moves: HashSet<String> = self
            .store
            .list(Table::Moves)?
            .into_iter()
            .map(|(app, _)| app)
            .collect();
        for app in &apps {
            // Only apps still registered (one may have been removed while we planned): the
            // plan index follows removals by any control plane.
            if !self.plan_index()?.apps.contains_key(&app.name) {
                continue;
            }
            let mut old = placements
                .get(&app.name)
                .map(|p| p.devices.clone())
                .unwrap_or_default();
            if old.is_empty()
                && let Some(devices) = parked.get(&app.name)
            {
                old = devices.clone();
            }
            if app.replicas == 0 {
                // Parked: no replica, no problem to report.
                let record = PlacementRecord {
                    devices: Vec::new(),
                    problem: None,
                };
                if placements.get(&app.name) != Some(&record) {
                    self.store
                        .put(Table::Placements, &app.name, &encode(&record))?;
                    changed = true;
                }
                continue;
            }
            let planned = outcome
                .assignment
                .get(&app.name)
                .cloned()
                .unwrap_or_default();
            let spot = terms
                .get(&app.name)
                .is_some_and(|t| t.bid == api::Bid::Spot);
            if spot && planned.is_empty() && !old.is_empty() && !parked.contains_key(&app.name) {
                // Parked as autoscaling parks: its state stays on these devices, and the next
                // place it gets starts from it.
                self.store.put(Table::Parked, &app.name, &encode(&old))?;
                self.record_event(
                    &app.name,
                    format!(
                        "spot replicas parked, state kept on {}: {}",
                        old.join(","),
                        problems
                            .get(app.name.as_str())
                            .copied()
                            .unwrap_or("no device has room")
                    ),
                );
            }
            // A parked app (autoscaled to zero, or a spot app giving way) may go without devices.
            let parking = parked.contains_key(&app.name) || spot;
            let devices = self.lead(app, &old, planned, &reports, &alive, parking, &moves)?;
            if !devices.is_empty() && parked.contains_key(&app.name) {
                self.store.delete(Table::Parked, &app.name)?;
            }
            // A partial plan says nothing new about the apps it left alone.
            let problem = if full || pending.contains(&app.name) {
                problems.get(app.name.as_str()).map(|p| p.to_string())
            } else {
                placements.get(&app.name).and_then(|p| p.problem.clone())
            };
            let record = PlacementRecord { devices, problem };
            if placements.get(&app.name) != Some(&record) {
                tracing::info!(app = app.name, devices = ?record.devices, problem = ?record.problem, "placement changed");
                self.store
                    .put(Table::Placements, &app.name, &encode(&record))?;
                changed = true;
            }
        }
        self.store.flush()?;
        // Where a tick's time goes (`FOG_LOG=fog_control::reconcile=debug`): it must stay well
        // inside the leader's lease.
        tracing::debug!(
            devices = devices.len(),
            apps = apps.len(),
            full,
            read_ms = read.as_secs_f64() * 1e3,
            plan_ms = planned_in.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "reconciled"
        );
        let phase_changed = self
            .phase_changed
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if phase_changed {
            self.bump();
        } else if changed {
            // Placements only: a held heartbeat computes its assignments again only if its
            // device's records moved.
            self.bump_index();
        }
        Ok(())
    }

    /// Decide an app's placement from the planner's: keep or promote the primary, or run a
    /// handover while the old primary is alive (see [`replicas`]). Every handover and restore
    /// it starts, advances or ends is written to the store before it takes effect (see
    /// [`crate::soft`]). `moves`: the apps a move was asked for, as listed this tick.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lead(
        &self,
        app: &AppRecord,
        old: &[String],
        planned: Vec<String>,
        reports: &HashMap<(String, String), api::RunningApp>,
        alive: &dyn Fn(&str) -> bool,
        parking: bool,
        moves: &HashSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        let report = |d: &str| reports.get(&(d.to_string(), app.name.clone()));
        let mut handovers = self.handovers.lock().expect("handovers lock");
        // A handover in progress decides the placement until it ends.
        if let Some(handover) = handovers.get(&app.name) {
            if self.config.hold_handovers && handover.phase == replicas::Phase::Fencing {
                // Test only: held mid-way until another leader takes it over.
                return Ok(handover.devices());
            }
            let mut next = handover.clone();
            match next.step(report(&next.from), report(&next.to)) {
                replicas::Step::Continue(devices) => {
                    if next.phase != handover.phase {
                        // Stored first: the primary is fenced only once the next leader
                        // would know it is.
                        self.save_handover(&app.name, &next)?;
                        // The primary must learn of its fence now, not at its next heartbeat.
                        self.phase_changed
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    handovers.insert(app.name.clone(), next);
                    return Ok(devices);
                }
                replicas::Step::Done(devices, event) => {
                    // The record goes before the new placement is written: a leader dying
                    // in between leaves the old primary in place, with every write it
                    // acknowledged (a rollback), never two primaries.
                    self.store.delete(Table::Handovers, &app.name)?;
                    handovers.remove(&app.name);
                    self.record_event(&app.name, event);
                    return Ok(devices);
                }
                replicas::Step::Abort(reason) => {
                    self.store.delete(Table::Handovers, &app.name)?;
                    handovers.remove(&app.name);
                    self.abandon_move(&app.name, &next.to, &reason);
                }
            }
        }
        let primary = old.first().filter(|p| alive(p.as_str()));
        // A requested move, or the planner dropping a live primary: hand over.
        let requested = match moves
            .contains(&app.name)
            .then(|| self.store.get(Table::Moves, &app.name))
            .transpose()
            .map(Option::flatten)
        {
            Ok(Some(to)) => {
                // Taken once (fenced: a deposed leader takes nothing).
                match self.store.delete(Table::Moves, &app.name) {
                    Ok(()) => Some(String::from_utf8_lossy(&to).into_owned()),
                    Err(err) => {
                        tracing::warn!(app = app.name, "cannot take the requested move: {err}");
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(app = app.name, "cannot read requested moves: {err}");
                None
            }
        };
        if let Some(primary) = primary {
            let target = match requested {
                Some(to) if alive(&to) && to != *primary => Some((to, "requested".to_string())),
                _ if !planned.contains(primary) && !planned.is_empty() => {
                    // Prefer a follower that has already caught up.
                    let ready = planned.iter().find(|d| {
                        report(d)
                            .is_some_and(|r| r.role == api::ReplicaRole::Follower && r.caught_up)
                    });
                    let to = ready.unwrap_or(&planned[0]).clone();
                    Some((to, "the placement changed".to_string()))
                }
                _ => None,
            };
            if let Some((to, reason)) = target {
                let mut others: Vec<String> = old[1..].to_vec();
                if reason != "requested" {
                    others = planned.clone();
                }
                others.retain(|d| *d != to && d != primary);
                let handover = replicas::Handover {
                    from: primary.clone(),
                    to: to.clone(),
                    phase: replicas::Phase::Copying,
                    reason: reason.clone(),
                    started: Instant::now(),
                    fenced_at: None,
                    others,
                };
                self.save_handover(&app.name, &handover)?;
                self.record_event(
                    &app.name,
                    format!("moving from {primary} to {to} ({reason})"),
                );
                let devices = handover.devices();
                handovers.insert(app.name.clone(), handover);
                return Ok(devices);
            }
        }
        drop(handovers);
        if planned.is_empty() && !old.is_empty() && primary.is_none() && !parking {
            // The primary looks dead and no device can take the app now: keep the placement
            // rather than empty it. Emptied, the next place found would start with whichever
            // device the planner lists first, however far behind, and the primary's
            // acknowledged writes would be lost; kept, the replica holding the most state
            // leads (a promotion), or the primary itself if it was only out of sight.
            return Ok(old.to_vec());
        }
        // A restore is done once the device reports the app.
        let restored = self
            .restores
            .lock()
            .expect("restores lock")
            .get(&app.name)
            .is_some_and(|d| report(d).is_some());
        if restored {
            self.store.delete(Table::Restores, &app.name)?;
            self.restores
                .lock()
                .expect("restores lock")
                .remove(&app.name);
            self.phase_changed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let (devices, promotion) =
            replicas::order(old, planned, |d| report(d).map(|r| r.state_seq));
        if let Some(event) = promotion {
            self.record_event(&app.name, event);
        } else if !old.is_empty() && devices.first().is_some_and(|d| !old.contains(d)) {
            // No replica survived: the new primary starts from the last snapshot.
            self.store
                .put(Table::Restores, &app.name, devices[0].as_bytes())?;
            self.restores
                .lock()
                .expect("restores lock")
                .insert(app.name.clone(), devices[0].clone());
            // The new primary's assignment says it restores, beyond its placement.
            self.phase_changed
                .store(true, std::sync::atomic::Ordering::Release);
            self.record_event(
                &app.name,
                format!(
                    "no replica survived: {} restores the last snapshot",
                    devices[0]
                ),
            );
        }
        Ok(devices)
    }

    /// Take part in the election, and reconcile only as the leader, with every write fenced by
    /// that leadership (a control plane that lost it mid-reconcile changes nothing more).
    pub fn reconcile_if_leading(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let electing = Instant::now();
        let leadership = self.store.lead(&self.id)?;
        tracing::debug!(
            lead_ms = electing.elapsed().as_secs_f64() * 1e3,
            "took part in the election"
        );
        match leadership {
            Leadership::Leader => {
                if !self.leading.swap(true, Ordering::AcqRel) {
                    tracing::info!(id = self.id, "leading: this control plane reconciles");
                }
                self.renewing_leadership(|| {
                    crate::store::as_leader(|| {
                        // Resume what the last leader left in flight before deciding anything.
                        if !self.soft_loaded.load(Ordering::Acquire) {
                            self.load_soft_state()?;
                            self.soft_loaded.store(true, Ordering::Release);
                        }
                        self.reconcile()
                    })
                })
            }
            Leadership::Follower { leader } => {
                if self.leading.swap(false, Ordering::AcqRel) {
                    tracing::warn!(id = self.id, ?leader, "no longer leading");
                    self.soft_loaded.store(false, Ordering::Release);
                    self.drop_soft_state();
                } else {
                    tracing::debug!(id = self.id, ?leader, "following");
                }
                Ok(())
            }
        }
    }

    /// Run `tick` while another thread renews this control plane's leadership every
    /// [`RENEW_EVERY`]: a tick that takes longer than the leader's lease (a full plan of
    /// thousands of apps, a machine short of CPU) keeps it instead of losing it mid-way and
    /// starting again under a new election. A leader that stops (killed, paused) still loses
    /// it within the lease, since the renewing stops with it; one deposed meanwhile learns it
    /// at its next renewal, and its fenced writes fail from then on.
    pub(crate) fn renewing_leadership<T>(&self, tick: impl FnOnce() -> T) -> T {
        std::thread::scope(|scope| {
            let (done, finished) = std::sync::mpsc::channel::<()>();
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    finished.recv_timeout(RENEW_EVERY)
                {
                    match self.store.lead(&self.id) {
                        Ok(Leadership::Leader) => {}
                        Ok(Leadership::Follower { leader }) => {
                            tracing::warn!(?leader, "deposed during a reconcile");
                            return;
                        }
                        Err(err) => tracing::warn!("cannot renew the leadership: {err}"),
                    }
                }
            });
            let outcome = tick();
            drop(done);
            outcome
        })
    }

    /// True if this control plane led at its last reconcile tick.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reconcile on every change and every tick until `shutdown` resolves.
    pub async fn run_reconciler(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let control = self.clone();
            let queued = Instant::now();
            match tokio::task::spawn_blocking(move || {
                tracing::debug!(
                    queued_ms = queued.elapsed().as_secs_f64() * 1e3,
                    "reconcile tick starts"
                );
                control.reconcile_if_leading()
            })
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(StoreError::Deposed)) => {
                    tracing::warn!("another control plane was elected during this reconcile");
                }
                Ok(Err(err)) => tracing::error!("reconcile failed: {err}"),
                Err(err) => tracing::error!("reconcile panicked: {err}"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(self.config.tick) => {}
            }
        }
    }
}

/// What a full plan depends on that devices change: which devices exist, are alive and offer
/// capacity now.
fn fleet_signature(fleet: &[Device]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for device in fleet {
        (&device.id, device.healthy, device.harvestable).hash(&mut hasher);
    }
    hasher.finish()
}

/// Apps that need a place: fewer (or more) replicas on usable devices than they want, where a
/// device is usable for an app while it is healthy, harvestable, trusted as much as the app
/// needs and asks no more than the app's cap (a device caught cheating loses its replicas at
/// once, not at the next full plan).
fn unplaced(
    demands: &[AppDemand],
    current: &placement::Assignment,
    fleet: &[Device],
) -> HashSet<String> {
    let usable: HashMap<&str, &Device> = fleet
        .iter()
        .filter(|d| d.healthy && d.harvestable)
        .map(|d| (d.id.as_str(), d))
        .collect();
    demands
        .iter()
        .filter(|demand| {
            let on = current.get(&demand.id).map_or(&[][..], |d| &d[..]);
            on.len() != demand.replica_count() as usize
                || on.iter().any(|d| {
                    usable.get(d.as_str()).is_none_or(|d| {
                        d.trust < demand.min_trust
                            || demand.max_price.is_some_and(|max| d.price_cpu_hour > max)
                    })
                })
        })
        .map(|demand| demand.id.clone())
        .collect()
}

/// An app whose primary is alive but fell below the app's trust minimum, while no other device
/// could take the app, keeps the primary: its minimum is lowered to the primary's trust for
/// this plan. Degraded is better than down; the next plan after an eligible device appears
/// moves it there.
fn keep_untrusted_primaries(
    demands: &mut [AppDemand],
    current: &placement::Assignment,
    fleet: &[Device],
) {
    for demand in demands {
        let Some(primary) = current.get(&demand.id).and_then(|d| d.first()) else {
            continue;
        };
        let Some(on) = fleet.iter().find(|d| d.id == *primary) else {
            continue;
        };
        if !(on.healthy && on.harvestable) || on.trust >= demand.min_trust {
            continue;
        }
        let eligible = fleet.iter().any(|d| {
            d.id != *primary
                && d.healthy
                && d.harvestable
                && d.trust >= demand.min_trust
                && !demand.excluded_devices.contains(&d.id)
                && demand.max_price.is_none_or(|max| d.price_cpu_hour <= max)
                && d.cpu_free + 1e-9 >= demand.cpu
                && d.mem_free_mb + 1e-9 >= demand.mem_mb
                && d.disk_free_mb + 1e-9 >= demand.component_mb
        });
        if !eligible {
            demand.min_trust = on.trust;
        }
    }
}

/// True when the replicas placed on some device now need more CPU than it offers (their
/// measured demand grew, or the device offers less): the whole fleet is planned again at once
/// rather than at the next cadence, moving the busiest away before its latency suffers.
fn overloaded(demands: &[AppDemand], current: &placement::Assignment, fleet: &[Device]) -> bool {
    let mut load: HashMap<&str, f64> = HashMap::new();
    for demand in demands {
        for device in current.get(&demand.id).into_iter().flatten() {
            *load.entry(device.as_str()).or_default() += demand.cpu;
        }
    }
    fleet.iter().any(|d| {
        load.get(d.id.as_str())
            .is_some_and(|&l| l > d.cpu_free + 1e-9)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::api::Tier;
    use fog_scheduler::placement::scenarios;

    fn fleet() -> Vec<Device> {
        let mut fleet = scenarios::devices(2, 1);
        for (i, d) in fleet.iter_mut().enumerate() {
            d.id = format!("d{i}");
            d.cpu_free = 1.0;
            d.healthy = true;
            d.harvestable = true;
        }
        fleet
    }

    #[test]
    fn a_device_whose_replicas_need_more_than_it_offers_is_overloaded() {
        let fleet = fleet();
        let mut current = placement::Assignment::new();
        current.insert("busy".into(), vec!["d0".into()]);
        current.insert("quiet".into(), vec!["d0".into()]);
        let demand = |id: &str, cpu: f64| AppDemand::new(id, cpu, 64.0, Tier::B);
        let calm = [demand("busy", 0.5), demand("quiet", 0.01)];
        assert!(!overloaded(&calm, &current, &fleet));
        let busy = [demand("busy", 0.995), demand("quiet", 0.01)];
        assert!(overloaded(&busy, &current, &fleet));
    }

    #[test]
    fn apps_short_of_replicas_or_on_unusable_devices_need_a_place() {
        let mut fleet = fleet();
        fleet[1].harvestable = false;
        let mut current = placement::Assignment::new();
        current.insert("placed".into(), vec!["d0".into()]);
        current.insert("stranded".into(), vec!["d1".into()]);
        let mut wants_two = AppDemand::new("scaled", 0.1, 64.0, Tier::B);
        wants_two.replicas = Some(2);
        current.insert("scaled".into(), vec!["d0".into()]);
        let demands = [
            AppDemand::new("placed", 0.1, 64.0, Tier::B),
            AppDemand::new("stranded", 0.1, 64.0, Tier::B),
            AppDemand::new("new", 0.1, 64.0, Tier::B),
            wants_two,
        ];
        let pending = unplaced(&demands, &current, &fleet);
        let mut pending: Vec<&str> = pending.iter().map(String::as_str).collect();
        pending.sort();
        assert_eq!(pending, ["new", "scaled", "stranded"]);
    }
}
