//! Spot checks: the control plane places its canary component (`guest-examples/canary`) on
//! every device beside the apps it runs, and routers carry known-answer requests to it.
//!
//! The control plane opens no connection, so checks are pulled: a trusted router asks for the
//! checks due (`POST /v1/canary/challenges`, signed), sends each to the one device it names,
//! reached as the router reaches any replica, and reports what came back (`POST
//! /v1/canary/answers`). Each check is a fresh random nonce and round count, so an answer cannot
//! be replayed from an earlier check; the control plane computes the right answer itself
//! ([`fog_proto::canary::expected`]). A wrong answer costs the device a day of good standing at
//! once (see [`crate::trust`]), which drops it below every tier's minimum trust, so the next
//! reconcile moves its replicas away; an unanswered check costs a minute.
//!
//! A device is checked every `interval` from one interval after it first reports its canary
//! running (so a device starting up is not checked before it could answer). Only the leader
//! issues checks; a check no router reports within [`ANSWER_WITHIN`] is forgotten unjudged (the
//! router, not the device, may have failed) and the device is checked again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fog_proto::canary::{self, Answers, Challenge, Challenges, Verdict};
use fog_proto::{Manifest, api};

use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{DeviceRecord, Table, decode};
use crate::{Control, now_ms};

/// How long a router may take to report a check it took.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// The default time between two checks of one device.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// The canary component and how often each device is checked.
#[derive(Debug, Clone)]
pub struct CanaryConfig {
    /// The canary component (`fog` embeds it).
    pub component: Bytes,
    /// Time between two checks of one device.
    pub interval: Duration,
}

/// A check handed to a router and not judged yet.
#[derive(Debug)]
struct Outstanding {
    device: String,
    nonce: [u8; 16],
    rounds: u32,
    /// The router that took it: only it may answer.
    router: String,
    handed: Instant,
}

/// The canary and the checks in flight.
#[derive(Debug, Default)]
pub(crate) struct Canary {
    /// The component, its sha256 and the interval; `None`: no spot checks.
    config: Option<(CanaryConfig, String)>,
    /// Device → when its next check is due.
    due: Mutex<HashMap<String, Instant>>,
    /// Checks handed out, by id.
    outstanding: Mutex<HashMap<String, Outstanding>>,
}

impl Canary {
    pub fn new(config: Option<CanaryConfig>) -> Canary {
        Canary {
            config: config.map(|c| {
                let sha = fog_proto::auth::sha256_hex(&c.component);
                (c, sha)
            }),
            ..Canary::default()
        }
    }

    /// The component's bytes, if `sha256` is the canary's.
    pub fn blob(&self, sha256: &str) -> Option<Bytes> {
        self.config
            .as_ref()
            .filter(|(_, sha)| sha == sha256)
            .map(|(c, _)| c.component.clone())
    }

    /// The canary's assignment, given to every device, if spot checks are on.
    pub fn assignment(&self) -> Option<api::Assignment> {
        let (_, sha256) = self.config.as_ref()?;
        Some(api::Assignment {
            sha256: sha256.clone(),
            manifest: Manifest::new(canary::APP),
            replication: api::Replication::default(),
            bundle: None,
        })
    }

    /// The canary's sha256, if spot checks are on.
    fn sha256(&self) -> Option<&str> {
        self.config.as_ref().map(|(_, sha)| sha.as_str())
    }
}

/// A fresh random nonce and round count.
fn fresh() -> ([u8; 16], u32, String) {
    let mut bytes = [0u8; 22];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let nonce: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
    let rounds = 1 + u32::from(u16::from_le_bytes([bytes[16], bytes[17]])) % canary::MAX_ROUNDS;
    (nonce, rounds, hex::encode(&bytes[18..]))
}

impl Control {
    /// `POST /v1/canary/challenges`: the checks due now, for the trusted router that asks.
    pub(crate) async fn canary_challenges<B>(&self, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, _, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        self.trusted_router(&signer, "to carry spot checks")?;
        let challenges = if self.is_leading() {
            self.due_checks(&signer)?
        } else {
            Vec::new()
        };
        Ok(json(200, &Challenges { challenges }))
    }

    /// Hand out the checks due now to `router`.
    fn due_checks(&self, router: &str) -> Result<Vec<Challenge>, ApiError> {
        let Some(sha256) = self.canary.sha256() else {
            return Ok(Vec::new());
        };
        let Some((config, _)) = &self.canary.config else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        // Devices alive, offering capacity and running this canary, with their HTX endpoints.
        let running: Vec<(String, Option<api::HtxEndpoint>)> = {
            let live = self.live.lock().expect("live lock");
            live.iter()
                .filter(|(_, l)| {
                    self.is_alive(l)
                        && l.heartbeat.harvestable
                        && l.heartbeat
                            .running
                            .iter()
                            .any(|r| r.app == canary::APP && r.sha256 == sha256)
                })
                .map(|(id, l)| (id.clone(), l.heartbeat.htx.clone()))
                .collect()
        };
        let mut outstanding = self.canary.outstanding.lock().expect("canary lock");
        // A check no router reported in time is forgotten, and its device checked again.
        outstanding.retain(|_, o| now.duration_since(o.handed) < ANSWER_WITHIN);
        let mut due = self.canary.due.lock().expect("canary lock");
        due.retain(|device, _| running.iter().any(|(d, _)| d == device));
        let mut out = Vec::new();
        for (device, htx) in running {
            if out.len() >= canary::MAX_BATCH {
                break;
            }
            let when = *due
                .entry(device.clone())
                .or_insert_with(|| now + config.interval);
            if when > now || outstanding.values().any(|o| o.device == device) {
                continue;
            }
            let addr = match self.store.get(Table::Devices, &device)? {
                Some(bytes) => decode::<DeviceRecord>(Table::Devices, &device, &bytes)?.addr,
                None => continue,
            };
            let (nonce, rounds, id) = fresh();
            due.insert(device.clone(), now + config.interval);
            out.push(Challenge {
                id: id.clone(),
                device: device.clone(),
                addr: Some(addr).filter(|a| !a.is_empty()),
                htx,
                path: canary::path(&nonce, rounds),
            });
            outstanding.insert(
                id,
                Outstanding {
                    device,
                    nonce,
                    rounds,
                    router: router.to_string(),
                    handed: now,
                },
            );
        }
        Ok(out)
    }

    /// `POST /v1/canary/answers`: what a router carried back; each is judged and counted in its
    /// device's trust.
    pub(crate) async fn canary_answers<B>(&self, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = self.signed(request, 4 * api::MAX_JSON_BYTES).await?;
        self.trusted_router(&signer, "to report spot checks")?;
        let answers: Answers = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed spot-check answers: {e}")))?;
        if answers.answers.len() > canary::MAX_BATCH {
            return Err(ApiError::TooLarge(format!(
                "{} spot-check answers in one report (at most {})",
                answers.answers.len(),
                canary::MAX_BATCH
            )));
        }
        let mut judged = 0;
        let mut wrong = false;
        for answer in &answers.answers {
            let check = {
                let mut outstanding = self.canary.outstanding.lock().expect("canary lock");
                match outstanding.get(&answer.id) {
                    Some(o) if o.router == signer => outstanding.remove(&answer.id),
                    _ => None,
                }
            };
            let Some(check) = check else { continue };
            let verdict = canary::judge(&check.nonce, check.rounds, answer);
            match verdict {
                Verdict::Right => {}
                Verdict::Wrong => {
                    tracing::warn!(
                        device = check.device,
                        "spot check answered wrongly: the device loses its trust and replicas"
                    );
                    wrong = true;
                }
                Verdict::Unanswered => tracing::info!(
                    device = check.device,
                    "spot check unanswered: {}",
                    answer.error.as_deref().unwrap_or("no reason given")
                ),
            }
            let trust = self.config.trust;
            self.observed
                .update_evidence(self.store.as_ref(), &check.device, |e| {
                    e.canary(now_ms(), verdict, &trust)
                })?;
            judged += 1;
        }
        if wrong {
            // Kept at once (a restart must not forgive it), and placed again now.
            self.save_evidence(true)?;
            self.changed.notify_one();
        }
        Ok(json(200, &serde_json::json!({ "judged": judged })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_checks_differ_and_ask_for_a_valid_round_count() {
        let checks: Vec<_> = (0..200).map(|_| fresh()).collect();
        assert!(
            checks
                .iter()
                .all(|(_, k, _)| (1..=canary::MAX_ROUNDS).contains(k))
        );
        let nonces: std::collections::HashSet<_> = checks.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(nonces.len(), checks.len());
    }

    #[test]
    fn the_canary_blob_is_served_only_by_its_own_hash() {
        let component = Bytes::from_static(b"\0asm component");
        let canary = Canary::new(Some(CanaryConfig {
            component: component.clone(),
            interval: DEFAULT_INTERVAL,
        }));
        let sha = fog_proto::auth::sha256_hex(&component);
        assert_eq!(canary.blob(&sha), Some(component));
        assert_eq!(canary.blob(&"0".repeat(64)), None);
        let assignment = canary.assignment().unwrap();
        assert_eq!(
            (
                assignment.manifest.name.as_str(),
                assignment.sha256.as_str()
            ),
            (canary::APP, sha.as_str())
        );
        assert!(Canary::new(None).assignment().is_none());
    }
}
