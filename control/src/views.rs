//! Views: what `fog ps`, `fog devices`, routers (routes) and Betanet visitors (names) read.

use std::collections::HashMap;

use fog_proto::api::{self, AppInfo, DeviceInfo, Replica, Route, RouteMode, Tier};

use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{AppRecord, AppTerms, DeviceRecord, PlacementRecord, StoreError, Table, decode};
use crate::{Control, names, now_ms};

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

    pub(crate) fn app_info(&self, app: &AppRecord) -> Result<AppInfo, StoreError> {
        let placement = match self.store.get(Table::Placements, &app.name)? {
            Some(bytes) => Some(decode::<PlacementRecord>(
                Table::Placements,
                &app.name,
                &bytes,
            )?),
            None => None,
        };
        let running = self.running_on().remove(&app.name).unwrap_or_default();
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
        // What it pays: each assigned device charges the planned demand at its own asked
        // price, as its signed ledger periods will.
        let devices = self.admitted_devices()?;
        let cpu_planned = self.planned_cpu(&devices, &self.live_heartbeats())(app);
        let price_per_hour = assigned
            .iter()
            .filter_map(|id| devices.iter().find(|d| &d.id == id))
            .map(|d| api::LedgerPeriod::credits_per_hour(cpu_planned, d.price_cpu_hour))
            .sum();
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
            footprint_mb: self.usage.footprint(&app.name),
            // From the store: any control plane, leading or not, answers the same.
            moving: self
                .stored_handover(&app.name)?
                .map(|h| format!("{} -> {} ({:?})", h.from, h.to, h.phase).to_lowercase()),
        })
    }

    pub(crate) fn app_infos(&self) -> Result<Vec<AppInfo>, StoreError> {
        self.apps()?.iter().map(|a| self.app_info(a)).collect()
    }

    pub(crate) fn device_infos(&self) -> Result<Vec<DeviceInfo>, StoreError> {
        let placements = self.placements()?;
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
                    assigned: placements
                        .iter()
                        .filter(|(_, p)| p.devices.contains(&d.id))
                        .map(|(a, _)| a.clone())
                        .collect(),
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
        let placements = self.placements()?;
        // Only admitted devices: a replica is never routed to a pending one.
        let devices: HashMap<String, DeviceRecord> = self
            .admitted_devices()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let running = self.running_on();
        let htx: HashMap<String, api::HtxEndpoint> = self
            .live
            .lock()
            .expect("live lock")
            .iter()
            .filter_map(|(id, l)| l.heartbeat.htx.clone().map(|h| (id.clone(), h)))
            .collect();
        self.apps()?
            .into_iter()
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
