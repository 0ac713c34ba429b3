//! Compiled components shared by content hash: compiled once and kept on disk, mapped into
//! memory on the first request that needs them, and dropped least-recently-used when the
//! components in memory outgrow a budget.
//!
//! Apps never own machine code: an app holds its manifest and the sha256 of its component, and
//! asks this cache for the compiled artefact when a request arrives. So 200 apps publishing the
//! same component share one artefact, and an app nobody visits costs no code memory at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::state::RequestState;

/// Default for [`crate::RuntimeConfig::code_budget`]: bytes of compiled components kept in
/// memory. A `hello`-sized component maps ~1 MiB, so this holds a few hundred distinct ones.
pub const DEFAULT_CODE_BUDGET: usize = 256 << 20;

/// One compiled component, linked and ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) pre: ProxyPre<RequestState>,
    /// Bytes the artefact maps (its machine code, data images and metadata): what the budget
    /// counts.
    bytes: usize,
    /// The cache's clock at the last request that used it.
    last_used: AtomicU64,
}

impl Compiled {
    pub(crate) fn new(pre: ProxyPre<RequestState>, bytes: usize) -> Compiled {
        Compiled {
            pre,
            bytes,
            last_used: AtomicU64::new(0),
        }
    }
}

/// What the compiled-component cache holds and has done since the host started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeStats {
    /// Distinct compiled components in memory.
    pub resident: usize,
    /// Bytes they map.
    pub resident_bytes: usize,
    /// The most bytes kept in memory (beyond the one component a request needs right now).
    pub budget: usize,
    /// Components compiled from WebAssembly.
    pub compiles: u64,
    /// Components mapped back into memory from the on-disk cache.
    pub loads: u64,
    /// Components dropped from memory to stay within the budget.
    pub evictions: u64,
}

#[derive(Default)]
struct Resident {
    by_hash: HashMap<String, Arc<Compiled>>,
    bytes: usize,
}

/// The components in memory, by sha256, with their budget and counters.
pub(crate) struct CodeCache {
    resident: Mutex<Resident>,
    /// Held while a component is compiled: concurrent loads of one new component compile it
    /// once, and concurrent compiles never pile up the compiler's memory.
    pub(crate) compiling: Mutex<()>,
    /// Held while a component is mapped from disk, so that concurrent first requests map it
    /// once; never held during a compile of a new component, so a cold app's first request
    /// does not wait for someone else's publish.
    pub(crate) loading: Mutex<()>,
    budget: AtomicUsize,
    clock: AtomicU64,
    pub(crate) compiles: AtomicU64,
    pub(crate) loads: AtomicU64,
    evictions: AtomicU64,
}

impl CodeCache {
    pub(crate) fn new(budget: usize) -> CodeCache {
        CodeCache {
            resident: Mutex::new(Resident::default()),
            compiling: Mutex::new(()),
            loading: Mutex::new(()),
            budget: AtomicUsize::new(budget),
            clock: AtomicU64::new(1),
            compiles: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The artefact for `sha256` if it is in memory; marks it used.
    pub(crate) fn get(&self, sha256: &str) -> Option<Arc<Compiled>> {
        let compiled = self.lock().by_hash.get(sha256).cloned()?;
        self.touch(&compiled);
        Some(compiled)
    }

    /// Whether the artefact for `sha256` is in memory (does not count as a use).
    pub(crate) fn contains(&self, sha256: &str) -> bool {
        self.lock().by_hash.contains_key(sha256)
    }

    /// Mark `compiled` as used now.
    pub(crate) fn touch(&self, compiled: &Compiled) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        compiled.last_used.store(now, Ordering::Relaxed);
    }

    /// Keep `compiled` in memory as the artefact of `sha256` (or return the one a concurrent
    /// caller put there first), then drop the least recently used others while over budget.
    pub(crate) fn insert(&self, sha256: &str, compiled: Compiled) -> Arc<Compiled> {
        let mut resident = self.lock();
        if let Some(existing) = resident.by_hash.get(sha256).cloned() {
            drop(resident);
            self.touch(&existing);
            return existing;
        }
        let compiled = Arc::new(compiled);
        self.touch(&compiled);
        resident.bytes += compiled.bytes;
        resident
            .by_hash
            .insert(sha256.to_string(), compiled.clone());
        self.evict(&mut resident, Some(sha256));
        compiled
    }

    /// Change the budget, evicting what no longer fits (every component if `bytes` is 0).
    pub(crate) fn set_budget(&self, bytes: usize) {
        self.budget.store(bytes, Ordering::Relaxed);
        let mut resident = self.lock();
        self.evict(&mut resident, None);
    }

    /// Drop least-recently-used components until the rest fit the budget, never `keep` (the
    /// one a request is about to use). Requests running on a dropped component keep it alive
    /// until they end; apps map it again from disk on their next request.
    fn evict(&self, resident: &mut Resident, keep: Option<&str>) {
        let budget = self.budget.load(Ordering::Relaxed);
        while resident.bytes > budget {
            let victim = resident
                .by_hash
                .iter()
                .filter(|(hash, _)| Some(hash.as_str()) != keep)
                .min_by_key(|(_, c)| c.last_used.load(Ordering::Relaxed))
                .map(|(hash, _)| hash.clone());
            let Some(victim) = victim else { break };
            if let Some(gone) = resident.by_hash.remove(&victim) {
                resident.bytes -= gone.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    sha256 = victim,
                    bytes = gone.bytes,
                    "compiled component evicted"
                );
            }
        }
    }

    pub(crate) fn stats(&self) -> CodeStats {
        let resident = self.lock();
        CodeStats {
            resident: resident.by_hash.len(),
            resident_bytes: resident.bytes,
            budget: self.budget.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Resident> {
        self.resident.lock().expect("code cache lock")
    }
}
