//! Reconcile: the loop that turns apps and live devices into placements with
//! [`fog_scheduler::placement::plan`], the autoscaler, and leadership of each app's replicas
//! (promotion and handovers, see [`crate::replicas`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fog_proto::api::{self, Heartbeat};
use fog_scheduler::placement::{self, AppDemand, Device};

use crate::store::{AppRecord, PlacementRecord, StoreError, Table, decode, encode};
use crate::{ApiError, Control, autoscale, replicas};

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
                    // Remember where the state is, to wake there.
                    if let Some(placement) = self.placements()?.get(&name) {
                        self.parked
                            .lock()
                            .expect("parked lock")
                            .insert(name.clone(), placement.devices.clone());
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
                        self.events.record(&name, decision.reason);
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

    /// Compute placements for every app from the registered devices and write them (after the
    /// start-up grace period of `missed_heartbeats` intervals).
    pub fn reconcile(&self) -> Result<(), StoreError> {
        let mut apps = self.apps()?;
        let devices = self.devices()?;
        let placements = self.placements()?;
        let in_grace =
            self.started.elapsed() < self.config.heartbeat_interval * self.config.missed_heartbeats;
        if in_grace && placements.values().any(|p| !p.devices.is_empty()) {
            return Ok(());
        }
        let live: HashMap<String, (bool, Heartbeat)> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .map(|(id, l)| (id.clone(), (self.is_alive(l), l.heartbeat.clone())))
            .collect();
        if self.autoscale(&live)? {
            apps = self.apps()?;
        }
        let fleet: Vec<Device> = devices
            .iter()
            .map(|d| {
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
                Device {
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
                    latency_ms: 10.0,
                    bandwidth_mbps: 100.0,
                    trust: 0.5,
                    price_cpu_hour: d.price_cpu_hour,
                    price_gb_hour: 0.01,
                }
            })
            .collect();
        let demands: Vec<AppDemand> = apps
            .iter()
            .filter(|a| a.replicas > 0)
            .map(|a| {
                let tier = a.tier;
                let mut demand = AppDemand::new(
                    a.name.clone(),
                    self.config.replica_cpu,
                    (a.limits.memory_bytes >> 20) as f64,
                    tier,
                );
                demand.replicas = Some(a.replicas);
                demand.component_mb = a.size as f64 / (1 << 20) as f64;
                demand
            })
            .collect();
        let parked = self.parked.lock().expect("parked lock").clone();
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
        let outcome = placement::plan(&fleet, &demands, &current, &self.config.placement);
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
        for app in &apps {
            // Only apps still registered (one may have been removed while we planned).
            if self.store.get(Table::Apps, &app.name)?.is_none() {
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
            let devices = self.lead(app, &old, planned, &reports, &alive);
            if !devices.is_empty() {
                self.parked.lock().expect("parked lock").remove(&app.name);
            }
            let record = PlacementRecord {
                devices,
                problem: problems.get(app.name.as_str()).map(|p| p.to_string()),
            };
            if placements.get(&app.name) != Some(&record) {
                tracing::info!(app = app.name, devices = ?record.devices, problem = ?record.problem, "placement changed");
                self.store
                    .put(Table::Placements, &app.name, &encode(&record))?;
                changed = true;
            }
        }
        self.store.flush()?;
        let phase_changed = self
            .phase_changed
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if changed || phase_changed {
            self.bump();
        }
        Ok(())
    }

    /// Decide an app's placement from the planner's: keep or promote the primary, or run a
    /// handover while the old primary is alive (see [`replicas`]).
    pub(crate) fn lead(
        &self,
        app: &AppRecord,
        old: &[String],
        planned: Vec<String>,
        reports: &HashMap<(String, String), api::RunningApp>,
        alive: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let report = |d: &str| reports.get(&(d.to_string(), app.name.clone()));
        let mut handovers = self.handovers.lock().expect("handovers lock");
        // A handover in progress decides the placement until it ends.
        if let Some(handover) = handovers.get_mut(&app.name) {
            let phase = handover.phase;
            match handover.step(report(&handover.from), report(&handover.to)) {
                replicas::Step::Continue(devices) => {
                    if handover.phase != phase {
                        // The primary must learn of its fence now, not at its next heartbeat.
                        self.phase_changed
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    return devices;
                }
                replicas::Step::Done(devices, event) => {
                    self.events.record(&app.name, event);
                    handovers.remove(&app.name);
                    return devices;
                }
                replicas::Step::Abort(reason) => {
                    self.events.abandon(&app.name, &handover.to, &reason);
                    handovers.remove(&app.name);
                }
            }
        }
        let primary = old.first().filter(|p| alive(p.as_str()));
        // A requested move, or the planner dropping a live primary: hand over.
        let requested = self.moves.lock().expect("moves lock").remove(&app.name);
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
                self.events.record(
                    &app.name,
                    format!("moving from {primary} to {to} ({reason})"),
                );
                let devices = handover.devices();
                handovers.insert(app.name.clone(), handover);
                return devices;
            }
        }
        drop(handovers);
        {
            // A restore is done once the device reports the app.
            let mut restores = self.restores.lock().expect("restores lock");
            if restores.get(&app.name).is_some_and(|d| report(d).is_some()) {
                restores.remove(&app.name);
            }
        }
        let (devices, promotion) =
            replicas::order(old, planned, |d| report(d).map(|r| r.state_seq));
        if let Some(event) = promotion {
            self.events.record(&app.name, event);
        } else if !old.is_empty() && devices.first().is_some_and(|d| !old.contains(d)) {
            // No replica survived: the new primary starts from the last snapshot.
            self.restores
                .lock()
                .expect("restores lock")
                .insert(app.name.clone(), devices[0].clone());
            self.events.record(
                &app.name,
                format!(
                    "no replica survived: {} restores the last snapshot",
                    devices[0]
                ),
            );
        }
        devices
    }

    /// Reconcile on every change and every tick until `shutdown` resolves.
    pub async fn run_reconciler(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let control = self.clone();
            match tokio::task::spawn_blocking(move || control.reconcile()).await {
                Ok(Ok(())) => {}
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
