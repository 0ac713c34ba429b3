//! One loaded app: a manifest and a component hash that serves each request in a fresh, limited
//! store from the runtime's shared compiled component, and meters the fuel it burns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::body::{BodyCut, HostBody, STREAM_CHUNKS};
use crate::code::Compiled;
use crate::error::{Failure, first_line};
use crate::kv::Namespace;
use crate::runtime::Runtime;
use crate::state::{Footprint, Grants, MemoryLimitReached, RequestState, WasiContexts};
use fog_proto::{Limits, Manifest};

/// The response type the host produces.
pub type HostResponse = http::Response<HostBody>;

/// Fuel, requests and failures of one app since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterReading {
    /// Requests handled (including refused ones).
    pub requests: u64,
    /// Requests that ended in a [`Failure`].
    pub failures: u64,
    /// Fuel burnt by all requests.
    pub fuel: u64,
}

#[derive(Debug, Default)]
struct Meter {
    requests: AtomicU64,
    failures: AtomicU64,
    fuel: AtomicU64,
}

/// What the host measured of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestReport {
    /// The host's id for the request (also in the `x-fog-request-id` response header).
    pub request_id: String,
    /// The status sent.
    pub status: u16,
    /// Fuel the guest burnt.
    pub fuel: u64,
    /// Time from arrival to the complete response.
    pub elapsed: Duration,
    /// Why the guest's answer was replaced by an error, if it was.
    pub failure: Option<Failure>,
}

/// An app ready to serve: its manifest, its component's hash, its limits and state attached.
///
/// An app owns no machine code: its compiled component is the runtime's, shared with every app
/// of the same component, mapped on the first request and possibly dropped while the app idles.
pub struct App {
    runtime: Arc<Runtime>,
    manifest: Manifest,
    sha256: String,
    /// The compiled component as last used, without keeping it in memory: the runtime's cache
    /// decides that.
    compiled: std::sync::Mutex<Weak<Compiled>>,
    namespace: Namespace,
    permits: Arc<Semaphore>,
    meter: Meter,
    /// Linear memory its instances hold (shared with each request's limiter).
    footprint: Arc<Footprint>,
    /// What the app is granted now; swapped when the control plane changes it.
    grants: std::sync::RwLock<Arc<Grants>>,
    /// WASI contexts its finished requests left for the next ones.
    contexts: Arc<WasiContexts>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.manifest.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// How long a guest may take to return after its response is complete.
const GUEST_RETURN_GRACE: Duration = Duration::from_millis(50);

/// How the guest's task ended.
struct GuestEnd {
    result: wasmtime::Result<()>,
    memory_hit: bool,
    stderr: Bytes,
}

/// The error the epoch callback traps with once the deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("request deadline passed")]
struct DeadlinePassed;

impl App {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        manifest: Manifest,
        sha256: String,
        namespace: Namespace,
    ) -> App {
        let permits = Arc::new(Semaphore::new(manifest.limits.max_concurrency as usize));
        let contexts = Arc::new(WasiContexts::new(&manifest.permissions));
        App {
            runtime,
            grants: std::sync::RwLock::new(Arc::new(Grants::of(&manifest))),
            manifest,
            sha256,
            compiled: std::sync::Mutex::new(Weak::new()),
            namespace,
            permits,
            meter: Meter::default(),
            footprint: Arc::new(Footprint::default()),
            contexts,
        }
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The sha256 of the component, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The app's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Give the app the grants `manifest` carries (its outbound origins): requests that start
    /// from now on see them, requests in flight keep the ones they started with.
    pub fn regrant(&self, manifest: &Manifest) {
        *self.grants.write().expect("grants lock") = Arc::new(Grants::of(manifest));
    }

    /// The app's key-value state, for host-side inspection.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Requests, failures and fuel since the app was loaded.
    pub fn meter(&self) -> MeterReading {
        MeterReading {
            requests: self.meter.requests.load(Ordering::Relaxed),
            failures: self.meter.failures.load(Ordering::Relaxed),
            fuel: self.meter.fuel.load(Ordering::Relaxed),
        }
    }

    /// The most linear memory its instances held at once since the last call (see
    /// [`Footprint::take_peak`]).
    pub fn take_memory_peak(&self) -> u64 {
        self.footprint.take_peak()
    }

    /// Requests of this app running now.
    pub fn in_flight(&self) -> u32 {
        self.manifest.limits.max_concurrency - self.permits.available_permits() as u32
    }

    /// The app's compiled component: the one it used last if still in memory, else the
    /// runtime's (mapped from the on-disk cache off the async threads if need be).
    async fn compiled(&self) -> Result<Arc<Compiled>, Failure> {
        let last = self.compiled.lock().expect("compiled lock").upgrade();
        if let Some(compiled) = last {
            self.runtime.code.touch(&compiled);
            return Ok(compiled);
        }
        let runtime = self.runtime.clone();
        let sha256 = self.sha256.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.compiled(&sha256))
            .await
            .map_err(|err| Failure::Host(format!("loading the component: {err}")))?
            .map_err(|err| Failure::Host(first_line(&err.to_string())))?;
        *self.compiled.lock().expect("compiled lock") = Arc::downgrade(&compiled);
        Ok(compiled)
    }

    /// Whether this app's compiled component is in memory now (its own first request or
    /// another app's of the same component put it there).
    pub fn is_resident(&self) -> bool {
        self.runtime.code.contains(&self.sha256)
    }

    /// Serve one request. Never fails: every problem becomes an error response with a reason.
    pub async fn handle<B>(&self, request: http::Request<B>) -> (HostResponse, RequestReport)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let request_id = format!(
            "{:x}",
            self.runtime.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let fuel_used = Arc::new(AtomicU64::new(0));
        let fenced = self.namespace.mode() == crate::replica::Mode::Fenced;
        let outcome = match self.permits.clone().try_acquire_owned() {
            // Being moved away: nothing new starts here (routers retry on the new device).
            Ok(_) if fenced => Err(Failure::Moved),
            // A streamed response keeps its permit until its last byte.
            Ok(permit) if fog_net::trace::enabled() => {
                let span = tracing::info_span!(
                    target: fog_net::trace::TARGET,
                    "guest",
                    fog.app = %self.manifest.name,
                    fog.request_id = %request_id,
                    fog.fuel = tracing::field::Empty,
                );
                let outcome = self
                    .run(request, started, fuel_used.clone(), permit)
                    .instrument(span.clone())
                    .await;
                span.record("fog.fuel", fuel_used.load(Ordering::Relaxed));
                outcome
            }
            Ok(permit) => self.run(request, started, fuel_used.clone(), permit).await,
            Err(_) => Err(Failure::Overloaded {
                limit: self.manifest.limits.max_concurrency,
            }),
        };
        let fuel = fuel_used.load(Ordering::Relaxed);
        self.meter.requests.fetch_add(1, Ordering::Relaxed);
        self.meter.fuel.fetch_add(fuel, Ordering::Relaxed);
        let (mut response, failure) = match outcome {
            Ok(response) => (response, None),
            Err(failure) => {
                self.meter.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app = %self.manifest.name, request_id, kind = failure.kind().as_str(), "{failure}");
                (failure_response(&failure), Some(failure))
            }
        };
        let headers = response.headers_mut();
        headers.insert("x-fog-request-id", header_value(&request_id));
        headers.insert("x-fog-fuel", header_value(&fuel.to_string()));
        let report = RequestReport {
            request_id,
            status: response.status().as_u16(),
            fuel,
            elapsed: started.elapsed(),
            failure,
        };
        tracing::debug!(app = %self.manifest.name, request_id = report.request_id, status = report.status, fuel, elapsed_us = report.elapsed.as_micros() as u64, "request");
        (response, report)
    }

    async fn run<B>(
        &self,
        request: http::Request<B>,
        started: Instant,
        fuel_used: Arc<AtomicU64>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<HostResponse, Failure>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits = self.manifest.limits;
        let deadline = started + limits.timeout;
        let timeout = Failure::Timeout {
            timeout_ms: limits.timeout.as_millis() as u64,
        };

        // The body streams into the guest's `incoming-body` as the guest reads it (inside its
        // run, so under its deadline and fuel), cut at the app's limit; a declared length over
        // the limit is refused before anything runs.
        let (mut parts, body) = request.into_parts();
        // A body refused or cut is still read for a while, so the visitor gets the 413.
        let body = fog_net::drain::DrainOnDrop::new(body);
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limits.max_request_body) {
            return Err(Failure::RequestTooLarge {
                limit: limits.max_request_body,
            });
        }
        let (body, cut) = crate::upload::LimitedUpload::new(body, limits.max_request_body);
        let too_large = || {
            cut.load(Ordering::Relaxed)
                .then_some(Failure::RequestTooLarge {
                    limit: limits.max_request_body,
                })
        };
        if !parts.headers.contains_key(http::header::HOST) && parts.uri.authority().is_none() {
            parts.headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let request = http::Request::from_parts(parts, body);

        let compiled = self.compiled().await?;
        let written = Arc::new(AtomicU64::new(0));
        let grants = self.grants.read().expect("grants lock").clone();
        let durable = grants.durable;
        let mut store = Store::new(
            compiled.pre.engine(),
            RequestState::new(
                &limits,
                &self.manifest.permissions,
                &self.contexts,
                grants,
                self.namespace.clone(),
                written.clone(),
                self.footprint.clone(),
            ),
        );
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(limits.fuel).map_err(host_error)?;
        store.set_epoch_deadline(1);
        let budget = limits.fuel;
        let seen = fuel_used.clone();
        store.epoch_deadline_callback(move |ctx| {
            seen.store(budget - ctx.get_fuel().unwrap_or(0), Ordering::Relaxed);
            if Instant::now() >= deadline {
                return Err(wasmtime::Error::new(DeadlinePassed));
            }
            // Yield to the executor at every tick so one busy guest cannot starve the others.
            Ok(UpdateDeadline::Yield(1))
        });

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(host_error)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(host_error)?;
        let task_fuel = fuel_used.clone();
        let contexts = self.contexts.clone();
        // The guest runs inside this request's own task, beside the code that reads its
        // response: no spawn, no cross-thread wake-up per request. Dropping the future (deadline,
        // oversized body) drops the store and so stops the guest.
        let guest = Box::pin(async move {
            let result = async {
                let proxy = compiled.pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await
            }
            .await;
            task_fuel.store(budget - store.get_fuel().unwrap_or(0), Ordering::Relaxed);
            let state = store.into_data();
            let end = GuestEnd {
                result,
                memory_hit: state.limiter.hit,
                stderr: state.stderr.contents(),
            };
            // Only a store that ran to its end gives its context back; one dropped midway
            // (deadline, visitor gone) takes its context with it.
            contexts.give_back(state);
            end
        });
        // Wait for the response head, then read the body up to the limit; past STREAM_ABOVE
        // bytes, stop reading and stream the rest.
        let collect = async {
            match receiver.await {
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    let limit = limits.max_response_body as usize;
                    let mut body = Limited::new(body, limit);
                    let mut whole = bytes::BytesMut::new();
                    let stream_above = crate::body::buffered_up_to(&limits);
                    loop {
                        match body.frame().await {
                            None => break Ok((parts, Reply::Whole(whole.freeze()))),
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    whole.extend_from_slice(&data);
                                }
                                if whole.len() > stream_above {
                                    break Ok((parts, Reply::Stream(whole.freeze(), body)));
                                }
                            }
                            Some(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                                break Err(Some(Failure::ResponseTooLarge {
                                    limit: limits.max_response_body,
                                }));
                            }
                            // The body broke off: the guest's end says why.
                            Some(Err(_)) => break Err(None),
                        }
                    }
                }
                Ok(Err(code)) => Err(Some(Failure::NoResponse(format!(
                    "guest set an error: {code:?}"
                )))),
                Err(_) => Err(None),
            }
        };
        let mut guest = guest;
        let exchange = async {
            tokio::pin!(collect);
            let mut ended: Option<GuestEnd> = None;
            let collected = loop {
                tokio::select! {
                    collected = &mut collect => break collected,
                    end = &mut guest, if ended.is_none() => ended = Some(end),
                }
            };
            match collected {
                Err(Some(failure)) => Err(failure),
                Err(None) => {
                    // No response or a broken body: the guest's end says why.
                    let end = match ended {
                        Some(end) => end,
                        None => (&mut guest).await,
                    };
                    Err(classify(end, &limits))
                }
                Ok((parts, Reply::Stream(prefix, body))) => {
                    Ok((parts, Reply::Streaming(prefix, body, ended)))
                }
                Ok((parts, body)) => {
                    // A guest that failed before its body was read to the end (a trap, the
                    // deadline firing inside the guest just before the host's timer) leaves a
                    // body that merely stops: it is not a complete response.
                    if let Some(end) = ended {
                        if end.result.is_err() {
                            return Err(classify(end, &limits));
                        }
                        return Ok((parts, body));
                    }
                    // The response is complete; let the guest return (briefly) so the fuel count
                    // is exact, but never hold the visitor for it.
                    let end = tokio::time::timeout(GUEST_RETURN_GRACE, &mut guest)
                        .await
                        .ok();
                    if let Some(GuestEnd {
                        result: Err(err), ..
                    }) = end
                    {
                        tracing::debug!(app = %self.manifest.name, "guest failed after responding: {}", first_line(&format!("{err:#}")));
                    }
                    Ok((parts, body))
                }
            }
        };
        let exchanged = tokio::time::timeout_at(deadline.into(), exchange).await;
        // A body cut at the limit makes the guest fail or answer as it sees fit: either way the
        // visitor learns the real reason (unless a streamed answer already left).
        let (parts, reply) = match exchanged {
            Err(_) => return Err(too_large().unwrap_or(timeout)),
            Ok(Err(failure)) => return Err(too_large().unwrap_or(failure)),
            Ok(Ok((_, Reply::Whole(_)))) if cut.load(Ordering::Relaxed) => {
                return Err(too_large().expect("cut"));
            }
            Ok(Ok(exchanged)) => exchanged,
        };
        // Acknowledge a write only once the synchronous followers hold it, and for a durable
        // app once it is on this host's disk too (for a streamed response, the writes made
        // before its head). A flush covers every write committed before it is asked for, so
        // every write counted in `seq` here.
        let seq = written.load(Ordering::Acquire);
        if seq > 0 {
            let stable = async {
                if durable {
                    self.runtime.durable.sync().await
                } else {
                    Ok(())
                }
            };
            let (stable, ()) = tokio::join!(stable, self.namespace.wait_replicated(seq));
            if let Err(err) = stable {
                tracing::error!(app = %self.manifest.name, "a durable write is not on disk: {err}");
                return Err(Failure::Host(err.to_string()));
            }
            // Cut off from the control planes while it waited (a follower may be promoted in
            // its place): the write is not acknowledged. Not "follower": it ran, so it must not
            // be retried elsewhere.
            if !self.namespace.confirmed() {
                return Err(Failure::Host(
                    "no control plane confirmed this primary: the write is not acknowledged".into(),
                ));
            }
        }
        let body = match reply {
            Reply::Whole(bytes) => {
                let mut response = http::Response::from_parts(parts, HostBody::full(bytes));
                let headers = response.headers_mut();
                headers.remove(http::header::CONTENT_LENGTH);
                headers.remove(http::header::TRANSFER_ENCODING);
                return Ok(response);
            }
            Reply::Stream(..) => unreachable!("turned into Streaming above"),
            Reply::Streaming(prefix, body, ended) => {
                let (sender, chunks) = tokio::sync::mpsc::channel(STREAM_CHUNKS);
                let stream = StreamTask {
                    app: self.manifest.name.clone(),
                    limits,
                    deadline,
                    permit,
                };
                tokio::spawn(stream.run(prefix, body, guest, ended, sender));
                HostBody::stream(chunks)
            }
        };
        let mut response = http::Response::from_parts(parts, body);
        response
            .headers_mut()
            .remove(http::header::TRANSFER_ENCODING);
        Ok(response)
    }
}

/// What the guest answered with: the whole body, or the first bytes of one that streams.
enum Reply<B> {
    Whole(Bytes),
    Stream(Bytes, B),
    Streaming(Bytes, B, Option<GuestEnd>),
}

/// The rest of a streamed response: drives the guest and forwards its body in bounded chunks
/// until the end, the deadline or the size limit (then the visitor's connection is cut).
struct StreamTask {
    app: String,
    limits: Limits,
    deadline: Instant,
    /// The app's concurrency permit, held until the last byte.
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl StreamTask {
    async fn run<B, G>(
        self,
        prefix: Bytes,
        mut body: B,
        guest: G,
        ended: Option<GuestEnd>,
        sender: tokio::sync::mpsc::Sender<Result<Bytes, BodyCut>>,
    ) where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        G: Future<Output = GuestEnd> + Unpin,
    {
        enum Pumped {
            Complete,
            VisitorGone,
            TooLarge,
            Broken,
        }
        let pump = async {
            if sender.send(Ok(prefix)).await.is_err() {
                return Pumped::VisitorGone;
            }
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data()
                            && sender.send(Ok(data)).await.is_err()
                        {
                            return Pumped::VisitorGone;
                        }
                    }
                    Err(err) => {
                        let err: Box<dyn std::error::Error + Send + Sync> = err.into();
                        return if err.is::<http_body_util::LengthLimitError>() {
                            Pumped::TooLarge
                        } else {
                            Pumped::Broken
                        };
                    }
                }
            }
            Pumped::Complete
        };
        let drive = async {
            let mut guest = guest;
            let mut end = ended;
            tokio::pin!(pump);
            let pumped = loop {
                tokio::select! {
                    pumped = &mut pump => break pumped,
                    done = &mut guest, if end.is_none() => end = Some(done),
                }
            };
            match pumped {
                Pumped::Complete | Pumped::VisitorGone => None,
                Pumped::TooLarge => Some(Failure::ResponseTooLarge {
                    limit: self.limits.max_response_body,
                }),
                Pumped::Broken => {
                    // The guest's end says why its body broke off.
                    let end = match end {
                        Some(end) => Some(end),
                        None => tokio::time::timeout(GUEST_RETURN_GRACE, guest).await.ok(),
                    };
                    Some(match end {
                        Some(end) => classify(end, &self.limits),
                        None => Failure::Trap("the response body broke off".into()),
                    })
                }
            }
            // Dropping the guest here (visitor gone, limit) stops it.
        };
        let cut = tokio::time::timeout_at(self.deadline.into(), drive)
            .await
            .unwrap_or(Some(Failure::Timeout {
                timeout_ms: self.limits.timeout.as_millis() as u64,
            }));
        if let Some(failure) = cut {
            tracing::warn!(app = %self.app, kind = failure.kind().as_str(), "streamed response cut: {failure}");
            let _ = sender.send(Err(BodyCut(failure))).await;
        }
        drop(self.permit);
    }
}

/// Turn how a guest ended into the failure a visitor is told about.
fn classify(end: GuestEnd, limits: &Limits) -> Failure {
    let err = match end.result {
        Ok(()) => return Failure::NoResponse("handler returned without setting a response".into()),
        Err(err) => err,
    };
    if let Some(refused) = err.downcast_ref::<crate::replica::WriteRefused>() {
        return match refused.0 {
            crate::replica::Mode::Fenced => Failure::Moved,
            _ => Failure::Follower,
        };
    }
    if end.memory_hit || err.is::<MemoryLimitReached>() {
        return Failure::MemoryExceeded {
            limit_mib: limits.memory_bytes >> 20,
        };
    }
    if err.is::<DeadlinePassed>() {
        return Failure::Timeout {
            timeout_ms: limits.timeout.as_millis() as u64,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::FuelExhausted {
            budget: limits.fuel,
        },
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        Some(Trap::Interrupt) => Failure::Timeout {
            timeout_ms: limits.timeout.as_millis() as u64,
        },
        Some(trap) => match panic_message(&end.stderr) {
            Some(panic) => Failure::Trap(format!("{trap} ({panic})")),
            None => Failure::Trap(trap.to_string()),
        },
        None => Failure::Trap(first_line(&format!("{err:#}"))),
    }
}

/// The panic line a Rust guest printed to stderr before aborting, if any.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let mut lines = text.lines();
    let at = lines.by_ref().find(|line| line.contains("panicked at"))?;
    let location = at
        .split("panicked at")
        .nth(1)
        .unwrap_or("")
        .trim()
        .trim_end_matches(':');
    let message = lines.next().unwrap_or("").trim();
    let mut out = format!("panicked at {location}: {message}");
    out.truncate(300);
    Some(out)
}

fn host_error(err: wasmtime::Error) -> Failure {
    Failure::Host(first_line(&format!("{err:#}")))
}

fn header_value(text: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(text).unwrap_or_else(|_| http::HeaderValue::from_static("-"))
}

/// The error response for `failure`: its status and a one-line plain-text reason.
pub fn failure_response(failure: &Failure) -> HostResponse {
    let mut response = http::Response::new(HostBody::full(format!("{failure}\n")));
    *response.status_mut() = http::StatusCode::from_u16(failure.status())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        fog_proto::ERROR_HEADER,
        http::HeaderValue::from_static(failure.kind().as_str()),
    );
    if matches!(failure, Failure::Overloaded { .. }) {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_quoted() {
        let stderr = b"\nthread '<unnamed>' panicked at src/lib.rs:10:9:\nhostile guest panicked on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("panicked at src/lib.rs:10:9: hostile guest panicked on purpose")
        );
        assert_eq!(panic_message(b"nothing here"), None);
    }

    #[test]
    fn failures_map_to_statuses() {
        assert_eq!(Failure::Overloaded { limit: 1 }.status(), 503);
        assert_eq!(Failure::RequestTooLarge { limit: 1 }.status(), 413);
        assert_eq!(Failure::FuelExhausted { budget: 1 }.status(), 500);
        let response = failure_response(&Failure::Overloaded { limit: 4 });
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["x-fog-error"], "overloaded");
    }
}
