//! Control planes knowing each other: each announces itself in the store about twice a second
//! ([`Store::announce`]; on etcd under a short lease, so a dead one disappears) with its
//! advertised URL, and puts the last heartbeat of each device it heard since its previous round
//! (one record per device, so a round writes what the fleet's capped heartbeat rate brings, not
//! the whole fleet); it reads the others' announcements, and only the devices' records that
//! changed ([`Store::heard`]: on etcd, from its watch).
//!
//! Two things follow. Liveness is shared: a device heartbeats to one control plane, and every
//! other control plane (the leader that places replicas, a follower answering routes) learns it
//! is alive from that control plane's announcement; so are the routers' fronts and attach
//! endpoints and the relays registered with it, and the devices' throughputs it timed. And components and site bundles, which stay
//! off etcd on each control plane's disk, are copied between control planes by hash: a publish
//! is acknowledged only once a second control plane (when there is one) pulled the blob from
//! the one that received it, and a control plane asked for a blob it lacks pulls it from a peer
//! first. Only announced control planes are pulled from, named by id, never by a URL given in a
//! request; every pulled blob is checked against its sha256.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fog_proto::api::Heartbeat;
use fog_proto::auth;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::{StoreError, Table};
use crate::{Control, Live, now_ms};

/// How often a control plane announces itself and reads the others.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// How long this control plane may go without a clear view of the fleet (its own presence
/// exchange done, and every announced control plane's announcement that recent) before it stops
/// counting devices' silence: while its store is unavailable (an etcd member died and the rest
/// elect a leader, a slow disk) heartbeats cannot land or be shared, and that is no device's
/// fault. (The same as a plane's announcement lease: a dead control plane's record is gone by
/// then.)
pub const BLIND_AFTER: Duration = Duration::from_secs(3);

/// How much of the time since this control plane's last clear presence round counts as
/// devices' silence: rounds come every [`ANNOUNCE_EVERY`], so a view older than this is out of
/// date rather than evidence that devices went quiet.
pub const SIGHT_GRACE: Duration = Duration::from_secs(1);

/// Largest blob pulled from a peer: a component or a site bundle.
const MAX_BLOB_BYTES: usize = {
    let (c, b) = (
        fog_proto::api::MAX_COMPONENT_BYTES as usize,
        fog_proto::bundle::MAX_BUNDLE_BYTES as usize
            + fog_proto::bundle::MAX_MANIFEST_BYTES as usize
            + fog_proto::bundle::HEADER_BYTES,
    );
    if c > b { c } else { b }
};

/// What one control plane tells the others (JSON: heartbeats are API types). Small whatever
/// the fleet's size: the devices it hears are records of their own ([`HeardDevice`]).
#[derive(Debug, Serialize, Deserialize)]
struct PlaneRecord {
    /// When it was written (Unix ms; 0 from a control plane that does not say).
    #[serde(default)]
    at_ms: u64,
    /// Where the others reach its API, if it advertises one.
    url: Option<String>,
    /// The fronts, relays and attach endpoints registered with it.
    #[serde(default)]
    registrations: crate::names::SharedRegistrations,
    /// Apps whose primary it (as leader) is fencing for a handover: (app, device).
    #[serde(default)]
    fencing: Vec<(String, String)>,
    /// New primaries it (as leader) has restore a snapshot first: (app, device).
    #[serde(default)]
    restores: Vec<(String, String)>,
}

/// What the leader decided that devices must hear whichever control plane they talk to.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaderSays {
    /// App → the primary device that must fence itself.
    pub(crate) fencing: HashMap<String, String>,
    /// App → the new primary that must restore the snapshot first.
    pub(crate) restores: HashMap<String, String>,
}

/// A device a control plane received a heartbeat from itself, as it tells the others (keyed
/// by the device's id).
#[derive(Debug, Serialize, Deserialize)]
struct HeardDevice {
    /// When (Unix ms).
    seen_ms: u64,
    heartbeat: Heartbeat,
    /// The device's throughput, if this control plane measured it (the newest figure wins).
    #[serde(default)]
    throughput: Option<crate::observe::Throughput>,
}

/// Another control plane that announced a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) id: String,
    pub(crate) url: String,
}

/// Why a peer could not give or take a blob.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// The request failed on the way.
    #[error("control plane {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The peer answered with an error status.
    #[error("control plane {url} answered {status}: {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    /// The bytes it sent are not the blob asked for.
    #[error("control plane {url} sent bytes with sha256 {actual}, not {expected}")]
    Hash {
        url: String,
        expected: String,
        actual: String,
    },
}

/// The HTTP client control planes use with each other, and who the others are.
pub(crate) struct Planes {
    client: Client<HttpConnector, Full<Bytes>>,
    /// Live peers, from the latest announcements read.
    peers: std::sync::Mutex<Vec<Peer>>,
    /// The trust table's generation when its evidence was last reloaded.
    trust_generation: std::sync::Mutex<Option<u64>>,
    /// Fences and restores other control planes (the leader) announced.
    pub(crate) leader_says: std::sync::Mutex<LeaderSays>,
    /// How well this control plane has seen the fleet (`None` until presence first ran).
    sight: std::sync::Mutex<Option<Sight>>,
    /// When the last presence round that announced the devices heard began: the next
    /// announces those heard since (`None`: every device, as after a lapsed lease).
    announced_up_to: std::sync::Mutex<Option<Instant>>,
}

/// When this control plane's view of which devices heartbeat was last clear, and since when it
/// has been clear without a break.
#[derive(Debug, Clone, Copy)]
struct Sight {
    last_clear: Instant,
    clear_since: Instant,
    blind: bool,
}

impl Sight {
    /// [`Planes::silence`] at `now`.
    fn silence(&self, at: Instant, now: Instant) -> Duration {
        let from = at.max(self.clear_since);
        // What the last clear round showed, and at most one round's worth of time since: a
        // round that hangs (a store request waits out its timeout) is not yet known to fail.
        let since_clear = if self.blind {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.last_clear)
                .min(SIGHT_GRACE)
        };
        (self.last_clear.saturating_duration_since(from) + since_clear)
            .min(now.saturating_duration_since(from))
    }
}

impl Default for Planes {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Planes {
            client: Client::builder(TokioExecutor::new()).build(connector),
            peers: std::sync::Mutex::new(Vec::new()),
            trust_generation: std::sync::Mutex::new(None),
            leader_says: std::sync::Mutex::new(LeaderSays::default()),
            sight: std::sync::Mutex::new(None),
            announced_up_to: std::sync::Mutex::new(None),
        }
    }
}

impl Planes {
    /// Record a presence round: `clear` if it completed and every announcement read was fresh.
    fn saw(&self, clear: bool) {
        let now = Instant::now();
        let mut sight = self.sight.lock().expect("sight lock");
        match sight.as_mut() {
            None => {
                *sight = Some(Sight {
                    last_clear: now,
                    clear_since: now,
                    blind: !clear,
                })
            }
            Some(s) if clear => {
                if s.blind || s.last_clear.elapsed() > BLIND_AFTER {
                    tracing::info!(
                        blind_s = s.last_clear.elapsed().as_secs_f64(),
                        "the fleet is in sight again: devices' silence counts from now"
                    );
                    s.clear_since = now;
                }
                s.last_clear = now;
                s.blind = false;
            }
            Some(s) => {
                if !s.blind {
                    tracing::warn!(
                        "the fleet is out of sight (the store failed, or another control plane's \
                         announcement is stale): no device is judged by its silence meanwhile"
                    );
                }
                s.blind = true;
            }
        }
    }

    /// How long a device last heard from at `at` has been silent while this control plane could
    /// have heard it: time spent blind (see [`BLIND_AFTER`]) does not count, so a control plane
    /// whose store failed never takes that for devices dying. Before presence first ran (a
    /// control plane driven by hand, in tests), simply the time since `at`.
    pub(crate) fn silence(&self, at: Instant) -> Duration {
        let sight = *self.sight.lock().expect("sight lock");
        match sight {
            Some(sight) => sight.silence(at, Instant::now()),
            None => at.elapsed(),
        }
    }

    pub(crate) fn peers(&self) -> Vec<Peer> {
        self.peers.lock().expect("peers lock").clone()
    }

    /// Send `request` within `timeout`: the status and body.
    async fn send(
        &self,
        url: &str,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let body = tokio::time::timeout(
            timeout,
            Limited::new(response.into_body(), MAX_BLOB_BYTES).collect(),
        )
        .await
        .map_err(|_| unreachable(format!("body not read within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
        if status >= 400 {
            return Err(PeerError::Refused {
                url: url.to_string(),
                status,
                reason: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok((status, body))
    }

    /// Blob `sha256` from the control plane at `url` (its own copy only), checked.
    async fn fetch(&self, url: &str, sha256: &str) -> Result<Bytes, PeerError> {
        let request = http::Request::get(format!("{url}/v1/blobs/{sha256}?local=1"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| PeerError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let (_, body) = self.send(url, request, Duration::from_secs(60)).await?;
        let actual = auth::sha256_hex(&body);
        if actual != sha256 {
            return Err(PeerError::Hash {
                url: url.to_string(),
                expected: sha256.to_string(),
                actual,
            });
        }
        Ok(body)
    }

    /// Ask the control plane at `url` to pull blob `sha256` from control plane `from`.
    async fn ask_pull(&self, url: &str, sha256: &str, from: &str) -> Result<(), PeerError> {
        let request = http::Request::post(format!("{url}/v1/blobs/{sha256}/pull?from={from}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| PeerError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        self.send(url, request, Duration::from_secs(90)).await?;
        Ok(())
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Control {
    /// Announce this control plane and read the others every [`ANNOUNCE_EVERY`] until
    /// `shutdown` resolves.
    pub async fn run_presence(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failing = false;
        loop {
            let control = self.clone();
            let outcome = tokio::task::spawn_blocking(move || control.exchange_presence()).await;
            self.planes.saw(matches!(outcome, Ok(Ok(true))));
            match outcome {
                Ok(Ok(_)) => failing = false,
                Ok(Err(err)) if !failing => {
                    tracing::warn!("cannot announce this control plane: {err}");
                    failing = true;
                }
                Ok(Err(_)) => {}
                Err(err) => tracing::error!("announcing panicked: {err}"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
        }
    }

    /// One round: write our announcement and the devices heard since the last round, read
    /// everyone's announcement and the devices others heard since. True if every announcement
    /// read was fresh (see [`BLIND_AFTER`]).
    fn exchange_presence(&self) -> Result<bool, StoreError> {
        let round = Instant::now();
        let since = *self.planes.announced_up_to.lock().expect("announced lock");
        let heard: Vec<(String, u64, Heartbeat)> = if !self.store.shared() {
            // No other control plane to tell.
            Vec::new()
        } else {
            let live = self.live.lock().expect("live lock");
            let now = now_ms();
            live.iter()
                .filter(|(_, l)| l.local && since.is_none_or(|s| l.at > s) && self.is_alive(l))
                .map(|(id, l)| {
                    let seen_ms = now.saturating_sub(l.at.elapsed().as_millis() as u64);
                    (id.clone(), seen_ms, l.heartbeat.clone())
                })
                .collect()
        };
        let heard: Vec<(String, Vec<u8>)> = {
            let throughputs: HashMap<String, crate::observe::Throughput> =
                self.observed.throughputs().into_iter().collect();
            heard
                .into_iter()
                .map(|(id, seen_ms, heartbeat)| {
                    let record = HeardDevice {
                        seen_ms,
                        heartbeat,
                        throughput: throughputs.get(&id).copied(),
                    };
                    let bytes = serde_json::to_vec(&record).expect("heartbeats always serialise");
                    (id, bytes)
                })
                .collect()
        };
        let fencing = self
            .handovers
            .lock()
            .expect("handovers lock")
            .iter()
            .filter(|(_, h)| h.phase == crate::replicas::Phase::Fencing)
            .map(|(app, h)| (app.clone(), h.from.clone()))
            .collect();
        let restores = self
            .restores
            .lock()
            .expect("restores lock")
            .iter()
            .map(|(app, device)| (app.clone(), device.clone()))
            .collect();
        let record = PlaneRecord {
            at_ms: now_ms(),
            url: self.config.advertise.clone(),
            registrations: self.registrations.export(now_ms()),
            fencing,
            restores,
        };
        let bytes = serde_json::to_vec(&record).expect("announcements always serialise");
        let kept = self.store.announce(&self.id, &bytes, &heard)?;
        // A lapsed lease took the devices announced before with it: name them all next round.
        *self.planes.announced_up_to.lock().expect("announced lock") = kept.then_some(round);
        let mut peers = Vec::new();
        let mut seen: HashMap<String, (u64, Heartbeat)> = HashMap::new();
        let mut attach_changed = false;
        let mut says = LeaderSays::default();
        let mut fresh = true;
        for (id, bytes) in self.store.planes()? {
            if id == self.id {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<PlaneRecord>(&bytes) else {
                tracing::warn!(plane = id, "unreadable announcement");
                continue;
            };
            // A control plane that could not announce for a while may still hear devices the
            // others cannot see: their silence here says nothing yet.
            if record.at_ms != 0
                && now_ms().saturating_sub(record.at_ms) > BLIND_AFTER.as_millis() as u64
            {
                fresh = false;
            }
            if let Some(url) = record.url {
                peers.push(Peer { id, url });
            }
            attach_changed |= self.registrations.import(record.registrations, now_ms());
            says.fencing.extend(record.fencing);
            says.restores.extend(record.restores);
        }
        let mut throughputs = Vec::new();
        for (id, bytes) in self.store.heard()? {
            let Ok(device) = serde_json::from_slice::<HeardDevice>(&bytes) else {
                tracing::warn!(device = id, "unreadable record of a device heard");
                continue;
            };
            if let Some(throughput) = device.throughput {
                throughputs.push((id.clone(), throughput));
            }
            match seen.get(&id) {
                Some((at, _)) if *at >= device.seen_ms => {}
                _ => {
                    seen.insert(id, (device.seen_ms, device.heartbeat));
                }
            }
        }
        self.observed.merge_throughputs(throughputs);
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        let says_changed = {
            let mut held = self.planes.leader_says.lock().expect("leader says lock");
            let changed = *held != says;
            *held = says;
            changed
        };
        *self.planes.peers.lock().expect("peers lock") = peers;
        // A device another control plane heard from more recently than we did: take its
        // heartbeat (clocks of control planes are assumed in step to well under a heartbeat
        // interval).
        let now = now_ms();
        let mut revived = false;
        let mut updated = false;
        {
            let mut live = self.live.lock().expect("live lock");
            for (id, (seen_ms, heartbeat)) in seen {
                let age = Duration::from_millis(now.saturating_sub(seen_ms));
                let Some(at) = Instant::now().checked_sub(age) else {
                    continue;
                };
                match live.get(&id) {
                    Some(l) if l.at >= at => {}
                    previous => {
                        let was_alive = previous.is_some_and(|l| self.is_alive(l));
                        // A record outlives the device's silence (it goes only with the control
                        // plane that wrote it): one of a device long gone tells nothing new.
                        if previous.is_none()
                            && self.planes.silence(at)
                                > self.heartbeat_interval() * self.config.missed_heartbeats
                        {
                            continue;
                        }
                        // What its apps use (fuel counters, memory peaks) counts wherever the
                        // device heartbeats: the leader plans with it.
                        self.usage.record(&id, &heartbeat.running, at);
                        let entry = Live {
                            at,
                            interval: self.heartbeat_interval(),
                            heartbeat,
                            local: false,
                        };
                        revived |= !was_alive && self.is_alive(&entry);
                        updated = true;
                        self.put_live(&mut live, id, entry);
                    }
                }
            }
            self.fleet
                .store(live.len(), std::sync::atomic::Ordering::Relaxed);
        }
        // Trust is earned where a device heartbeats: every control plane saves what it
        // observed, and takes the saved evidence of the devices others hear from whenever
        // that table changed.
        self.save_evidence(false)?;
        let trust_now = self.store.generation(Table::Trust);
        let mut trust_seen = self.planes.trust_generation.lock().expect("trust lock");
        if trust_now.is_none() || *trust_seen != trust_now {
            let elsewhere: std::collections::HashSet<String> = {
                let live = self.live.lock().expect("live lock");
                live.iter()
                    .filter(|(_, l)| !l.local)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            // Alone, or every device heartbeating here: nothing another saved is ours to take
            // (and the table is not listed each time our own saves change it).
            if !elsewhere.is_empty() {
                self.observed
                    .reload_evidence(self.store.as_ref(), |d| elsewhere.contains(d))?;
            }
            *trust_seen = trust_now;
        }
        drop(trust_seen);
        if revived || attach_changed || says_changed {
            self.bump();
            self.changed.notify_one();
        } else if updated && !self.handovers.lock().expect("handovers lock").is_empty() {
            // A handover advances on what devices report, wherever they heartbeat: the leader
            // looks at once rather than at its next tick (writes are paused while it fences).
            self.changed.notify_one();
        }
        Ok(fresh)
    }

    /// Blob `sha256` from this control plane's disk, or else pulled from a peer (checked,
    /// then kept): `None` if no control plane has it.
    pub(crate) async fn blob(&self, sha256: &str) -> Result<Option<Bytes>, ApiError> {
        // The canary is built into every control plane, never stored.
        if let Some(canary) = self.canary.blob(sha256) {
            return Ok(Some(canary));
        }
        if let Some(bytes) = self.store.get(Table::Blobs, sha256)? {
            return Ok(Some(Bytes::from(bytes)));
        }
        if !is_sha256(sha256) {
            return Ok(None);
        }
        for peer in self.planes.peers() {
            match self.planes.fetch(&peer.url, sha256).await {
                Ok(bytes) => {
                    self.store.put(Table::Blobs, sha256, &bytes)?;
                    tracing::info!(
                        sha256,
                        from = peer.url,
                        "pulled a blob this control plane lacked"
                    );
                    return Ok(Some(bytes));
                }
                Err(PeerError::Refused { status: 404, .. }) => {}
                Err(err) => tracing::warn!(sha256, "cannot pull the blob: {err}"),
            }
        }
        Ok(None)
    }

    /// `POST /v1/blobs/<sha256>/pull?from=<id>`: copy the blob from the announced control plane
    /// `from` (never from a URL the request names), checked against its hash.
    pub(crate) async fn pull_blob(&self, sha256: &str, from: &str) -> Result<(), ApiError> {
        if !is_sha256(sha256) {
            return Err(ApiError::BadRequest(format!("{sha256:?} is not a sha256")));
        }
        if self.store.get(Table::Blobs, sha256)?.is_some() {
            return Ok(());
        }
        let Some(peer) = self.planes.peers().into_iter().find(|p| p.id == from) else {
            return Err(ApiError::Unavailable(format!(
                "no live control plane {from:?} to pull from"
            )));
        };
        let bytes = self
            .planes
            .fetch(&peer.url, sha256)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        self.store.put(Table::Blobs, sha256, &bytes)?;
        self.store.flush()?;
        Ok(())
    }

    /// Have blob `sha256` (stored here) copied to one other control plane, when there are
    /// others: the publish that stored it is acknowledged only after. 503 if every peer
    /// failed.
    pub(crate) async fn replicate_blob(&self, sha256: &str) -> Result<(), ApiError> {
        let peers = self.planes.peers();
        if peers.is_empty() {
            return Ok(());
        }
        let mut failures = Vec::new();
        for peer in peers {
            match self.planes.ask_pull(&peer.url, sha256, &self.id).await {
                Ok(()) => {
                    tracing::debug!(sha256, to = peer.url, "blob copied");
                    return Ok(());
                }
                Err(err) => failures.push(err.to_string()),
            }
        }
        Err(ApiError::Unavailable(format!(
            "blob {sha256} is stored on this control plane only; no other could take a copy: {}",
            failures.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_while_the_fleet_is_out_of_sight_does_not_count() {
        let now = Instant::now() + Duration::from_secs(100);
        let s = |secs: u64| now - Duration::from_secs(secs);
        let heard = s(20);
        // In sight all along: 20 s of silence.
        let clear = Sight {
            last_clear: s(0),
            clear_since: s(60),
            blind: false,
        };
        assert_eq!(clear.silence(heard, now), Duration::from_secs(20));
        // The store failed 18 s ago: only the 2 s seen count, however long it stays out.
        let blind = Sight {
            last_clear: s(18),
            clear_since: s(60),
            blind: true,
        };
        assert_eq!(blind.silence(heard, now), Duration::from_secs(2));
        // A round hanging, not known to fail yet: one grace more, however long it hangs.
        let stalled = Sight {
            blind: false,
            ..blind
        };
        assert_eq!(
            stalled.silence(heard, now),
            Duration::from_secs(2) + SIGHT_GRACE
        );
        // Back in sight 1 s ago: silence counts from then.
        let back = Sight {
            last_clear: s(0),
            clear_since: s(1),
            blind: false,
        };
        assert_eq!(back.silence(heard, now), Duration::from_secs(1));
    }
}
