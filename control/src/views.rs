//! Views: what `fog ps`, `fog devices`, routers (routes) and Betanet visitors (names) read.

use std::collections::{BTreeSet, HashMap};

use fog_proto::api::{self, AppInfo, DeviceInfo, Replica, Route, RouteMode, Tier};

use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{AppRecord, AppTerms, DeviceRecord, PlacementRecord, StoreError, Table, decode};
use crate::{Control, Live, names, now_ms};

impl Control {
    /// `GET /v1/names/{name}`: the signed descriptor of the app a Betanet name (the hex id of
    /// `betanet://` or a `bn1:` name) belongs to.
    pub(crate) fn resolve(&self, name: &str) -> Answer {
        let wanted = name.trim_start_matches("betanet://");
        let node = fog_htx::names::parse_bn1(wanted).ok();
        if node.is_none() && (wanted.len() != 64 || hex::decode(wanted).is_err()) {
            return Err(ApiError::BadRequest(format!(
                "{name:?} is not a Betanet name (64 hex digits or bn1:...)"
            )));
        }
        for app in self.apps()? {
            let public = self.public_names(&app)?;
            let matches = match node {
                Some(node) => fog_htx::names::node_id(&public.app_key) == node,
                None => public.betanet_id.eq_ignore_ascii_case(wanted),
            };
            if matches {
                let identity = self.app_identity(&app)?;
                let fronts = self.registrations.fronts();
                if fronts.is_empty() {
                    return Err(ApiError::Unavailable(format!(
                        "app {:?} has no Betanet front serving right now",
                        app.name
                    )));
                }
                return Ok(json(
                    200,
                    &names::descriptor(&identity, &app.name, fronts, now_ms() / 1000),
                ));
            }
        }
        Err(ApiError::NotFound(format!(
            "no app has the Betanet name {name:?}"
        )))
    }

    pub(crate) fn running_on(&self) -> HashMap<String, Vec<String>> {
        let live = self.live.lock().expect("live lock");
        let mut running: HashMap<String, Vec<String>> = HashMap::new();
        for (device, l) in live.iter() {
            if self.is_alive(l) {
                for app in &l.heartbeat.running {
                    running
                        .entry(app.app.clone())
                        .or_default()
                        .push(device.clone());
                }
            }
        }
        for devices in running.values_mut() {
            devices.sort();
        }
        running
    }

    /// Put `entry` in the live table as device `id`'s, keeping the index of what runs where
    /// in step.
    pub(crate) fn put_live(&self, live: &mut HashMap<String, Live>, id: String, entry: Live) {
        let apps = |l: &Live| -> BTreeSet<String> {
            l.heartbeat.running.iter().map(|r| r.app.clone()).collect()
        };
        let after = apps(&entry);
        let before = live.get(&id).map(apps).unwrap_or_default();
        if before != after {
            let mut running = self.running.lock().expect("running lock");
            for gone in before.difference(&after) {
                if let Some(devices) = running.get_mut(gone) {
                    devices.remove(&id);
                    if devices.is_empty() {
                        running.remove(gone);
                    }
                }
            }
            for added in after.difference(&before) {
                running.entry(added.clone()).or_default().insert(id.clone());
            }
        }
        live.insert(id, entry);
    }

    /// The live devices that report running `app`, in id order: what [`Control::running_on`]
    /// says of it, from the devices that run it only.
    pub(crate) fn running_of(&self, app: &str) -> Vec<String> {
        let reporting: Vec<String> = self
            .running
            .lock()
            .expect("running lock")
            .get(app)
            .map(|devices| devices.iter().cloned().collect())
            .unwrap_or_default();
        let live = self.live.lock().expect("live lock");
        reporting
            .into_iter()
            .filter(|d| live.get(d).is_some_and(|l| self.is_alive(l)))
            .collect()
    }

    /// The placement of `app`, from the plan index.
    pub(crate) fn placement_of(&self, app: &str) -> Result<Option<PlacementRecord>, StoreError> {
        Ok(self.plan_index()?.placements.get(app).cloned())
    }

    /// What `fog ps` shows of `app`: read from its own records, the plan index and the
    /// devices that run it, never from a walk over every app or device (it answers every
    /// publish).
    pub(crate) fn app_info(&self, app: &AppRecord) -> Result<AppInfo, StoreError> {
        let placement = self.placement_of(&app.name)?;
        let running = self.running_of(&app.name);
        let events = self.events_of(&app.name)?;
        let terms: Option<AppTerms> = match self.store.get(Table::Terms, &app.name)? {
            Some(bytes) => Some(decode(Table::Terms, &app.name, &bytes)?),
            None => None,
        };
        let settings = self.settings(&app.name)?;
        let assigned = placement
            .as_ref()
            .map(|p| p.devices.clone())
            .unwrap_or_default();
        // What it pays: each assigned (admitted) device charges the planned demand at its own
        // asked price, as its signed ledger periods will.
        let cpu_planned = self.planned_cpu_of(app, &running)?;
        let mut price_per_hour = 0.0;
        for id in &assigned {
            let Some(bytes) = self.store.get(Table::Devices, id)? else {
                continue;
            };
            let device: DeviceRecord = decode(Table::Devices, id, &bytes)?;
            if self.is_admitted(&device.public_key)? {
                price_per_hour +=
                    api::LedgerPeriod::credits_per_hour(cpu_planned, device.price_cpu_hour);
            }
        }
        let footprint_mb = {
            let running = self.running.lock().expect("running lock");
            let reporting = running.get(&app.name).into_iter().flatten();
            self.usage
                .footprint_of(&app.name, reporting.map(String::as_str))
        };
        Ok(AppInfo {
            name: app.name.clone(),
            owner: app.owner.clone(),
            version: app.version,
            sha256: app.sha256.clone(),
            size: app.size,
            tier: app.tier,
            replicas: app.replicas,
            limits: app.limits,
            assigned,
            running,
            problem: placement.and_then(|p| p.problem),
            updated_ms: app.updated_ms,
            betanet: self.public_names(app)?.names.clone(),
            events: events.events,
            move_abandoned: events.abandoned,
            onion: Some(self.public_names(app)?.onion.clone()),
            onion_router: self.onion_router(&app.name)?,
            autoscale: match self.store.get(Table::Scaling, &app.name)? {
                Some(bytes) => Some(decode(Table::Scaling, &app.name, &bytes)?),
                None => None,
            },
            max_price: terms.as_ref().and_then(|t| t.max_price),
            bid: terms.map(|t| t.bid).unwrap_or_default(),
            allow_outbound: settings.allow_outbound,
            durable: settings.durable,
            cpu_planned,
            price_per_hour,
            footprint_mb,
            // From the store: any control plane, leading or not, answers the same.
            moving: self
                .stored_handover(&app.name)?
                .map(|h| format!("{} -> {} ({:?})", h.from, h.to, h.phase).to_lowercase()),
        })
    }

    pub(crate) fn app_infos(&self) -> Result<Vec<AppInfo>, StoreError> {
        let apps: Vec<AppRecord> = self.plan_index()?.apps.values().cloned().collect();
        apps.iter().map(|a| self.app_info(a)).collect()
    }

    pub(crate) fn device_infos(&self) -> Result<Vec<DeviceInfo>, StoreError> {
        let by_device = self.plan_index()?.by_device.clone();
        let admitted = self.admitted_keys()?;
        let live = self.live.lock().expect("live lock");
        self.devices()?
            .into_iter()
            .map(|d| {
                let l = live.get(&d.id);
                let alive = l.is_some_and(|l| self.is_alive(l));
                let (trust, trust_reasons) = self.trust_of(&d.id)?;
                let canary_checks = self.evidence_of(&d.id)?.canary_checks();
                let latency = self.latency_of(&d.id).filter(|_| alive);
                let throughput = self.throughput_of(&d.id);
                Ok(DeviceInfo {
                    htx: l.and_then(|l| l.heartbeat.htx.clone()),
                    // The links of a dead device are not held any more.
                    attached: l
                        .filter(|_| alive)
                        .map(|l| l.heartbeat.attached.clone())
                        .unwrap_or_default(),
                    alive,
                    harvestable: l.is_some_and(|l| l.heartbeat.harvestable),
                    harvest: l.and_then(|l| l.heartbeat.harvest.clone()),
                    cpu_free: l.map_or(0.0, |l| l.heartbeat.cpu_free),
                    heartbeat_age_ms: l.map_or(u64::MAX, |l| l.at.elapsed().as_millis() as u64),
                    assigned: by_device
                        .get(&d.id)
                        .map(|apps| apps.iter().cloned().collect())
                        .unwrap_or_default(),
                    // The canary runs everywhere; its checks show in the trust reasons.
                    running: l
                        .map(|l| {
                            l.heartbeat
                                .running
                                .iter()
                                .filter(|r| r.app != fog_proto::canary::APP)
                                .map(|r| r.app.clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                    admitted: admitted.contains(&d.public_key),
                    id: d.id,
                    addr: Some(d.addr).filter(|a| !a.is_empty()),
                    region: d.region,
                    cpu: d.cpu,
                    price_cpu_hour: d.price_cpu_hour,
                    rtt_ms: latency.map(|l| l.rtt_ms),
                    rtt_age_ms: latency.map(|l| l.age.as_millis() as u64),
                    rtt_source: latency.map(|l| l.source),
                    trust,
                    trust_reasons,
                    canary_checks,
                    throughput_mbps: throughput.map(|t| t.mbps),
                    throughput_age_ms: throughput.map(|t| now_ms().saturating_sub(t.at_ms)),
                })
            })
            .collect()
    }

    /// Live replicas of every app: assigned, on a device with a fresh heartbeat that reports
    /// running the app.
    pub fn routes(&self) -> Result<Vec<Route>, StoreError> {
        // From the plan index, not the tables: a router long-polls this.
        let (apps, placements) = {
            let index = self.plan_index()?;
            let apps: Vec<AppRecord> = index.apps.values().cloned().collect();
            (apps, index.placements.clone())
        };
        // Only admitted devices: a replica is never routed to a pending one.
        let devices: HashMap<String, DeviceRecord> = self
            .admitted_devices()?
            .iter()
            .map(|d| (d.id.clone(), d.clone()))
            .collect();
        let running = self.running_on();
        let htx: HashMap<String, api::HtxEndpoint> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .filter_map(|(id, l)| l.heartbeat.htx.clone().map(|h| (id.clone(), h)))
            .collect();
        apps.into_iter()
            .map(|app| {
                let betanet = Some(self.public_names(&app)?.betanet_id.clone());
                let assigned = placements
                    .get(&app.name)
                    .map(|p| p.devices.clone())
                    .unwrap_or_default();
                let running = running.get(&app.name).cloned().unwrap_or_default();
                let replicas = assigned
                    .iter()
                    .filter(|d| running.contains(d))
                    .filter_map(|d| devices.get(d))
                    .map(|d| Replica {
                        device: d.id.clone(),
                        addr: Some(d.addr.clone()).filter(|a| !a.is_empty()),
                        htx: htx.get(&d.id).cloned(),
                    })
                    .collect();
                let mode = match app.tier {
                    Tier::S => RouteMode::ActiveActive,
                    Tier::A | Tier::B => RouteMode::ActivePassive,
                };
                Ok(Route {
                    app: app.name,
                    mode,
                    replicas,
                    betanet,
                })
            })
            .collect()
    }
}
