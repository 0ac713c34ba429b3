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
//! Handovers and recent events are soft state: a restarted control plane abandons a handover
//! (the old primary stays primary) and lists events from its start.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use fog_proto::api::{ReplicaRole, RunningApp};

/// How long the target may take to catch up.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the old primary may take to finish in-flight requests once fenced.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Events kept per app.
const EVENTS_KEPT: usize = 20;

/// Where a handover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Recent events per app (handovers, promotions, restores, scaling).
#[derive(Debug, Default)]
pub struct Events {
    by_app: std::sync::Mutex<HashMap<String, VecDeque<String>>>,
    /// Apps whose latest event is an abandoned move, and why: `fog move` waits on this, a
    /// type, rather than on the words of the event.
    abandoned: std::sync::Mutex<HashMap<String, String>>,
}

impl Events {
    /// Record `event` for `app`, stamped with the time.
    pub fn record(&self, app: &str, event: String) {
        self.abandoned.lock().expect("events lock").remove(app);
        tracing::info!(app, "{event}");
        let stamp = chrono::Utc::now().format("%H:%M:%S");
        let mut by_app = self.by_app.lock().expect("events lock");
        let kept = by_app.entry(app.to_string()).or_default();
        kept.push_back(format!("{stamp} {event}"));
        while kept.len() > EVENTS_KEPT {
            kept.pop_front();
        }
    }

    /// Record that `app`'s move to `to` was abandoned, and why.
    pub fn abandon(&self, app: &str, to: &str, reason: &str) {
        let event = format!("move to {to} abandoned: {reason}");
        self.record(app, event.clone());
        self.abandoned
            .lock()
            .expect("events lock")
            .insert(app.to_string(), event);
    }

    /// Why `app`'s last move was abandoned, if that is its latest event.
    pub fn abandoned(&self, app: &str) -> Option<String> {
        self.abandoned
            .lock()
            .expect("events lock")
            .get(app)
            .cloned()
    }

    /// The events of `app`, oldest first.
    pub fn of(&self, app: &str) -> Vec<String> {
        self.by_app
            .lock()
            .expect("events lock")
            .get(app)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forget `app`.
    pub fn forget(&self, app: &str) {
        self.by_app.lock().expect("events lock").remove(app);
        self.abandoned.lock().expect("events lock").remove(app);
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
