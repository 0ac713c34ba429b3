//! The device's one wasmtime engine, its linker, the compiled-component cache and app loading.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::app::App;
use crate::code::{CodeCache, CodeStats, Compiled, DEFAULT_CODE_BUDGET};
use crate::error::{LoadError, RuntimeError, first_line};
use crate::kv::Namespace;
use crate::state::RequestState;
use fog_proto::{Limits, Manifest};

/// How often the engine's epoch advances; deadlines and fair yielding have this granularity.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default for [`RuntimeConfig::keep_resident`]: a Rust guest's stack, data and first heap
/// pages all lie in its first 2 MiB.
pub const DEFAULT_KEEP_RESIDENT: usize = 2 << 20;

/// Pooled slots kept warm while unused (each holds at most `keep_resident` dirty bytes).
const MAX_WARM_SLOTS: u32 = 64;

/// Largest component accepted, in bytes: what the control plane accepts.
pub const MAX_COMPONENT_BYTES: usize = fog_proto::api::MAX_COMPONENT_BYTES as usize;

/// How to build a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components and app state live; `None` keeps everything in memory and
    /// temporary files (for tests and one-off runs).
    pub data_dir: Option<PathBuf>,
    /// Instances the pooling allocator keeps slots for: the most requests in flight on this
    /// device across all apps (not the number of apps: an idle app holds no slot).
    pub pool_size: u32,
    /// Use the pooling allocator when the address space can be reserved (falls back to
    /// on-demand allocation otherwise).
    pub pooling: bool,
    /// Bytes of compiled components kept in memory; beyond it the least recently used are
    /// dropped (and mapped again from the on-disk cache when next needed).
    pub code_budget: usize,
    /// Bytes at the start of each pooled linear memory whose dirty pages are reset in place
    /// (found with Linux's `PAGEMAP_SCAN`, restored by memset) instead of being dropped with
    /// `madvise`: the next request then takes no page faults there. Only slots in use or kept
    /// warm hold such pages (a bounded number, whatever the number of apps); 0 resets
    /// everything with `madvise`.
    pub keep_resident: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: None,
            pool_size: 1000,
            pooling: true,
            code_budget: DEFAULT_CODE_BUDGET,
            keep_resident: DEFAULT_KEEP_RESIDENT,
        }
    }
}

/// The device's WebAssembly runtime: one engine shared by every app.
pub struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<RequestState>,
    /// Compiled components (`<sha256>-<engine hash>.cwasm`).
    cache_dir: PathBuf,
    /// The components themselves (`<sha256>.wasm`), written once they passed validation and
    /// linking: an app is only ever accepted lazily for a component found here.
    source_dir: PathBuf,
    /// The compiled components in memory.
    pub(crate) code: CodeCache,
    /// The engine's compatibility hash, part of every compiled file's name.
    engine_tag: u64,
    db: sled::Db,
    /// Makes the writes of durable apps' requests stable before they are answered.
    pub(crate) durable: crate::durable::GroupCommit,
    /// Each app's namespace, shared by every version of the app loaded.
    namespaces: std::sync::Mutex<std::collections::HashMap<String, Namespace>>,
    /// Whether the control planes vouch for this host's primaries (every namespace shares it).
    lease: Arc<crate::replica::ControlLease>,
    /// Apps whose state trees were on disk at start; other apps' trees are created on first use.
    stored: std::collections::HashSet<String>,
    pooling: bool,
    pub(crate) next_request: AtomicU64,
    ticker: Option<EpochTicker>,
    /// Holds the temporary directory of a runtime without a data directory.
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.cache_dir)
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Build the engine (pooling allocator if possible), the linker and the state database.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Runtime>, RuntimeError> {
        let (engine, pooling) = build_engine(&config)?;
        let mut linker = Linker::new(&engine);
        let link = |r: wasmtime::Result<()>| r.map_err(|e| RuntimeError::Engine(format!("{e:#}")));
        // All of WASI is linked so that any component loads; what it can reach is decided per
        // app by the WasiCtx (no preopens, no socket addresses, no outbound HTTP by default).
        link(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
        link(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
            &mut linker,
        ))?;
        link(crate::kv::add_to_linker(&mut linker, RequestState::kv))?;
        link(wasmtime_wasi_config::add_to_linker(
            &mut linker,
            RequestState::config,
        ))?;

        // Without a data directory, compiled components still go to (temporary) files: an app
        // keeps only its component's hash, and its code is mapped from there when needed.
        let (dir, temp) = match &config.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("fog-host-")
                    .tempdir()
                    .map_err(|source| RuntimeError::DataDir {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let cache_dir = dir.join("compiled");
        let source_dir = dir.join("components");
        for path in [&cache_dir, &source_dir] {
            std::fs::create_dir_all(path).map_err(|source| RuntimeError::DataDir {
                path: path.clone(),
                source,
            })?;
        }
        let (db, log_file) = match &config.data_dir {
            Some(dir) => {
                let state = dir.join("state");
                let db = sled::Config::new().path(&state).open().map_err(|source| {
                    RuntimeError::State {
                        path: state.clone(),
                        source,
                    }
                })?;
                // sled's log, for the `fdatasync` that makes durable apps' writes survive a
                // power cut (see `crate::durable`). Opened once sled has created it.
                let log = state.join("db");
                let log_file = std::fs::File::open(&log)
                    .map_err(|source| RuntimeError::DataDir { path: log, source })?;
                (db, Some(log_file))
            }
            None => (
                sled::Config::new()
                    .temporary(true)
                    .open()
                    .map_err(|source| RuntimeError::State {
                        path: PathBuf::from("(temporary)"),
                        source,
                    })?,
                None,
            ),
        };
        let stored = db
            .tree_names()
            .iter()
            .filter_map(|name| {
                let name = std::str::from_utf8(name).ok()?;
                let app = name
                    .strip_prefix("kv/")
                    .or_else(|| name.strip_prefix("log/"))?;
                Some(app.to_string())
            })
            .collect();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = hasher.finish();
        let ticker = EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache_dir,
            source_dir,
            code: CodeCache::new(config.code_budget),
            engine_tag,
            durable: crate::durable::GroupCommit::new(db.clone(), log_file),
            db,
            namespaces: std::sync::Mutex::new(std::collections::HashMap::new()),
            lease: Arc::default(),
            stored,
            pooling,
            next_request: AtomicU64::new(1),
            ticker: Some(ticker),
            _temp: temp,
        }))
    }

    /// The key-value namespace (state, change log, replication) of `app`.
    pub fn namespace(&self, app: &str) -> Result<Namespace, LoadError> {
        let mut namespaces = self.namespaces.lock().expect("namespaces lock");
        if let Some(namespace) = namespaces.get(app) {
            return Ok(namespace.clone());
        }
        let mut namespace = if self.stored.contains(app) {
            Namespace::open(&self.db, app)?
        } else {
            Namespace::lazy(&self.db, app)
        };
        namespace.lease = self.lease.clone();
        namespaces.insert(app.to_string(), namespace.clone());
        Ok(namespace)
    }

    /// The host's control-plane lease: the agent keeps it confirmed (see [`crate::replica`]).
    pub fn lease(&self) -> &Arc<crate::replica::ControlLease> {
        &self.lease
    }

    /// Whether instances come from the pooling allocator.
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// Where unpacked site bundles live: `sites/` beside the compiled-component cache (in the
    /// data directory, or the runtime's temporary directory without one).
    pub fn sites_dir(&self) -> PathBuf {
        self.cache_dir.with_file_name("sites")
    }

    /// What the compiled-component cache holds and has done.
    pub fn code_stats(&self) -> CodeStats {
        self.code.stats()
    }

    /// Change how many bytes of compiled components stay in memory, dropping the least
    /// recently used ones that no longer fit (all of them for 0: under memory pressure, or to
    /// measure cold starts). The on-disk cache is kept.
    pub fn set_code_budget(&self, bytes: usize) {
        self.code.set_budget(bytes);
    }

    /// Load the component at `path` as the app described by `manifest`.
    pub fn load_file(self: &Arc<Self>, manifest: Manifest, path: &Path) -> Result<App, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_named(manifest, &bytes, &path.display().to_string())
    }

    /// Load `bytes` as the app described by `manifest`.
    ///
    /// A component this host has not seen is validated, compiled, linked and cached on disk
    /// here (so a bad component is refused now, not on its first request); one it has seen
    /// costs only a hash: its code is mapped on the app's first request.
    pub fn load(self: &Arc<Self>, manifest: Manifest, bytes: &[u8]) -> Result<App, LoadError> {
        let what = format!("app {}", manifest.name);
        self.load_named(manifest, bytes, &what)
    }

    fn load_named(
        self: &Arc<Self>,
        manifest: Manifest,
        bytes: &[u8],
        what: &str,
    ) -> Result<App, LoadError> {
        manifest.validate().map_err(|reason| LoadError::Manifest {
            app: manifest.name.clone(),
            reason,
        })?;
        let sha256 = self.prepare(bytes, what)?;
        let namespace = self.namespace(&manifest.name)?;
        Ok(App::new(self.clone(), manifest, sha256, namespace))
    }

    /// Make sure the on-disk cache holds `bytes` compiled, validated and linkable; its sha256.
    fn prepare(&self, bytes: &[u8], what: &str) -> Result<String, LoadError> {
        check_header(bytes, what)?;
        check_size(bytes, what)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let source = self.source_path(&sha256);
        let ready = || {
            self.code.contains(&sha256) || (source.exists() && self.cache_path(&sha256).exists())
        };
        if ready() {
            return Ok(sha256);
        }
        // One compile at a time: when one heartbeat assigns many apps of a new component, the
        // first compiles it and the others find it ready (compiling it once per app at once
        // was what made each idle app cost 2.8 MB: 200 copies of the code and of the
        // compiler's garbage).
        let _compiling = self.code.compiling.lock().expect("code compiling lock");
        if ready() {
            return Ok(sha256);
        }
        let component = self.component(&sha256, Some(bytes), what)?;
        let pre = self.pre_instantiate(&component, what)?;
        write_atomically(&source, bytes)?;
        // Just compiled: it is about to serve, so keep it (within the budget).
        self.code
            .insert(&sha256, Compiled::new(pre, image_bytes(&component)));
        Ok(sha256)
    }

    /// The compiled artefact of the component `sha256`, mapped from the on-disk cache if it is
    /// not in memory (blocking: disk reads, and a compile if the cached file is unusable).
    pub(crate) fn compiled(&self, sha256: &str) -> Result<Arc<Compiled>, LoadError> {
        if let Some(compiled) = self.code.get(sha256) {
            return Ok(compiled);
        }
        let _loading = self.code.loading.lock().expect("code loading lock");
        if let Some(compiled) = self.code.get(sha256) {
            return Ok(compiled);
        }
        let what = format!("component {sha256}");
        let component = self.component(sha256, None, &what)?;
        let pre = self.pre_instantiate(&component, &what)?;
        self.code.loads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .code
            .insert(sha256, Compiled::new(pre, image_bytes(&component))))
    }

    /// Check the header, then compile (or map from the on-disk cache) a component. The runtime
    /// does not keep it.
    pub fn compile(&self, bytes: &[u8], what: &str) -> Result<Component, LoadError> {
        check_header(bytes, what)?;
        check_size(bytes, what)?;
        self.component(&hex::encode(Sha256::digest(bytes)), Some(bytes), what)
    }

    /// The component `sha256`: mapped from its compiled file, else compiled from `bytes` (or
    /// from the stored component) and written to the cache.
    fn component(
        &self,
        sha256: &str,
        bytes: Option<&[u8]>,
        what: &str,
    ) -> Result<Component, LoadError> {
        let cached = self.cache_path(sha256);
        if cached.exists() {
            // SAFETY: the file was written by `Component::serialize` of this runtime into
            // the host's own data directory; its name carries the engine's compatibility
            // hash, and wasmtime re-checks that compatibility while deserialising.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::info!(path = %cached.display(), "recompiling: cached component unusable: {err}");
                }
            }
        }
        let stored;
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => {
                let path = self.source_path(sha256);
                stored = std::fs::read(&path).map_err(|source| LoadError::Read { path, source })?;
                &stored[..]
            }
        };
        let component = Component::new(&self.engine, bytes).map_err(|err| LoadError::Invalid {
            what: what.to_string(),
            reason: first_line(&format!("{err:#}")),
        })?;
        self.code.compiles.fetch_add(1, Ordering::Relaxed);
        let serialized = component.serialize().map_err(|err| LoadError::Invalid {
            what: what.to_string(),
            reason: first_line(&format!("{err:#}")),
        })?;
        write_atomically(&cached, &serialized)?;
        // Map the file just written rather than keep the compiler's copy: its pages are the
        // page cache's, shared and reclaimable, instead of anonymous memory.
        // SAFETY: as above; the file was written just now by this runtime.
        match unsafe { Component::deserialize_file(&self.engine, &cached) } {
            Ok(mapped) => Ok(mapped),
            Err(_) => Ok(component),
        }
    }

    fn pre_instantiate(
        &self,
        component: &Component,
        what: &str,
    ) -> Result<ProxyPre<RequestState>, LoadError> {
        let exports_handler = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2."));
        if !exports_handler {
            return Err(LoadError::NotHttpApp {
                what: what.to_string(),
            });
        }
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|err| LoadError::Link {
                what: what.to_string(),
                reason: first_line(&format!("{err:#}")),
            })?;
        ProxyPre::new(pre).map_err(|err| LoadError::Link {
            what: what.to_string(),
            reason: first_line(&format!("{err:#}")),
        })
    }

    /// Where the compiled form of the component `sha256` is cached: named by the component's
    /// sha256 and the engine's compatibility hash, so a wasmtime upgrade or a changed setting
    /// never loads stale machine code.
    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{sha256}-{:016x}.cwasm", self.engine_tag))
    }

    /// Where the component `sha256` itself is kept once it passed validation and linking.
    fn source_path(&self, sha256: &str) -> PathBuf {
        self.source_dir.join(format!("{sha256}.wasm"))
    }

    /// Write all app state to disk.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }

    /// Flushes made for durable apps so far (each serves every request waiting for it).
    pub fn durable_flushes(&self) -> u64 {
        self.durable.flushes()
    }

    /// Default limits for apps loaded without explicit ones.
    pub fn default_limits(&self) -> Limits {
        Limits::default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
        if let Err(err) = self.db.flush() {
            tracing::error!("cannot flush app state on shutdown: {err}");
        }
    }
}

/// Bytes a compiled component maps: its code, data images and metadata.
fn image_bytes(component: &Component) -> usize {
    let range = component.image_range();
    (range.end as usize).saturating_sub(range.start as usize)
}

fn build_engine(config: &RuntimeConfig) -> Result<(Engine, bool), RuntimeError> {
    let base = || {
        let mut c = Config::new();
        c.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(1 << 20)
            .async_stack_size(2 << 20)
            .wasm_component_model(true);
        c
    };
    if config.pooling {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.pool_size.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(Limits::MAX_MEMORY_BYTES as usize)
            .linear_memory_keep_resident(config.keep_resident)
            .pagemap_scan(Enabled::Auto)
            // Warm slots keep their dirty pages (up to `keep_resident`) for the next instance
            // of the same component; bounding them bounds that memory whatever the app count.
            .max_unused_warm_slots(n.min(MAX_WARM_SLOTS))
            .table_keep_resident(64 << 10);
        let mut c = base();
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&c) {
            Ok(engine) => return Ok((engine, true)),
            Err(err) => {
                tracing::info!("pooling allocator unavailable, allocating on demand: {err}");
            }
        }
    }
    let engine = Engine::new(&base()).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    Ok((engine, false))
}

fn check_header(bytes: &[u8], what: &str) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            what: what.to_string(),
        });
    }
    // After the magic: a 16-bit version and a 16-bit layer; layer 0 is a core module, layer 1 a
    // component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule {
            what: what.to_string(),
        });
    }
    Ok(())
}

fn check_size(bytes: &[u8], what: &str) -> Result<(), LoadError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(LoadError::Invalid {
            what: what.to_string(),
            reason: format!("larger than {} MiB", MAX_COMPONENT_BYTES >> 20),
        });
    }
    Ok(())
}

/// Write `bytes` to `path` through a temporary file, so no reader ever sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| LoadError::Cache {
            path: path.to_path_buf(),
            source,
        })
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`].
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fog-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"hello world", "x"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(b"\0asm", "x"),
            Err(LoadError::NotWasm { .. })
        ));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(
            check_header(core, "x"),
            Err(LoadError::CoreModule { .. })
        ));
        let component = b"\0asm\x0d\0\x01\0";
        assert!(check_header(component, "x").is_ok());
    }
}
