//! What one request's store holds: WASI and wasi:http contexts built from the app's permissions,
//! what it is granted (outbound origins), its key-value namespace, and the memory limiter.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::OutputStream;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::kv::{KvView, Namespace};
use fog_proto::{Limits, Manifest, Origin, Permissions};

/// What an app is granted that may change while it runs (without a new version): the origins
/// it may call, its config and whether its writes are durable. Each request takes the grants current when it starts.
#[derive(Default)]
pub struct Grants {
    /// Origins outbound HTTP may go to.
    pub(crate) allow_outbound: Vec<Origin>,
    /// What `wasi:config/store` answers (variables and secrets).
    config: WasiConfigVariables,
    /// Each request's writes are on disk before it is answered.
    pub(crate) durable: bool,
}

impl std::fmt::Debug for Grants {
    // Config values are secrets: only their count is ever printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("allow_outbound", &self.allow_outbound)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Grants {
    /// The grants a manifest carries.
    pub fn of(manifest: &Manifest) -> Grants {
        Grants {
            allow_outbound: manifest.permissions.allow_outbound.clone(),
            config: manifest
                .config
                .iter()
                .map(|(key, value)| (key.as_str(), value.expose()))
                .collect(),
            durable: manifest.durable,
        }
    }
}

/// Bytes of guest stderr kept per request (panic messages land there).
const STDERR_CAPACITY: usize = 4096;

/// WASI contexts kept per app between requests: contexts an app's guests cannot change (no
/// arguments, no environment, the app's fixed permissions), so building one per request (two
/// random generators seeded each time) was work thrown away. Each request still gets a fresh
/// resource table and its own stderr buffer.
///
/// What carries over from one request to the next of the same app: the random generators'
/// state (they go on with their streams) and the `wasi:random/insecure-seed` value, which WASI
/// allows to be the same on every call. Contexts of an app that reads a directory are not kept:
/// each request opens the directory afresh, so a directory replaced on disk is what the next
/// request sees.
pub(crate) struct WasiContexts {
    free: Mutex<Vec<ReusableWasi>>,
    /// Whether finished requests' contexts are kept at all.
    reuse: bool,
}

/// Contexts kept per app; requests beyond this many at once build their own and drop them.
const KEPT_CONTEXTS: usize = 4;

impl WasiContexts {
    pub(crate) fn new(permissions: &Permissions) -> Self {
        WasiContexts {
            free: Mutex::new(Vec::new()),
            reuse: permissions.read_dir.is_none(),
        }
    }

    /// A context for one request, with a fresh stderr buffer. A new context is built outside
    /// the lock, so requests of the same app do not wait on each other's building.
    fn take(&self, permissions: &Permissions) -> (ReusableWasi, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let kept = self.free.lock().expect("WASI contexts lock").pop();
        let wasi = match kept {
            Some(wasi) => {
                *wasi.stderr.0.lock().expect("stderr lock") = stderr.clone();
                wasi
            }
            None => ReusableWasi::new(permissions, stderr.clone()),
        };
        (wasi, stderr)
    }

    /// Keep the context of a finished request (the store it served is gone).
    pub(crate) fn give_back(&self, state: RequestState) {
        self.keep(state.wasi);
    }

    fn keep(&self, wasi: ReusableWasi) {
        if !self.reuse {
            return;
        }
        let mut free = self.free.lock().expect("WASI contexts lock");
        if free.len() < KEPT_CONTEXTS {
            free.push(wasi);
        }
    }
}

/// A WASI context whose stderr can be pointed at a new buffer.
struct ReusableWasi {
    ctx: WasiCtx,
    stderr: Stderr,
}

impl ReusableWasi {
    /// A context built for `permissions`, its stderr writing to `buffer`.
    fn new(permissions: &Permissions, buffer: MemoryOutputPipe) -> Self {
        let stderr = Stderr(Arc::new(Mutex::new(buffer)));
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone());
        if permissions.sockets {
            wasi.inherit_network()
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true);
        } else {
            wasi.allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .socket_addr_check(|_: SocketAddr, _: SocketAddrUse| Box::pin(async { false }));
        }
        if let Some(dir) = &permissions.read_dir
            && let Err(err) = wasi.preopened_dir(dir, "/", FsPerms::ReadOnly)
        {
            tracing::warn!(dir = %dir.display(), "cannot open the app's read directory: {err}");
        }
        ReusableWasi {
            ctx: wasi.build(),
            stderr,
        }
    }
}

/// The guest's stderr: every stream the guest opens on it writes to the buffer of the request
/// running now.
#[derive(Clone)]
struct Stderr(Arc<Mutex<MemoryOutputPipe>>);

impl Stderr {
    fn current(&self) -> MemoryOutputPipe {
        self.0.lock().expect("stderr lock").clone()
    }
}

impl IsTerminal for Stderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Stderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        self.current().p2_stream()
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.current().async_stream()
    }
}

/// The data of one request's `Store`.
pub struct RequestState {
    wasi: ReusableWasi,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: FogHttpHooks,
    grants: std::sync::Arc<Grants>,
    namespace: Namespace,
    /// The highest change-log sequence number this request wrote.
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stderr: MemoryOutputPipe,
}

impl RequestState {
    pub(crate) fn new(
        limits: &Limits,
        permissions: &Permissions,
        contexts: &WasiContexts,
        grants: std::sync::Arc<Grants>,
        namespace: Namespace,
        written: std::sync::Arc<std::sync::atomic::AtomicU64>,
        footprint: std::sync::Arc<Footprint>,
    ) -> Self {
        let (wasi, stderr) = contexts.take(permissions);
        RequestState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: FogHttpHooks {
                any_destination: permissions.outbound_http,
                grants: grants.clone(),
            },
            grants,
            namespace,
            written,
            limiter: MemoryLimiter {
                max_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                hit: false,
                held: 0,
                footprint,
            },
            stderr,
        }
    }

    /// The app's config, as `wasi:config/store` reads it.
    pub(crate) fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::new(&self.grants.config)
    }

    pub(crate) fn kv(&mut self) -> KvView<'_> {
        KvView {
            table: &mut self.table,
            namespace: &self.namespace,
            written: &self.written,
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasi:http hooks: outgoing requests are refused unless they go to an origin the app was
/// granted (or a local manifest allows any destination).
struct FogHttpHooks {
    any_destination: bool,
    grants: std::sync::Arc<Grants>,
}

impl FogHttpHooks {
    /// Whether `uri` goes to a destination the app may reach. The URI is what the connection is
    /// made to (wasi:http builds it from the guest's scheme and authority), so checking it is
    /// checking where the request goes.
    fn allows(&self, uri: &http::Uri) -> bool {
        if self.any_destination {
            return true;
        }
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        self.grants
            .allow_outbound
            .iter()
            .any(|origin| origin.matches(scheme, host, uri.port_u16()))
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for FogHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            // Only scheme, host and port: a path or query may carry a token.
            let uri = request.uri();
            tracing::debug!(
                scheme = uri.scheme_str().unwrap_or(""),
                host = uri.host().unwrap_or(""),
                port = uri.port_u16(),
                "outbound HTTP refused: not an origin the app may call"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// The linear memory an app's instances hold, counted as they grow and drop: what its
/// replica really needs, for placement (reported in heartbeats as the peak since the last).
#[derive(Debug, Default)]
pub struct Footprint {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Footprint {
    fn grow(&self, bytes: u64) {
        let now = self.now.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn release(&self, bytes: u64) {
        self.now.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The most held at once since the last call (or since the app was loaded), starting the
    /// next window from what is held now.
    pub fn take_peak(&self) -> u64 {
        let now = self.now.load(Ordering::Relaxed);
        self.peak.swap(now, Ordering::Relaxed).max(now)
    }
}

/// Caps linear memory, remembers whether the cap was what stopped the guest, and counts what
/// the instance holds into its app's [`Footprint`].
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    pub(crate) hit: bool,
    /// Bytes of linear memory this request's instance holds.
    held: u64,
    footprint: std::sync::Arc<Footprint>,
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.footprint.release(self.held);
    }
}

/// The error a memory growth past the cap traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes reached")]
pub(crate) struct MemoryLimitReached(usize);

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryLimitReached(self.max_bytes)));
        }
        // Past the memory's own maximum the growth fails after this: nothing is held.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(true);
        }
        // Called for a memory's creation too (from 0), so `held` is every byte mapped for it.
        let grown = desired.saturating_sub(current) as u64;
        self.held += grown;
        self.footprint.grow(grown);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(stream: &mut dyn OutputStream, text: &str) {
        stream
            .write(bytes::Bytes::copy_from_slice(text.as_bytes()))
            .expect("writing to stderr");
    }

    #[test]
    fn a_reused_context_writes_stderr_only_to_the_request_running_now() {
        let permissions = Permissions::default();
        let contexts = WasiContexts::new(&permissions);

        let (wasi, first) = contexts.take(&permissions);
        let mut stream = wasi.stderr.p2_stream();
        write(&mut *stream, "first");
        let kept = Arc::as_ptr(&wasi.stderr.0);
        contexts.keep(wasi);

        let (wasi, second) = contexts.take(&permissions);
        assert_eq!(
            Arc::as_ptr(&wasi.stderr.0),
            kept,
            "the kept context is the one taken next"
        );
        // A stream the first request opened still writes to the first request's buffer.
        write(&mut *stream, " again");
        write(&mut *wasi.stderr.p2_stream(), "second");
        assert_eq!(&first.contents()[..], b"first again");
        assert_eq!(&second.contents()[..], b"second");
    }

    #[test]
    fn no_more_than_the_kept_number_of_contexts_stay() {
        let permissions = Permissions::default();
        let contexts = WasiContexts::new(&permissions);
        let taken: Vec<_> = (0..KEPT_CONTEXTS + 3)
            .map(|_| contexts.take(&permissions).0)
            .collect();
        for wasi in taken {
            contexts.keep(wasi);
        }
        assert_eq!(contexts.free.lock().unwrap().len(), KEPT_CONTEXTS);
    }

    #[test]
    fn a_context_with_a_preopened_directory_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let permissions = Permissions {
            read_dir: Some(dir.path().to_path_buf()),
            ..Permissions::default()
        };
        let contexts = WasiContexts::new(&permissions);
        let (wasi, _) = contexts.take(&permissions);
        contexts.keep(wasi);
        assert!(contexts.free.lock().unwrap().is_empty());
    }
}
