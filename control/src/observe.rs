//! What the control plane measures of each device for placement: the smoothed round-trip time of
//! its attach links (from the HTX PINGs reported in its heartbeats) and the behaviour its trust
//! is earned with (see [`crate::trust`]).
//!
//! RTT: routers PING the hosts attached to them and report the RTTs (`POST /v1/attach/rtts`,
//! trusted routers only); hosts PING their routers too and report their own view in their
//! heartbeats, checked for plausibility (an impossible value refuses the whole heartbeat, see
//! [`fog_proto::api::AttachedLink::validate`]) and counted only for routers that registered an
//! attach endpoint. For each link the router's measurement wins when it has one: a device cannot
//! make itself look nearer than it is. Each link is smoothed as TCP does (`srtt ← 3/4 srtt +
//! 1/4 sample`); a device's latency is the mean over its links sampled in the last
//! [`RTT_FRESH`].
//!
//! Throughput: the control plane times the bytes it moves to and from a device itself (a
//! component a host downloads, a snapshot a host uploads), so a device cannot claim it; hosts
//! claim no bandwidth. Transfers under [`MIN_TIMED_BYTES`] are ignored (their time is
//! mostly round trips), the others are smoothed per device (`s ← 3/4 s + 1/4 sample`) with
//! the time of the newest sample, and shared with the other control planes in the
//! announcements ([`crate::planes`]), the newest measurement of a device winning.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fog_proto::api::{Heartbeat, RttSource};

use crate::store::{Store, StoreError, Table, encode};
use crate::trust::{Evidence, TrustConfig};

/// A link's RTT older than this is not used.
pub const RTT_FRESH: Duration = Duration::from_secs(30);

/// Weight of a new RTT sample in the smoothed value.
const RTT_GAIN: f64 = 0.25;

/// Smallest transfer whose duration is taken as a throughput sample, bytes: below it the time
/// is mostly round trips and request handling, not bandwidth.
pub const MIN_TIMED_BYTES: u64 = 64 << 10;

/// Weight of a new throughput sample in the smoothed value.
const THROUGHPUT_GAIN: f64 = 0.25;

/// What placement assumes of a device whose throughput was never measured, Mbit/s: a modest
/// home uplink, a prior rather than a measurement (`fog devices` shows "-" for it).
pub const THROUGHPUT_PRIOR_MBPS: f64 = 50.0;

/// The latency placement uses for each device from its measured RTT (ms), in order: rounded to
/// 1 ms so jitter between equally near devices does not steer placement; a device not measured
/// yet counts as the slowest measured one (unknown is never better than known), or 0 when
/// nothing is measured at all.
pub fn placement_latencies(measured: &[Option<f64>]) -> Vec<f64> {
    let rounded: Vec<Option<f64>> = measured.iter().map(|m| m.map(f64::round)).collect();
    let unmeasured = rounded.iter().flatten().copied().fold(0.0, f64::max);
    rounded.iter().map(|m| m.unwrap_or(unmeasured)).collect()
}

/// The throughput placement uses for a device, Mbit/s: its measured figure, or
/// [`THROUGHPUT_PRIOR_MBPS`] for a device never timed.
pub fn placement_bandwidth(measured: Option<&Throughput>) -> f64 {
    measured.map_or(THROUGHPUT_PRIOR_MBPS, |t| t.mbps)
}

/// The trust placement uses: in steps of 0.05, rounded down (so the 0.3 threshold is exact),
/// so tiny changes from one heartbeat to the next do not move replicas.
pub fn placement_trust(trust: f64) -> f64 {
    (trust * 20.0).floor() / 20.0
}

/// A device's smoothed throughput, as measured by a control plane.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Throughput {
    /// Smoothed throughput, Mbit/s.
    pub mbps: f64,
    /// When the newest sample was taken, Unix ms (shared between control planes).
    pub at_ms: u64,
    /// Samples smoothed into it.
    pub samples: u32,
}

impl Throughput {
    /// Smooth a transfer of `bytes` that took `elapsed` into `previous` at `now_ms`; `None`
    /// (nothing to smooth) for transfers under [`MIN_TIMED_BYTES`] or timed at zero.
    pub fn smooth(
        previous: Option<Throughput>,
        bytes: u64,
        elapsed: Duration,
        now_ms: u64,
    ) -> Option<Throughput> {
        let seconds = elapsed.as_secs_f64();
        if bytes < MIN_TIMED_BYTES || seconds <= 0.0 {
            return None;
        }
        let sample = bytes as f64 * 8.0 / 1e6 / seconds;
        Some(match previous {
            Some(p) => Throughput {
                mbps: p.mbps + THROUGHPUT_GAIN * (sample - p.mbps),
                at_ms: now_ms,
                samples: p.samples.saturating_add(1),
            },
            None => Throughput {
                mbps: sample,
                at_ms: now_ms,
                samples: 1,
            },
        })
    }
}

/// How often changed trust evidence is looked at for saving.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// Devices missing from memory past which [`Observations::preload`] lists the trust table
/// instead of reading each.
const PRELOAD_AT: usize = 64;

/// Uptime a device's saved evidence may lag behind before it is written again, s: a crash of
/// the control plane forgets at most this much of a device's good standing, and a large fleet
/// costs the store a few writes a second, not one per device per save.
const UPTIME_SAVE_LAG_S: f64 = 600.0;

/// One attach link's smoothed RTT.
#[derive(Debug, Clone, Copy)]
struct Smoothed {
    srtt_us: f64,
    at: Instant,
}

/// Add an RTT sample of `rtt_us` (0: not measured yet, skipped) for `router` to `links`, and
/// drop links not sampled for [`RTT_FRESH`].
fn smooth(links: &mut HashMap<String, Smoothed>, router: &str, rtt_us: u64) {
    let now = Instant::now();
    if rtt_us > 0 {
        let sample = rtt_us as f64;
        links
            .entry(router.to_string())
            .and_modify(|s| {
                s.srtt_us += RTT_GAIN * (sample - s.srtt_us);
                s.at = now;
            })
            .or_insert(Smoothed {
                srtt_us: sample,
                at: now,
            });
    }
    links.retain(|_, s| now.duration_since(s.at) <= RTT_FRESH);
}

/// A device's latency as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Mean smoothed RTT over its fresh links, ms.
    pub rtt_ms: f64,
    /// Time since the newest sample.
    pub age: Duration,
    /// Who measured it.
    pub source: RttSource,
}

/// Measurements and behaviour of every device.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    /// Device → router → smoothed RTT, as the device reports it.
    rtt: Mutex<HashMap<String, HashMap<String, Smoothed>>>,
    /// Device → router → smoothed RTT, as the router measured it.
    router_rtt: Mutex<HashMap<String, HashMap<String, Smoothed>>>,
    /// Device → smoothed throughput, measured here or by another control plane, and whether
    /// the figure is this control plane's own (announced) or taken from another's.
    throughput: Mutex<HashMap<String, (Throughput, bool)>>,
    /// Device → evidence, loaded from the store on first use.
    trust: Mutex<HashMap<String, Evidence>>,
    /// Devices whose evidence changed since it was last saved.
    dirty: Mutex<HashSet<String>>,
    /// Evidence as last written to the store, by device.
    written: Mutex<HashMap<String, Evidence>>,
    /// When evidence was last saved.
    saved: Mutex<Option<Instant>>,
}

impl Observations {
    /// Smooth the RTTs a heartbeat reports, for routers in `routers` (registered attach
    /// endpoints); 0 means "not measured yet" and is skipped.
    pub fn record_rtt(&self, device: &str, heartbeat: &Heartbeat, routers: &HashSet<String>) {
        let mut rtt = self.rtt.lock().expect("rtt lock");
        let links = rtt.entry(device.to_string()).or_default();
        for link in &heartbeat.attached {
            if routers.contains(&link.router) {
                smooth(links, &link.router, link.rtt_us);
            }
        }
    }

    /// Smooth the RTTs router `router` measured to the devices attached to it.
    pub fn record_router_rtts(&self, router: &str, links: &[fog_proto::api::DeviceRtt]) {
        let mut rtt = self.router_rtt.lock().expect("rtt lock");
        for link in links {
            smooth(
                rtt.entry(link.device.clone()).or_default(),
                router,
                link.rtt_us,
            );
        }
    }

    /// The device's measured latency, if any fresh link has been sampled.
    pub fn latency(&self, device: &str) -> Option<Latency> {
        let fresh = |links: Option<&HashMap<String, Smoothed>>| -> HashMap<String, Smoothed> {
            links
                .map(|links| {
                    links
                        .iter()
                        .filter(|(_, s)| s.at.elapsed() <= RTT_FRESH)
                        .map(|(r, s)| (r.clone(), *s))
                        .collect()
                })
                .unwrap_or_default()
        };
        let measured = fresh(self.router_rtt.lock().expect("rtt lock").get(device));
        let mut links = fresh(self.rtt.lock().expect("rtt lock").get(device));
        let claimed_only = links.keys().any(|r| !measured.contains_key(r));
        // The router's measurement of a link wins over the device's.
        links.extend(measured);
        if links.is_empty() {
            return None;
        }
        let mean = links.values().map(|s| s.srtt_us).sum::<f64>() / links.len() as f64;
        let age = links.values().map(|s| s.at.elapsed()).min()?;
        Some(Latency {
            rtt_ms: mean / 1000.0,
            age,
            source: if claimed_only {
                RttSource::Device
            } else {
                RttSource::Routers
            },
        })
    }

    /// Time a transfer of `bytes` to or from `device` that took `elapsed`.
    pub fn record_transfer(&self, device: &str, bytes: u64, elapsed: Duration) {
        let mut throughput = self.throughput.lock().expect("throughput lock");
        // Another control plane's figure is smoothed on here: it is the device's recent past.
        let previous = throughput.get(device).map(|(t, _)| *t);
        if let Some(next) = Throughput::smooth(previous, bytes, elapsed, crate::now_ms()) {
            tracing::debug!(device, bytes, ?elapsed, mbps = next.mbps, "transfer timed");
            throughput.insert(device.to_string(), (next, true));
        }
    }

    /// The device's smoothed throughput, if any transfer was timed.
    pub fn throughput(&self, device: &str) -> Option<Throughput> {
        self.throughput
            .lock()
            .expect("throughput lock")
            .get(device)
            .map(|(t, _)| *t)
    }

    /// The throughputs this control plane measured last (announced to the others).
    pub fn throughputs(&self) -> Vec<(String, Throughput)> {
        let throughput = self.throughput.lock().expect("throughput lock");
        throughput
            .iter()
            .filter(|(_, (_, ours))| *ours)
            .map(|(d, (t, _))| (d.clone(), *t))
            .collect()
    }

    /// Take throughputs another control plane measured, where newer than what is known here.
    pub fn merge_throughputs(&self, measured: Vec<(String, Throughput)>) {
        let mut throughput = self.throughput.lock().expect("throughput lock");
        for (device, theirs) in measured {
            if !theirs.mbps.is_finite() || theirs.mbps <= 0.0 {
                continue;
            }
            match throughput.get(&device) {
                Some((known, _)) if known.at_ms >= theirs.at_ms => {}
                _ => {
                    throughput.insert(device, (theirs, false));
                }
            }
        }
    }

    /// The trust table locked, with `device`'s evidence in memory: read from the store once
    /// (so a reconcile over a large fleet reads the store only for devices it has not seen
    /// yet), without holding the lock meanwhile. Holding it across the read made every
    /// device's first evidence an etcd round trip under one lock: at 5,000 new devices their
    /// heartbeats queued on it for seconds, and the reconcile (which reads every device's trust)
    /// behind them, past the leader's lease.
    fn cached(
        &self,
        store: &dyn Store,
        device: &str,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, Evidence>>, StoreError> {
        if !self.trust.lock().expect("trust lock").contains_key(device) {
            let loaded = match store.get(Table::Trust, device)? {
                Some(bytes) => crate::trust::decode_evidence(device, &bytes)?,
                None => Evidence::default(),
            };
            let mut trust = self.trust.lock().expect("trust lock");
            // Another reader may have loaded it (and a heartbeat changed it) meanwhile.
            trust.entry(device.to_string()).or_insert(loaded);
            return Ok(trust);
        }
        Ok(self.trust.lock().expect("trust lock"))
    }

    /// Read the saved evidence of the `devices` not in memory yet in one listing of the table,
    /// when there are many (a reconcile after thousands of devices registered): one read each,
    /// a round trip each on etcd, outlasted the leader's lease at 5,000 devices.
    pub fn preload<'a>(
        &self,
        store: &dyn Store,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let missing: HashSet<&str> = {
            let trust = self.trust.lock().expect("trust lock");
            devices
                .into_iter()
                .filter(|d| !trust.contains_key(*d))
                .collect()
        };
        if missing.len() < PRELOAD_AT {
            return Ok(());
        }
        let saved = store.list(Table::Trust)?;
        let mut trust = self.trust.lock().expect("trust lock");
        for (device, bytes) in saved {
            if missing.contains(device.as_str()) && !trust.contains_key(&device) {
                let evidence = crate::trust::decode_evidence(&device, &bytes)?;
                trust.insert(device, evidence);
            }
        }
        // None saved: what a read of each would have found.
        for device in missing {
            trust.entry(device.to_string()).or_default();
        }
        Ok(())
    }

    /// Change `device`'s evidence with `change`.
    pub fn update_evidence(
        &self,
        store: &dyn Store,
        device: &str,
        change: impl FnOnce(&mut Evidence),
    ) -> Result<(), StoreError> {
        let mut trust = self.cached(store, device)?;
        change(trust.entry(device.to_string()).or_default());
        drop(trust);
        self.dirty
            .lock()
            .expect("dirty lock")
            .insert(device.to_string());
        Ok(())
    }

    /// `device`'s evidence, decayed to `now_ms`.
    pub fn evidence(
        &self,
        store: &dyn Store,
        device: &str,
        now_ms: u64,
        config: &TrustConfig,
    ) -> Result<Evidence, StoreError> {
        let mut evidence = {
            let trust = self.cached(store, device)?;
            trust.get(device).cloned().unwrap_or_default()
        };
        evidence.decay(now_ms, config);
        Ok(evidence)
    }

    /// Replace the cached evidence of every device `heard_elsewhere` says another control
    /// plane hears from (and whose evidence this one has not changed since saving) with what
    /// the store holds: that control plane observes it and saves its evidence.
    pub fn reload_evidence(
        &self,
        store: &dyn Store,
        heard_elsewhere: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        let saved = store.list(Table::Trust)?;
        let dirty = self.dirty.lock().expect("dirty lock").clone();
        let mut trust = self.trust.lock().expect("trust lock");
        for (device, bytes) in saved {
            if heard_elsewhere(&device) && !dirty.contains(&device) {
                let evidence = crate::trust::decode_evidence(&device, &bytes)?;
                self.written
                    .lock()
                    .expect("written lock")
                    .insert(device.clone(), evidence.clone());
                trust.insert(device, evidence);
            }
        }
        Ok(())
    }

    /// Write changed evidence to the store, looking at most every [`SAVE_EVERY`] unless `now`:
    /// a device's record is written when its trust moved by a placement step (0.05), a count
    /// changed (heartbeats missed, periods refused), or its uptime grew by
    /// [`UPTIME_SAVE_LAG_S`]; the others stay pending.
    pub fn save(
        &self,
        store: &dyn Store,
        now: bool,
        config: &TrustConfig,
    ) -> Result<(), StoreError> {
        {
            let mut saved = self.saved.lock().expect("saved lock");
            if !now && saved.is_some_and(|at| at.elapsed() < SAVE_EVERY) {
                return Ok(());
            }
            *saved = Some(Instant::now());
        }
        let dirty: Vec<String> = self.dirty.lock().expect("dirty lock").drain().collect();
        let mut pending = Vec::new();
        let trust = self.trust.lock().expect("trust lock").clone();
        let mut written = self.written.lock().expect("written lock");
        let step = |e: &Evidence| (e.trust(config) * 20.0).floor();
        let mut due = Vec::new();
        for device in dirty {
            let Some(evidence) = trust.get(&device) else {
                continue;
            };
            let is_due = written.get(&device).is_none_or(|last| {
                step(last) != step(evidence)
                    || last.missed_heartbeats != evidence.missed_heartbeats
                    || last.refused_periods != evidence.refused_periods
                    || last.canary_checks() != evidence.canary_checks()
                    || evidence.uptime_s - last.uptime_s >= UPTIME_SAVE_LAG_S
            });
            if is_due {
                due.push((device, encode(evidence)));
            } else {
                pending.push(device);
            }
        }
        // In a few requests: a new fleet's devices are all due at once.
        if let Err(err) = store.put_many(Table::Trust, &due) {
            pending.extend(due.into_iter().map(|(device, _)| device));
            self.dirty.lock().expect("dirty lock").extend(pending);
            return Err(err);
        }
        for (device, _) in due {
            if let Some(evidence) = trust.get(&device) {
                written.insert(device, evidence.clone());
            }
        }
        self.dirty.lock().expect("dirty lock").extend(pending);
        Ok(())
    }
}

impl crate::Control {
    /// Take what a heartbeat shows of the device: its links' RTTs, and uptime or missed
    /// heartbeats since `previous` (when the last heartbeat came and whether it announced the
    /// device harvestable).
    pub(crate) fn observe(
        &self,
        device: &str,
        previous: Option<(Instant, bool, Duration)>,
        heartbeat: &Heartbeat,
    ) -> Result<(), StoreError> {
        let routers: HashSet<String> = self
            .registrations
            .attach_points()
            .into_iter()
            .map(|p| p.router)
            .collect();
        self.observed.record_rtt(device, heartbeat, &routers);
        let Some((at, was_harvestable, interval)) = previous else {
            return Ok(());
        };
        // Judged by the interval the device was told with its previous heartbeat's reply.
        let interval = interval.as_secs_f64();
        let window = interval * f64::from(self.config.missed_heartbeats);
        // Silence while this control plane could not see (its store unavailable) is not
        // counted against the device.
        let gap = self.planes.silence(at).as_secs_f64();
        let config = self.config.trust;
        self.observed
            .update_evidence(self.store.as_ref(), device, |e| {
                e.heard(
                    crate::now_ms(),
                    gap,
                    was_harvestable,
                    interval,
                    window,
                    &config,
                )
            })
    }

    /// A device's trust now, and its reasons.
    pub(crate) fn trust_of(&self, device: &str) -> Result<(f64, Vec<String>), StoreError> {
        let evidence = self.observed.evidence(
            self.store.as_ref(),
            device,
            crate::now_ms(),
            &self.config.trust,
        )?;
        Ok((
            evidence.trust(&self.config.trust),
            evidence.reasons(&self.config.trust),
        ))
    }

    /// A device's trust evidence now.
    pub(crate) fn evidence_of(&self, device: &str) -> Result<Evidence, StoreError> {
        self.observed.evidence(
            self.store.as_ref(),
            device,
            crate::now_ms(),
            &self.config.trust,
        )
    }

    /// A device's measured latency, if any.
    pub(crate) fn latency_of(&self, device: &str) -> Option<Latency> {
        self.observed.latency(device)
    }

    /// A device's measured throughput, if any transfer was timed.
    pub(crate) fn throughput_of(&self, device: &str) -> Option<Throughput> {
        self.observed.throughput(device)
    }

    /// Time a transfer of `bytes` to or from `device` that took `elapsed`.
    pub(crate) fn record_transfer(&self, device: &str, bytes: u64, elapsed: Duration) {
        self.observed.record_transfer(device, bytes, elapsed);
    }

    /// Save changed trust evidence (rate-limited unless `now`).
    pub(crate) fn save_evidence(&self, now: bool) -> Result<(), StoreError> {
        self.observed
            .save(self.store.as_ref(), now, &self.config.trust)
    }
}

impl crate::Control {
    /// `POST /v1/attach/rtts`: a trusted router reports the RTTs it measured to the hosts
    /// attached to it.
    pub(crate) async fn router_rtts<B>(&self, request: http::Request<B>) -> crate::api::Answer
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use crate::ApiError;
        use fog_proto::api;
        let (signer, body, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        self.trusted_router(&signer, "to report RTTs")?;
        let report: api::RouterRtts = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed RTT report: {e}")))?;
        if report.links.len() > api::MAX_ROUTER_RTTS {
            return Err(ApiError::TooLarge(format!(
                "{} links in one RTT report (at most {})",
                report.links.len(),
                api::MAX_ROUTER_RTTS
            )));
        }
        if let Some(link) = report.links.iter().find(|l| l.rtt_us > api::MAX_RTT_US) {
            return Err(ApiError::BadRequest(format!(
                "device {}: an RTT of {} µs is impossible (at most {})",
                link.device,
                link.rtt_us,
                api::MAX_RTT_US
            )));
        }
        let router = fog_proto::auth::device_id(&signer);
        self.observed.record_router_rtts(&router, &report.links);
        Ok(crate::api::json(
            200,
            &serde_json::json!({ "links": report.links.len() }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_smoothed_and_tiny_transfers_are_ignored() {
        // 1 MiB in 100 ms: 83.88608 Mbit/s.
        let first = Throughput::smooth(None, 1 << 20, Duration::from_millis(100), 1_000).unwrap();
        assert!((first.mbps - 83.886_08).abs() < 1e-9, "{first:?}");
        assert_eq!((first.at_ms, first.samples), (1_000, 1));
        // A transfer under 64 KiB, or timed at zero, changes nothing.
        assert_eq!(
            Throughput::smooth(Some(first), (64 << 10) - 1, Duration::from_millis(1), 2_000),
            None
        );
        assert_eq!(
            Throughput::smooth(Some(first), 1 << 20, Duration::ZERO, 2_000),
            None
        );
        // A sample four times slower moves the figure a quarter of the way towards it.
        let second =
            Throughput::smooth(Some(first), 1 << 20, Duration::from_millis(400), 3_000).unwrap();
        let slow = 83.886_08 / 4.0;
        assert!((second.mbps - (first.mbps + 0.25 * (slow - first.mbps))).abs() < 1e-9);
        assert_eq!((second.at_ms, second.samples), (3_000, 2));
    }

    #[test]
    fn the_newest_throughput_wins_when_control_planes_share_them() {
        let observed = Observations::default();
        observed.record_transfer("d", 1 << 20, Duration::from_millis(100));
        let ours = observed.throughput("d").unwrap();
        let older = Throughput {
            mbps: 1.0,
            at_ms: ours.at_ms - 1,
            samples: 1,
        };
        let newer = Throughput {
            mbps: 2.0,
            at_ms: ours.at_ms + 1,
            samples: 1,
        };
        observed.merge_throughputs(vec![("d".into(), older)]);
        assert_eq!(observed.throughput("d"), Some(ours));
        assert_eq!(observed.throughputs(), vec![("d".to_string(), ours)]);
        observed.merge_throughputs(vec![("d".into(), newer), ("e".into(), older)]);
        assert_eq!(observed.throughput("d"), Some(newer));
        assert_eq!(observed.throughput("e"), Some(older));
        // Only figures measured here are announced again.
        assert!(observed.throughputs().is_empty());
    }
}
