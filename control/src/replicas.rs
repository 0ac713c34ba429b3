//! Which replica of an app is the primary, and how the primary changes.
//!
//! A placement's first device is the primary; the others follow its change log. The primary
//! changes in one of two ways:
//! - **promotion**: the primary is dead (missed heartbeats). The surviving replica holding the
//!   highest sequence number becomes primary at once. Writes were acknowledged only once every
//!   caught-up follower held them, so a caught-up follower has every acknowledged write. With no
//!   survivor, the new device restores the latest snapshot the control plane holds (tier B).
//! - **handover**: the primary is alive but must go (`fog move`, a draining device, a better
//!   placement). The target follows the primary until it has caught up (*copying*), then the
//!   primary is fenced — it refuses new requests, which routers retry — and finishes what is in
//!   flight (*fencing*); once the target holds the primary's last write, it becomes primary and
//!   the old one is dropped. No acknowledged write is lost and no request fails: the pause is
//!   the fencing phase, during which routers hold requests.
//!
//! Handovers in flight, pending restores and recent events are kept in the store (see
//! [`crate::soft`]): the leader writes each handover's phase before it takes effect, so the
//! control plane that leads next, or a restarted one, resumes it where it was.

use std::time::{Duration, Instant};

use fog_proto::api::{ReplicaRole, RunningApp};
use serde::{Deserialize, Serialize};

/// How long the target may take to catch up.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the old primary may take to finish in-flight requests once fenced.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Where a handover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The target follows the primary's log.
    Copying,
    /// The primary refuses new requests and finishes in-flight ones.
    Fencing,
}

/// A primary moving from one device to another.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The current primary.
    pub from: String,
    /// The new primary.
    pub to: String,
    /// Where it is.
    pub phase: Phase,
    /// Why it happens.
    pub reason: String,
    /// When it started.
    pub started: Instant,
    /// When fencing started.
    pub fenced_at: Option<Instant>,
    /// The other replicas to keep (followers), and those to have once it is done.
    pub others: Vec<String>,
}

/// A handover as the store keeps it: its times as Unix ms, since an [`Instant`] means
/// nothing to another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRecord {
    /// The current primary.
    pub from: String,
    /// The new primary.
    pub to: String,
    /// Where it is.
    pub phase: Phase,
    /// Why it happens.
    pub reason: String,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When fencing started (Unix ms).
    pub fenced_at_ms: Option<u64>,
    /// The other replicas.
    pub others: Vec<String>,
}

impl Handover {
    /// The record to store, `now_ms` being the wall clock now.
    pub fn to_record(&self, now_ms: u64) -> HandoverRecord {
        let at = |i: Instant| now_ms.saturating_sub(i.elapsed().as_millis() as u64);
        HandoverRecord {
            from: self.from.clone(),
            to: self.to.clone(),
            phase: self.phase,
            reason: self.reason.clone(),
            started_ms: at(self.started),
            fenced_at_ms: self.fenced_at.map(at),
            others: self.others.clone(),
        }
    }

    /// The handover `record` describes, its timeouts counting the time it already ran.
    pub fn from_record(record: HandoverRecord, now_ms: u64) -> Handover {
        let at = |ms: u64| {
            let ago = Duration::from_millis(now_ms.saturating_sub(ms));
            Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
        };
        Handover {
            started: at(record.started_ms),
            fenced_at: record.fenced_at_ms.map(at),
            from: record.from,
            to: record.to,
            phase: record.phase,
            reason: record.reason,
            others: record.others,
        }
    }
}

/// What one step of a handover decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Still going; the placement while it does.
    Continue(Vec<String>),
    /// Done: the new placement, and an event to record.
    Done(Vec<String>, String),
    /// Given up: why.
    Abort(String),
}

impl Handover {
    /// The placement while the handover runs: the old primary first, the target next.
    pub fn devices(&self) -> Vec<String> {
        let mut devices = vec![self.from.clone(), self.to.clone()];
        devices.extend(
            self.others
                .iter()
                .filter(|d| **d != self.from && **d != self.to)
                .cloned(),
        );
        devices
    }

    /// Advance given what the devices report (`None`: dead or not running the app).
    pub fn step(&mut self, from: Option<&RunningApp>, to: Option<&RunningApp>) -> Step {
        let Some(from) = from else {
            return Step::Abort(format!("the primary {} is gone", self.from));
        };
        let Some(to) = to else {
            if self.started.elapsed() > COPY_TIMEOUT {
                return Step::Abort(format!("{} never started the app", self.to));
            }
            return Step::Continue(self.devices());
        };
        match self.phase {
            Phase::Copying => {
                if to.role == ReplicaRole::Follower && to.caught_up {
                    self.phase = Phase::Fencing;
                    self.fenced_at = Some(Instant::now());
                } else if self.started.elapsed() > COPY_TIMEOUT {
                    return Step::Abort(format!(
                        "{} did not catch up within {COPY_TIMEOUT:?}",
                        self.to
                    ));
                }
                Step::Continue(self.devices())
            }
            Phase::Fencing => {
                if from.fenced && to.state_seq >= from.state_seq {
                    let pause = self.fenced_at.map_or(Duration::ZERO, |f| f.elapsed());
                    let copy = self.started.elapsed().saturating_sub(pause);
                    let mut devices = vec![self.to.clone()];
                    devices.extend(
                        self.others
                            .iter()
                            .filter(|d| **d != self.from && **d != self.to)
                            .cloned(),
                    );
                    return Step::Done(
                        devices,
                        format!(
                            "moved from {} to {} ({}): caught up in {} ms, writes paused {} ms, \
                             state at seq {}",
                            self.from,
                            self.to,
                            self.reason,
                            copy.as_millis(),
                            pause.as_millis(),
                            from.state_seq
                        ),
                    );
                }
                if self.fenced_at.is_some_and(|f| f.elapsed() > FENCE_TIMEOUT) {
                    return Step::Abort(format!(
                        "the switch-over did not finish within {FENCE_TIMEOUT:?}"
                    ));
                }
                Step::Continue(self.devices())
            }
        }
    }
}

/// Order a new placement: the old primary stays first if it is kept; otherwise the surviving
/// replica with the highest sequence number leads (a promotion). `seq` gives what each device
/// reports for the app.
pub fn order(
    old: &[String],
    mut new: Vec<String>,
    seq: impl Fn(&str) -> Option<u64>,
) -> (Vec<String>, Option<String>) {
    let Some(primary) = old.first() else {
        return (new, None);
    };
    if let Some(i) = new.iter().position(|d| d == primary) {
        let kept = new.remove(i);
        new.insert(0, kept);
        return (new, None);
    }
    let best = new
        .iter()
        .enumerate()
        .filter(|(_, d)| old.contains(d))
        .filter_map(|(i, d)| seq(d).map(|s| (s, i)))
        .max_by_key(|(s, i)| (*s, std::cmp::Reverse(*i)));
    match best {
        Some((s, i)) => {
            let promoted = new.remove(i);
            new.insert(0, promoted.clone());
            (
                new,
                Some(format!(
                    "{promoted} promoted to primary (state at seq {s}; {primary} is gone)"
                )),
            )
        }
        None => (new, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_stored_handover_keeps_its_phase_and_the_time_it_ran() {
        let h = Handover {
            from: "a".into(),
            to: "b".into(),
            phase: Phase::Fencing,
            reason: "requested".into(),
            started: Instant::now() - Duration::from_secs(10),
            fenced_at: Some(Instant::now() - Duration::from_secs(2)),
            others: vec!["c".into()],
        };
        let now = 1_000_000_000;
        let record = h.to_record(now);
        assert!((9_900..=10_100).contains(&(now - record.started_ms)));
        let back = Handover::from_record(record.clone(), now);
        assert_eq!(back.phase, Phase::Fencing);
        assert_eq!(back.devices(), h.devices());
        let ran = back.started.elapsed();
        assert!(
            ran >= Duration::from_millis(9_900) && ran < Duration::from_secs(11),
            "{ran:?}"
        );
        let fenced = back.fenced_at.unwrap().elapsed();
        assert!(fenced >= Duration::from_millis(1_900) && fenced < Duration::from_secs(3));
    }

    fn running(seq: u64, role: ReplicaRole, caught_up: bool, fenced: bool) -> RunningApp {
        RunningApp {
            app: "a".into(),
            sha256: "x".into(),
            in_flight: 0,
            requests: 0,
            failures: 0,
            fuel: 0,
            state_seq: seq,
            role,
            caught_up,
            fenced,
            memory_bytes: None,
        }
    }

    #[test]
    fn a_handover_copies_then_fences_then_switches() {
        let mut h = Handover {
            from: "a".into(),
            to: "b".into(),
            phase: Phase::Copying,
            reason: "test".into(),
            started: Instant::now(),
            fenced_at: None,
            others: vec!["c".into()],
        };
        assert_eq!(h.devices(), vec!["a", "b", "c"]);
        let primary = running(10, ReplicaRole::Primary, false, false);
        // Behind: keep copying.
        let behind = running(7, ReplicaRole::Follower, false, false);
        assert!(matches!(
            h.step(Some(&primary), Some(&behind)),
            Step::Continue(_)
        ));
        // Not caught up even with a higher seq reported: still copying.
        let behind = running(11, ReplicaRole::Follower, false, false);
        assert!(matches!(
            h.step(Some(&primary), Some(&behind)),
            Step::Continue(_)
        ));
        assert_eq!(h.phase, Phase::Copying);
        // Caught up: fence.
        let level = running(10, ReplicaRole::Follower, true, false);
        h.step(Some(&primary), Some(&level));
        assert_eq!(h.phase, Phase::Fencing);
        // Fenced, but the target lacks the last writes: wait.
        let fenced = running(12, ReplicaRole::Primary, false, true);
        assert!(matches!(
            h.step(Some(&fenced), Some(&level)),
            Step::Continue(_)
        ));
        let level = running(12, ReplicaRole::Follower, true, false);
        match h.step(Some(&fenced), Some(&level)) {
            Step::Done(devices, event) => {
                assert_eq!(devices, vec!["b", "c"]);
                assert!(event.contains("moved from a to b"), "{event}");
            }
            other => panic!("{other:?}"),
        }
        // The primary dying aborts.
        assert!(matches!(h.step(None, Some(&level)), Step::Abort(_)));
    }

    #[test]
    fn promotions_pick_the_most_up_to_date_survivor() {
        let old: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let seqs = HashMap::from([("b", 5u64), ("c", 9u64)]);
        let seq = |d: &str| seqs.get(d).copied();
        // The primary stays first when kept.
        let (kept, event) = order(&old, vec!["c".into(), "a".into()], seq);
        assert_eq!(
            (kept, event),
            (vec!["a".to_string(), "c".to_string()], None)
        );
        // Gone: c has the highest seq.
        let (promoted, event) = order(&old, vec!["b".into(), "c".into(), "d".into()], seq);
        assert_eq!(promoted, vec!["c", "b", "d"]);
        assert!(event.unwrap().contains("c promoted"));
        // No survivor: unchanged, no promotion.
        let (fresh, event) = order(&old, vec!["d".into()], seq);
        assert_eq!((fresh, event), (vec!["d".to_string()], None));
    }
}
