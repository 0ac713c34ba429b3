//! The device's one wasmtime engine, its linker, the compiled-component cache and app loading.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::app::App;
use crate::error::{LoadError, RuntimeError, first_line};
use crate::kv::Namespace;
use crate::state::RequestState;
use fog_proto::{Limits, Manifest};

/// How often the engine's epoch advances; deadlines and fair yielding have this granularity.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each linear memory (and async stack) reset by memset rather than madvise.
const KEEP_RESIDENT: usize = 0;

/// Largest component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// How to build a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components and app state live; `None` keeps everything in memory and
    /// temporary files (for tests and one-off runs).
    pub data_dir: Option<PathBuf>,
    /// Instances the pooling allocator keeps slots for: the most requests in flight on this
    /// device across all apps.
    pub pool_size: u32,
    /// Use the pooling allocator when the address space can be reserved (falls back to
    /// on-demand allocation otherwise).
    pub pooling: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: None,
            pool_size: 1000,
            pooling: true,
        }
    }
}

/// The device's WebAssembly runtime: one engine shared by every app.
pub struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<RequestState>,
    cache_dir: Option<PathBuf>,
    db: sled::Db,
    /// Each app's namespace, shared by every version of the app loaded.
    namespaces: std::sync::Mutex<std::collections::HashMap<String, Namespace>>,
    pooling: bool,
    pub(crate) next_request: AtomicU64,
    ticker: Option<EpochTicker>,
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

        let (cache_dir, db) = match &config.data_dir {
            Some(dir) => {
                let cache = dir.join("compiled");
                std::fs::create_dir_all(&cache).map_err(|source| RuntimeError::DataDir {
                    path: cache.clone(),
                    source,
                })?;
                let state = dir.join("state");
                let db = sled::Config::new().path(&state).open().map_err(|source| {
                    RuntimeError::State {
                        path: state,
                        source,
                    }
                })?;
                (Some(cache), db)
            }
            None => {
                let db = sled::Config::new()
                    .temporary(true)
                    .open()
                    .map_err(|source| RuntimeError::State {
                        path: PathBuf::from("(temporary)"),
                        source,
                    })?;
                (None, db)
            }
        };
        let ticker = EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache_dir,
            db,
            namespaces: std::sync::Mutex::new(std::collections::HashMap::new()),
            pooling,
            next_request: AtomicU64::new(1),
            ticker: Some(ticker),
        }))
    }

    /// The key-value namespace (state, change log, replication) of `app`.
    pub fn namespace(&self, app: &str) -> Result<Namespace, LoadError> {
        let mut namespaces = self.namespaces.lock().expect("namespaces lock");
        if let Some(namespace) = namespaces.get(app) {
            return Ok(namespace.clone());
        }
        let namespace = Namespace::open(&self.db, app)?;
        namespaces.insert(app.to_string(), namespace.clone());
        Ok(namespace)
    }

    /// Whether instances come from the pooling allocator.
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// Where unpacked site bundles live: `sites/` in the data directory (a temporary directory
    /// without one).
    pub fn sites_dir(&self) -> PathBuf {
        match &self.cache_dir {
            Some(cache) => cache.with_file_name("sites"),
            None => std::env::temp_dir().join(format!("fog-sites-{}", std::process::id())),
        }
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
        let component = self.compile(bytes, what)?;
        let pre = self.pre_instantiate(&component, what)?;
        let namespace = self.namespace(&manifest.name)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        Ok(App::new(self.clone(), manifest, sha256, pre, namespace))
    }

    /// Check the header, then compile (or load from the on-disk cache) a component.
    pub fn compile(&self, bytes: &[u8], what: &str) -> Result<Component, LoadError> {
        check_header(bytes, what)?;
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::Invalid {
                what: what.to_string(),
                reason: format!("larger than {} MiB", MAX_COMPONENT_BYTES >> 20),
            });
        }
        let cached = self.cache_path(bytes);
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of this runtime into
            // the host's own data directory; its name carries the engine's compatibility
            // hash, and wasmtime re-checks that compatibility while deserialising.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::info!(path = %path.display(), "recompiling: cached component unusable: {err}");
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|err| LoadError::Invalid {
            what: what.to_string(),
            reason: first_line(&format!("{err:#}")),
        })?;
        if let Some(path) = &cached
            && let Err(err) = write_cache(&component, path)
        {
            tracing::info!(path = %path.display(), "cannot cache compiled component: {err}");
        }
        Ok(component)
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

    /// Where the compiled form of `bytes` is cached: named by the component's sha256 and the
    /// engine's compatibility hash, so a wasmtime upgrade or a changed setting never loads stale
    /// machine code.
    fn cache_path(&self, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let digest = hex::encode(Sha256::digest(bytes));
        Some(dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish())))
    }

    /// Write all app state to disk.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
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
            .linear_memory_keep_resident(KEEP_RESIDENT)
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

fn write_cache(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
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
