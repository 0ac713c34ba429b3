//! Devices: registration, signed heartbeats (held until assignments change), ledger periods,
//! liveness, and the assignments each device pulls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use bytes::Bytes;
use fog_proto::api::{
    self, Assignment, DeviceRegistered, DeviceRegistration, Heartbeat, HeartbeatReply, Tier,
};
use fog_proto::auth;
use fog_proto::{Manifest, Permissions};

use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{DeviceRecord, StoreError, Table, decode, encode};
use crate::{Control, Live, now_ms, replicas};

/// A digest of a device's assignments and the routers it is told to attach to: a device that
/// already has them is held.
fn digest(assignments: &[Assignment], attach: &[api::AttachPoint]) -> String {
    let both = (assignments, attach);
    auth::sha256_hex(&serde_json::to_vec(&both).expect("API types always serialise"))
}

/// A fraction in (0, 1], different for each call (and device).
fn spread(id: &str) -> f64 {
    let random = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        (id, Instant::now()),
    );
    ((random >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// What the control plane remembers of the devices it read from the registry, so heartbeats
/// do not read it: sharded maps, so heartbeats of different devices take no common lock.
#[derive(Debug, Default)]
pub(crate) struct KnownDevices {
    /// Device id → the public key it registered with.
    keys: DashMap<String, String>,
    /// Admitted key → the admitted table's generation it was read at.
    admitted: DashMap<String, u64>,
}

/// Longest harvest reason a heartbeat may carry, bytes.
const MAX_HARVEST_REASON: usize = 512;

impl Control {
    /// The device (id, record) that signed a request, if registered.
    pub(crate) fn signing_device(&self, signer: &str) -> Result<String, ApiError> {
        let id = auth::device_id(signer);
        match self.registered_key(&id)? {
            Some(key) if key == signer => Ok(id),
            Some(_) => Err(ApiError::Forbidden("not a registered device key".into())),
            None => Err(ApiError::Forbidden("not a registered device".into())),
        }
    }

    /// The public key device `id` registered with, if it did: from memory once read, since a
    /// device's record keeps its key (its id is derived from it) and is never removed.
    pub(crate) fn registered_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        if let Some(key) = self.known_devices.keys.get(id) {
            return Ok(Some(key.clone()));
        }
        let Some(bytes) = self.store.get(Table::Devices, id)? else {
            return Ok(None);
        };
        let device: DeviceRecord = decode(Table::Devices, id, &bytes)?;
        self.known_devices
            .keys
            .insert(id.to_string(), device.public_key.clone());
        Ok(Some(device.public_key))
    }

    /// Whether `key` is admitted, read from the registry only when the admitted table may have
    /// changed since it was last read (always, on a registry others write too).
    fn is_admitted_cached(&self, key: &str) -> Result<bool, StoreError> {
        // The generation is read before the table: an admission revoked after it is seen as a
        // new generation next time.
        let generation = self.store.generation(Table::Admitted);
        if let Some(generation) = generation
            && self
                .known_devices
                .admitted
                .get(key)
                .is_some_and(|seen| *seen == generation)
        {
            return Ok(true);
        }
        let admitted = self.is_admitted(key)?;
        match generation {
            Some(generation) if admitted => {
                self.known_devices
                    .admitted
                    .insert(key.to_string(), generation);
            }
            _ => {
                self.known_devices.admitted.remove(key);
            }
        }
        Ok(admitted)
    }

    /// The heartbeat interval announced now, from the number of devices heard from.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval_in(self.fleet.load(Ordering::Relaxed))
    }

    /// The heartbeat interval announced in a fleet of `devices`.
    pub(crate) fn heartbeat_interval_in(&self, devices: usize) -> Duration {
        crate::heartbeat_interval_for(
            devices,
            self.config.heartbeat_interval,
            self.config.heartbeat_rate,
            self.config.max_heartbeat_interval,
        )
    }

    pub(crate) async fn register<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        let registration: DeviceRegistration = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        if let Some(addr) = &registration.addr
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ApiError::BadRequest(format!(
                "addr {addr:?} is not host:port"
            )));
        }
        registration.validate().map_err(ApiError::BadRequest)?;
        // A wrong token is refused before anything is recorded.
        if let Some(token) = &registration.admission_token {
            self.check_admission_token(token)?;
        }
        let id = auth::device_id(&signer);
        // Strangers' devices wait in the registry for the operator; a flood of fresh keys must
        // not fill it.
        if registration.admission_token.is_none()
            && self.store.get(Table::Devices, &id)?.is_none()
            && !self.is_admitted(&signer)?
        {
            let admitted = self.admitted_keys()?;
            let waiting = self
                .devices()?
                .iter()
                .filter(|d| !admitted.contains(&d.public_key))
                .count();
            if waiting >= self.config.max_pending_devices {
                return Err(ApiError::Unavailable(format!(
                    "{waiting} devices are already waiting for admission: register with the \
                     admission token, or ask the operator to admit some first"
                )));
            }
        }
        let record = DeviceRecord {
            id: id.clone(),
            public_key: signer,
            addr: registration.addr.unwrap_or_default(),
            region: registration.region,
            cpu: registration.cpu,
            mem_mb: registration.mem_mb,
            disk_mb: registration.disk_mb,
            price_cpu_hour: registration.price_cpu_hour,
            registered_ms: now_ms(),
        };
        self.store.put(Table::Devices, &id, &encode(&record))?;
        self.store.flush()?;
        if registration.admission_token.is_some() {
            self.admit(&record.public_key, crate::admission::AdmittedBy::Token)?;
        }
        let admitted = self.is_admitted(&record.public_key)?;
        tracing::info!(
            device = id,
            addr = record.addr,
            admitted,
            "device registered"
        );
        self.changed.notify_one();
        Ok(json(
            200,
            &DeviceRegistered {
                device_id: id,
                admitted,
                heartbeat_interval_ms: self.heartbeat_interval().as_millis() as u64,
            },
        ))
    }

    pub(crate) async fn heartbeat<B>(
        self: &Arc<Self>,
        id: &str,
        request: http::Request<B>,
    ) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.metrics.heartbeats.inc();
        let (signer, body, _) = self.signed(request, 8 * api::MAX_JSON_BYTES).await?;
        // The registered key, from memory after the device's first heartbeat: a heartbeat
        // does not read the registry.
        let Some(key) = self.registered_key(id)? else {
            return Err(ApiError::NotFound(format!(
                "no device {id}: register first"
            )));
        };
        if key != signer {
            return Err(ApiError::Forbidden(format!(
                "heartbeat for {id} signed by another key"
            )));
        }
        let mut heartbeat: Heartbeat = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        if heartbeat.logs.len() > api::MAX_LOG_LINES
            || heartbeat.running.len() > api::MAX_RUNNING
            || heartbeat.periods.len() > api::MAX_PERIODS
            || heartbeat.attached.len() > api::MAX_ATTACHED
            || heartbeat
                .harvest
                .as_ref()
                .is_some_and(|h| h.len() > MAX_HARVEST_REASON)
        {
            return Err(ApiError::TooLarge(
                "too many log lines, running apps, ledger periods or attach links, or a harvest \
                 reason too long, in one heartbeat"
                    .into(),
            ));
        }
        // A device's claims about itself (capacity, sensors, link RTTs) must be possible.
        heartbeat.validate().map_err(ApiError::BadRequest)?;
        // Ledger periods: signed by this device's key, for this device, with honest arithmetic;
        // a refused one costs the device trust.
        match self.accept_periods(id, &signer, &mut heartbeat) {
            Ok(()) => {}
            Err(refused @ ApiError::LedgerPeriod(_)) => {
                self.observed
                    .update_evidence(self.store.as_ref(), id, |e| {
                        e.refused_period(now_ms(), &self.config.trust)
                    })?;
                // Kept at once: a restart must not forgive it.
                self.save_evidence(true)?;
                return Err(refused);
            }
            Err(other) => return Err(other),
        }
        // The canary's requests are Fog's own spot checks, not an app's log.
        let lines: Vec<_> = std::mem::take(&mut heartbeat.logs)
            .into_iter()
            .filter(|l| l.app != fog_proto::canary::APP)
            .collect();
        self.logs.add(self.store.as_ref(), id, lines)?;
        let running: Vec<String> = heartbeat
            .running
            .iter()
            .map(|r| format!("{}@{}", r.app, r.sha256))
            .collect();
        let known = heartbeat.known.clone();
        self.usage.record(id, &heartbeat.running, Instant::now());
        // The interval this device is told now, and judged by until its next heartbeat.
        let interval = self.heartbeat_interval();
        let was = {
            let mut live = self.live.lock().expect("live lock");
            let was = live.get(id).map(|l| {
                let before: Vec<String> = l
                    .heartbeat
                    .running
                    .iter()
                    .map(|r| format!("{}@{}", r.app, r.sha256))
                    .collect();
                (
                    self.is_alive(l),
                    l.heartbeat.harvestable,
                    before,
                    (l.at, l.interval),
                )
            });
            self.put_live(
                &mut live,
                id.to_string(),
                Live {
                    at: Instant::now(),
                    interval,
                    heartbeat: heartbeat.clone(),
                    local: true,
                },
            );
            self.fleet.store(live.len(), Ordering::Relaxed);
            was
        };
        let previous = was
            .as_ref()
            .map(|(_, harvestable, _, (at, told))| (*at, *harvestable, *told));
        let told_before = previous.map(|(_, _, told)| told);
        self.observe(id, previous, &heartbeat)?;
        // A handover advances on what devices report: look at it now.
        if !self.handovers.lock().expect("handovers lock").is_empty() {
            self.changed.notify_one();
        }
        match was {
            Some((true, harvestable, before, _)) if harvestable == heartbeat.harvestable => {
                if before != running {
                    self.bump();
                }
            }
            _ => {
                self.bump();
                self.changed.notify_one();
            }
        }
        // Hold the reply while the device already has its assignments, until they change or a
        // heartbeat interval passes: assignments reach devices as soon as they are made.
        // Every device dials out to every router (the routers come with the reply: pulled, never
        // pushed): whichever router a visitor reaches holds a connection to each replica, and
        // any two devices share a rendezvous.
        let mut seen = self.version.subscribe();
        // What the assignments below are computed from: the bumps seen, how many of them
        // touched the index only, and this device's epoch in it.
        let mut bumps_seen = *seen.borrow_and_update();
        let mut index_bumps_seen = self.index_bumps.load(Ordering::SeqCst);
        let mut epoch = self.plan_index()?.epoch(id);
        // The canary is for admitted devices only: a pending one gets no work at all.
        let admitted = self.is_admitted_cached(&signer)?;
        let assignments_for = |id: &str| -> Result<Vec<Assignment>, StoreError> {
            let mut assignments = self.assignments_for(id)?;
            if !admitted {
                assignments.retain(|a| a.manifest.name != fog_proto::canary::APP);
            }
            Ok(assignments)
        };
        let mut assignments = assignments_for(id)?;
        let mut attach = self.registrations.attach_points();
        let mut digest = digest(&assignments, &attach);
        if known.as_deref() == Some(digest.as_str()) {
            // Held one interval, the device's pace when it long-polls. When its interval has
            // just changed (the fleet grew), a random part of it: devices that heartbeated
            // within the same second under the old interval spread over the new one instead of
            // arriving together at every interval's end.
            let hold = if told_before != Some(interval) {
                interval.mul_f64(spread(id))
            } else {
                interval
            };
            let deadline = tokio::time::Instant::now() + hold;
            while tokio::time::timeout_at(deadline, seen.changed())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                // Only this device's digest is computed again, and only if what it is made
                // of may have changed: a bump other than the index's, or its epoch moved.
                // (Two bumps at once may be miscounted as index-only; the second's own wake,
                // which follows at once, computes it.)
                let bumps = *seen.borrow_and_update();
                let index_bumps = self.index_bumps.load(Ordering::SeqCst);
                let only_index =
                    bumps.wrapping_sub(bumps_seen) <= index_bumps.wrapping_sub(index_bumps_seen);
                let now = self.plan_index()?.epoch(id);
                (bumps_seen, index_bumps_seen) = (bumps, index_bumps);
                if only_index && now == epoch {
                    continue;
                }
                epoch = now;
                assignments = assignments_for(id)?;
                attach = self.registrations.attach_points();
                digest = self::digest(&assignments, &attach);
                if known.as_deref() != Some(digest.as_str()) {
                    break;
                }
            }
        }
        Ok(json(
            200,
            &HeartbeatReply {
                assignments,
                digest,
                attach,
                heartbeat_interval_ms: interval.as_millis() as u64,
                missed_heartbeats: self.config.missed_heartbeats,
            },
        ))
    }

    /// Verify and store the ledger periods a heartbeat carries: each signed by the device's
    /// key, for this device, with honest arithmetic ([`ApiError::BadRequest`] otherwise).
    fn accept_periods(
        &self,
        id: &str,
        key: &str,
        heartbeat: &mut Heartbeat,
    ) -> Result<(), ApiError> {
        for period in std::mem::take(&mut heartbeat.periods) {
            let rejected = |e: String| {
                ApiError::LedgerPeriod(format!(
                    "ledger period {} rejected: {e}",
                    period.period.start_ms
                ))
            };
            if period.period.device != id {
                return Err(rejected(format!(
                    "it is for device {}",
                    period.period.device
                )));
            }
            auth::verify_bytes(key, &period.period.signed_bytes(), &period.signature)
                .map_err(|e| rejected(e.to_string()))?;
            period.period.check_arithmetic().map_err(rejected)?;
            let key = format!("{id}/{:020}", period.period.start_ms);
            self.store.put(Table::Ledger, &key, &encode(&period))?;
        }
        Ok(())
    }

    /// `GET /v1/devices/{a}/peers/{b}`: the apps an assignment pairs devices `a` and `b` for
    /// (both hold replicas, or one is taking over from the other), or 403: a router splices
    /// only such peers.
    pub(crate) fn pairing(&self, a: &str, b: &str) -> Answer {
        // From the plan index: the apps placed on both, not a walk over every placement.
        let apps: Vec<String> = {
            let index = self.plan_index()?;
            match (index.by_device.get(a), index.by_device.get(b)) {
                (Some(on_a), Some(on_b)) => on_a.intersection(on_b).cloned().collect(),
                _ => Vec::new(),
            }
        };
        if a == b || apps.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "no assignment pairs devices {a} and {b}"
            )));
        }
        Ok(json(200, &api::Pairing { apps }))
    }

    /// Wake every long-poll: placements or what devices run have changed.
    pub(crate) fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Wake every long-poll for a change to records in the plan index only (placements
    /// written, nothing else that assignments are made of): a held heartbeat whose device's
    /// epoch in the index ([`crate::registry::PlanIndex::epoch`]) did not move keeps its
    /// digest without computing its assignments again.
    pub(crate) fn bump_index(&self) {
        // Counted first: a long-poll that sees the bump sees the count.
        self.index_bumps.fetch_add(1, Ordering::SeqCst);
        self.bump();
    }

    /// Alive unless silent for `missed_heartbeats` of the interval it was last told, counted
    /// only while this control plane could hear it (see [`crate::planes::Planes::silence`]).
    pub(crate) fn is_alive(&self, live: &Live) -> bool {
        self.planes.silence(live.at) <= live.interval * self.config.missed_heartbeats
    }

    pub(crate) fn assignments_for(&self, device: &str) -> Result<Vec<Assignment>, StoreError> {
        let index = self.plan_index()?;
        // Every device runs the canary beside its apps, for spot checks, while it offers
        // capacity: a draining device lets go of it with its apps.
        let harvestable = self
            .live
            .lock()
            .expect("live lock")
            .get(device)
            .is_some_and(|l| l.heartbeat.harvestable);
        let canary = self.canary.assignment().filter(|_| harvestable);
        let Some(names) = index.by_device.get(device) else {
            return Ok(canary.into_iter().collect());
        };
        // Which of this device's apps it must fence or restore: looked up per app under short
        // locks, not copied whole on every heartbeat.
        // The leader's own decisions, or those it announced (when this control plane follows).
        let fenced: Vec<bool> = {
            let handovers = self.handovers.lock().expect("handovers lock");
            let says = self.planes.leader_says.lock().expect("leader says lock");
            names
                .iter()
                .map(|name| {
                    handovers
                        .get(name)
                        .is_some_and(|h| h.from == device && h.phase == replicas::Phase::Fencing)
                        || says.fencing.get(name).is_some_and(|d| d == device)
                })
                .collect()
        };
        let restore: Vec<bool> = {
            let restores = self.restores.lock().expect("restores lock");
            let says = self.planes.leader_says.lock().expect("leader says lock");
            names
                .iter()
                .map(|name| {
                    restores.get(name).is_some_and(|d| d == device)
                        || says.restores.get(name).is_some_and(|d| d == device)
                })
                .collect()
        };
        // Only the peers this device's assignments name, under one short lock: a heartbeat's
        // cost must not grow with the number of devices in the fog.
        let live = self.live.lock().expect("live lock");
        let peer = |d: &String| {
            live.get(d)
                .and_then(|l| l.heartbeat.htx.clone())
                .map(|htx| api::Peer {
                    device: d.clone(),
                    htx,
                })
        };
        let mut out = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let (Some(app), Some(placement)) = (index.apps.get(name), index.placements.get(name))
            else {
                continue;
            };
            let Some(position) = placement.devices.iter().position(|d| d == device) else {
                continue;
            };
            let replication = if position == 0 {
                api::Replication {
                    role: api::ReplicaRole::Primary,
                    peers: placement.devices[1..].iter().filter_map(peer).collect(),
                    fenced: fenced[n],
                    snapshot_every_ms: match app.tier {
                        Tier::B => self.config.snapshot_every.as_millis() as u64,
                        Tier::A | Tier::S => 0,
                    },
                    restore: restore[n],
                }
            } else {
                api::Replication {
                    role: api::ReplicaRole::Follower,
                    peers: peer(&placement.devices[0]).into_iter().collect(),
                    ..api::Replication::default()
                }
            };
            let settings = index.settings.get(name);
            out.push(Assignment {
                sha256: app.sha256.clone(),
                manifest: Manifest {
                    name: app.name.clone(),
                    limits: app.limits,
                    permissions: Permissions {
                        allow_outbound: settings
                            .map(|s| s.allow_outbound.clone())
                            .unwrap_or_default(),
                        ..Permissions::default()
                    },
                    config: settings
                        .map(|s| self.config_values(name, s))
                        .unwrap_or_default(),
                    durable: settings.is_some_and(|s| s.durable),
                },
                replication,
                bundle: index.sites.get(&app.name).cloned(),
            });
        }
        out.extend(canary);
        Ok(out)
    }
}
