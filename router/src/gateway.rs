//! The plain-HTTP gateway: app lookup, least-loaded replica choice, retries, clear errors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fog_htx::mix::{MixMode, Relay};
use fog_proto::ErrorKind;
use fog_proto::api::{HtxEndpoint, ROUTES_VERSION_HEADER, RelayInfo, Route, RouteMode};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::Instrument;

use fog_htx::dial::{Dialer, HtxConnector};

use fog_net::control_urls::ControlUrls;
use fog_net::limit::{Rate, RateLimit, retry_after_secs, visitor_key};

use crate::error::ControlError;

/// The response body the gateway sends.
pub type GatewayBody = BoxBody<Bytes, hyper::Error>;

/// The request body the gateway forwards: a kept copy, or the visitor's body streaming through.
type ForwardBody = UnsyncBoxBody<Bytes, BoxError>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The control planes (each call goes to the one that answered last and fails over to
    /// the others).
    pub control: ControlUrls,
    /// How often routes are refreshed.
    pub refresh: Duration,
    /// Largest request body kept so a retry can resend it. A larger one streams to one replica
    /// (the app's primary) and is not resent; the host enforces the app's own body limit.
    pub retry_body: usize,
    /// How long a replica that failed is skipped.
    pub suspect_for: Duration,
    /// How many replicas one request may try per round.
    pub attempts: usize,
    /// How long a request is held (and retried) while no replica can take it.
    pub hold: Duration,
    /// How long a request is held while the app's primary is evidently changing (its replicas
    /// answer that they only follow, or that the app is moving away): a handover's fencing
    /// phase lasts until the new primary holds the last write, bounded by the control plane's
    /// fence timeout (30 s), and the visitor should see a slow answer, not a 502.
    pub handover_hold: Duration,
    /// Deadline of one forwarded request.
    pub timeout: Duration,
    /// Forward to hosts over HTX when they offer it (plain HTTP is for local development).
    pub htx_data_plane: bool,
    /// How many relays data-plane connections go through.
    pub mix: MixMode,
    /// Seed of the relay paths (the same seed picks the same paths).
    pub mix_seed: Vec<u8>,
    /// Requests each visitor address may make (beyond it: 429 with `Retry-After`); `None`
    /// (the library's default; `fog router` sets [`DEFAULT_VISITOR_RATE`]) for no limit.
    /// Keyed by the TCP peer: visitors arriving through a local proxy share one bucket.
    pub visitor_rate: Option<Rate>,
}

/// The default per-visitor limit: far above what a person's browser asks for (a page and its
/// assets come in one burst), far below a flood.
pub const DEFAULT_VISITOR_RATE: u32 = 100;
/// The default burst on top of [`DEFAULT_VISITOR_RATE`].
pub const DEFAULT_VISITOR_BURST: u32 = 200;

impl GatewayConfig {
    /// Defaults for the control planes at `control`.
    pub fn new(control: ControlUrls) -> Self {
        GatewayConfig {
            control,
            refresh: Duration::from_millis(500),
            retry_body: 1 << 20,
            suspect_for: Duration::from_secs(3),
            attempts: 3,
            hold: Duration::from_secs(10),
            handover_hold: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            htx_data_plane: true,
            mix: MixMode::Performance,
            mix_seed: Vec::new(),
            visitor_rate: None,
        }
    }
}

#[derive(Debug)]
struct ReplicaState {
    device: String,
    addr: Option<String>,
    htx: Option<HtxEndpoint>,
    in_flight: AtomicU32,
    /// How long this replica took to answer lately (to the response's head, smoothed over
    /// about four answers), in microseconds; 0 until its first answer. Among equally loaded
    /// replicas of an active-active app the fastest lately is tried first, so a visitor near
    /// one device is not sent across the world to another that is just as idle.
    latency_us: AtomicU32,
    suspect_until: Mutex<Option<Instant>>,
}

impl ReplicaState {
    fn new(device: String, addr: Option<String>, htx: Option<HtxEndpoint>) -> ReplicaState {
        ReplicaState {
            device,
            addr,
            htx,
            in_flight: AtomicU32::new(0),
            latency_us: AtomicU32::new(0),
            suspect_until: Mutex::new(None),
        }
    }

    /// Fold one answer's time into `latency_us` (the first answer sets it).
    fn answered_in(&self, took: Duration) {
        let sample = u32::try_from(took.as_micros()).unwrap_or(u32::MAX).max(1);
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(match old {
                    0 => sample,
                    old => old - old / 4 + sample / 4,
                })
            });
    }
}

/// How one app's requests are spread, over which replicas, and its Betanet id.
type AppRoute = (RouteMode, Vec<Arc<ReplicaState>>, Option<String>);

/// The gateway: routes from the control plane and a pooled client to the hosts.
pub struct Gateway {
    config: GatewayConfig,
    routes: RwLock<HashMap<String, AppRoute>>,
    /// Counts changes to the set of apps routed (an app published or removed).
    apps_changed: tokio::sync::watch::Sender<u64>,
    client: Client<HttpConnector, ForwardBody>,
    /// Hosts' HTX connections, and the pooled client whose connections are HTX streams.
    dialer: Arc<Dialer>,
    htx_client: Client<HtxConnector, ForwardBody>,
    /// Each visitor address's token bucket.
    visitors: Option<RateLimit<IpAddr>>,
    /// Set once metrics are exported (`--metrics-listen`); nothing is recorded otherwise.
    metrics: std::sync::OnceLock<Arc<crate::metrics::RouterMetrics>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Headers that describe the visitor or the hop, dropped before forwarding.
const HOP_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
];

fn plain(status: u16, reason: &str) -> http::Response<GatewayBody> {
    let body = Full::new(Bytes::from(format!("{reason}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = http::Response::new(body);
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Gateway {
    /// A gateway with no routes yet.
    pub fn new(config: GatewayConfig) -> Arc<Gateway> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let seed = if config.mix_seed.is_empty() {
            let mut seed = vec![0u8; 16];
            getrandom::fill(&mut seed).expect("the operating system's random source");
            seed
        } else {
            config.mix_seed.clone()
        };
        let dialer = Dialer::new(fog_htx::handshake::StaticKey::generate(), config.mix, seed);
        let htx_client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(HtxConnector(dialer.clone()));
        Arc::new(Gateway {
            visitors: config.visitor_rate.map(RateLimit::new),
            config,
            routes: RwLock::new(HashMap::new()),
            apps_changed: tokio::sync::watch::channel(0).0,
            client,
            dialer,
            htx_client,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Take a token from `visitor`'s bucket; the 429 (with `Retry-After`) to answer if it has
    /// none.
    fn refuse_visitor(&self, visitor: IpAddr) -> Option<http::Response<GatewayBody>> {
        let visitors = self.visitors.as_ref()?;
        visitors.check(&visitor_key(visitor)).err().map(|wait| {
            let seconds = retry_after_secs(wait);
            let mut response = plain(
                429,
                &format!("too many requests from your address: retry after {seconds} s"),
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
            response
        })
    }

    /// Visitor addresses the rate limit currently holds state for.
    pub fn limited_visitors(&self) -> usize {
        self.visitors.as_ref().map_or(0, RateLimit::keys)
    }

    /// Serve one request from `visitor` (its address, when it has one): the rate limit, then
    /// [`Gateway::handle`].
    pub async fn handle_from<B>(
        &self,
        request: http::Request<B>,
        visitor: Option<IpAddr>,
    ) -> http::Response<GatewayBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(visitor) = visitor
            && let Some(refusal) = self.refuse_visitor(visitor)
        {
            return refusal;
        }
        self.handle(request).await
    }

    /// Record every visitor request in `metrics` from now on.
    pub(crate) fn set_metrics(&self, metrics: Arc<crate::metrics::RouterMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The metrics, if exported.
    pub(crate) fn metrics(&self) -> Option<&Arc<crate::metrics::RouterMetrics>> {
        self.metrics.get()
    }

    /// Apps routed and live replicas among them.
    pub(crate) fn routed(&self) -> (usize, usize) {
        let routes = self.routes.read().expect("routes lock");
        (routes.len(), routes.values().map(|(_, r, _)| r.len()).sum())
    }

    /// The app whose Betanet id (hex sha256 of its key) is `id`.
    pub fn app_by_betanet_id(&self, id: &str) -> Option<String> {
        let routes = self.routes.read().expect("routes lock");
        routes
            .iter()
            .find(|(_, (_, _, betanet))| {
                betanet
                    .as_deref()
                    .is_some_and(|b| b.eq_ignore_ascii_case(id))
            })
            .map(|(app, _)| app.clone())
    }

    /// Replace the routes, keeping the load counters of replicas that stay.
    pub fn set_routes(&self, routes: Vec<Route>) {
        self.dialer.learn(routes.iter().flat_map(|route| {
            route.replicas.iter().filter_map(|r| {
                let htx = r.htx.as_ref()?;
                let key: [u8; 32] = hex::decode(&htx.key).ok()?.try_into().ok()?;
                Some((htx.addr.clone()?, key))
            })
        }));
        let mut table = self.routes.write().expect("routes lock");
        let apps_differ =
            table.len() != routes.len() || routes.iter().any(|r| !table.contains_key(&r.app));
        let mut next = HashMap::new();
        for route in routes {
            let old = table
                .remove(&route.app)
                .map(|(_, old, _)| old)
                .unwrap_or_default();
            let replicas = route
                .replicas
                .into_iter()
                .map(|r| {
                    old.iter()
                        .find(|o| o.device == r.device && o.addr == r.addr && o.htx == r.htx)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(ReplicaState::new(r.device, r.addr, r.htx)))
                })
                .collect();
            next.insert(route.app, (route.mode, replicas, route.betanet));
        }
        *table = next;
        drop(table);
        if apps_differ {
            self.apps_changed.send_modify(|n| *n += 1);
        }
    }

    /// Hosts' HTX connections: the ones hosts attached with, and the ones dialled.
    pub fn dialer(&self) -> &Arc<Dialer> {
        &self.dialer
    }

    /// GET `path` from the control plane: its status and body, whatever the status.
    pub(crate) async fn control_get(
        &self,
        path: &str,
    ) -> Result<(http::StatusCode, Bytes), ControlError> {
        let (status, _, body) = self
            .call(
                http::Method::GET,
                path,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(10),
            )
            .await?;
        Ok((status, body))
    }

    /// POST `body` to `path`, signed with `identity`, every 10 s (every 2 s while refused) until
    /// `shutdown` resolves; a refusal is logged once per change. How routers keep their fronts
    /// and attach endpoints listed.
    pub(crate) async fn register_every(
        &self,
        path: &str,
        body: Vec<u8>,
        identity: fog_proto::auth::Identity,
        what: &str,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut last_error: Option<ControlError> = None;
        loop {
            match self.post_signed(path, body.clone(), &identity).await {
                Ok(_) => {
                    if last_error.take().is_some() {
                        tracing::info!("{what} registered");
                    }
                }
                Err(err) => {
                    if last_error.as_ref() != Some(&err) {
                        tracing::warn!("cannot register the {what}: {err}");
                    }
                    last_error = Some(err);
                }
            }
            let wait = if last_error.is_some() { 2 } else { 10 };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_secs(wait)) => {}
            }
        }
    }

    /// Marks each change to the set of apps routed: an app published or removed.
    pub fn apps_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.apps_changed.subscribe()
    }

    /// Keep the relays of mix paths current (every 5 s) until `shutdown` resolves; does nothing
    /// in performance mode.
    pub async fn run_relay_refresher(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        if self.config.mix == MixMode::Performance || !self.config.htx_data_plane {
            return;
        }
        tokio::pin!(shutdown);
        loop {
            match self.get_json::<Vec<RelayInfo>>("/v1/relays").await {
                Ok(relays) => self.dialer.set_relays(
                    relays
                        .into_iter()
                        .filter_map(|r| {
                            let key = hex::decode(&r.key).ok()?.try_into().ok()?;
                            Some(Relay { addr: r.addr, key })
                        })
                        .collect(),
                ),
                Err(err) => tracing::warn!("cannot fetch relays: {err}"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// POST `{}` to the control plane, signed with `identity`; decode the JSON answer.
    pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        identity: &fog_proto::auth::Identity,
    ) -> Result<T, ControlError> {
        let body = self.post_signed(path, b"{}".to_vec(), identity).await?;
        serde_json::from_slice(&body).map_err(|e| ControlError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// POST `body` to the control plane, signed with `identity`; the answer's body.
    pub(crate) async fn post_signed(
        &self,
        path: &str,
        body: Vec<u8>,
        identity: &fog_proto::auth::Identity,
    ) -> Result<Bytes, ControlError> {
        use fog_proto::auth::{self, AUTH_HEADER, META_HEADER};
        let signature = identity.sign("POST", path, auth::now_s(), &auth::sha256_hex(&body), "");
        let mut headers = http::HeaderMap::new();
        let value = |v: &str| {
            http::HeaderValue::from_str(v).map_err(|e| ControlError::Request {
                path: path.to_string(),
                reason: e.to_string(),
            })
        };
        headers.insert(AUTH_HEADER, value(&signature)?);
        headers.insert(META_HEADER, value("")?);
        headers.insert(http::header::CONTENT_TYPE, value("application/json")?);
        let (status, _, body) = self
            .call(
                http::Method::POST,
                path,
                headers,
                Bytes::from(body),
                Duration::from_secs(10),
            )
            .await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(ControlError::status(path, status, &body))
    }

    /// GET `path` from the control plane: its headers and body, if the status is a success.
    async fn get(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<(http::HeaderMap, Bytes), ControlError> {
        let (status, headers, body) = self
            .call(
                http::Method::GET,
                path,
                http::HeaderMap::new(),
                Bytes::new(),
                timeout,
            )
            .await?;
        if !status.is_success() {
            return Err(ControlError::status(path, status, &body));
        }
        Ok((headers, body))
    }

    /// GET a JSON document from the control plane.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ControlError> {
        let (_, body) = self.get(path, Duration::from_secs(10)).await?;
        serde_json::from_slice(&body).map_err(|e| ControlError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// Send one request to the control plane within `timeout`; the whole answer (at most
    /// 16 MiB), whatever its status, from the first control plane that neither fails nor
    /// answers 503.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), ControlError> {
        let answer = self
            .config
            .control
            .try_each(|base| {
                let mut request = http::Request::builder()
                    .method(method.clone())
                    .uri(format!("{base}{path}"));
                if let Some(h) = request.headers_mut() {
                    h.extend(headers.clone());
                }
                let request =
                    request
                        .body(Full::new(body.clone()))
                        .map_err(|e| ControlError::Request {
                            path: path.to_string(),
                            reason: e.to_string(),
                        });
                async move {
                    let (status, headers, body) = self.call_one(request?, timeout).await?;
                    if status == http::StatusCode::SERVICE_UNAVAILABLE {
                        return Err(ControlError::status(path, status, &body));
                    }
                    Ok((status, headers, body))
                }
            })
            .await;
        match answer {
            // The last control plane tried answered 503: that is its answer.
            Err(ControlError::Status {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                reason,
                ..
            }) => Ok((
                http::StatusCode::SERVICE_UNAVAILABLE,
                http::HeaderMap::new(),
                Bytes::from(reason),
            )),
            other => other,
        }
    }

    /// [`Gateway::call`] to one control plane.
    async fn call_one(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), ControlError> {
        let path = request.uri().path().to_string();
        let unreachable = |reason: String| ControlError::Unreachable {
            path: path.clone(),
            reason,
        };
        let request = request.map(|body| body.map_err(|never| match never {}).boxed_unsync());
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| ControlError::Timeout {
                path: path.clone(),
                after: timeout,
            })?
            .map_err(|e| unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, 16 << 20)
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// Keep the routes current until `shutdown` resolves: a long-poll that the control plane
    /// answers as soon as routes change (or every few seconds), retried every `refresh` on error.
    pub async fn run_refresher(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut warned = false;
        let mut version: Option<u64> = None;
        loop {
            let fetched = tokio::select! {
                () = &mut shutdown => return,
                fetched = self.fetch_routes(version) => fetched,
            };
            match fetched {
                Ok((routes, next)) => {
                    self.set_routes(routes);
                    version = next;
                    warned = false;
                    continue;
                }
                Err(err) if !warned => {
                    tracing::warn!("cannot refresh routes from {}: {err}", self.config.control);
                    warned = true;
                }
                Err(_) => {}
            }
            version = None;
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.refresh) => {}
            }
        }
    }

    async fn fetch_routes(
        &self,
        after: Option<u64>,
    ) -> Result<(Vec<Route>, Option<u64>), ControlError> {
        let query = after.map(|v| format!("?after={v}")).unwrap_or_default();
        let path = format!("/v1/routes{query}");
        let (headers, body) = self.get(&path, Duration::from_secs(30)).await?;
        let version = headers
            .get(ROUTES_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let routes = serde_json::from_slice(&body).map_err(|e| ControlError::Malformed {
            path,
            reason: e.to_string(),
        })?;
        Ok((routes, version))
    }

    /// The app a request is for, and the path to forward.
    fn app_of<B>(request: &http::Request<B>) -> Option<(String, String)> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Some(app) = fog_net::app_from_host(request) {
            return Some((app.to_string(), path_and_query));
        }
        let rest = path_and_query.strip_prefix("/apps/")?;
        let (app, tail) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let tail = if tail.is_empty() || tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_string()
        };
        (!app.is_empty()).then(|| (app.to_string(), tail))
    }

    /// Replicas of `app` to try, suspects last: in route order (primary first) for
    /// active-passive apps; for active-active ones least-loaded first and, among equally loaded
    /// ones, the fastest to answer lately (one never measured before the others, so each gets
    /// measured; a fast one that slows down falls behind and the others are measured again).
    fn candidates(&self, app: &str) -> Option<Vec<Arc<ReplicaState>>> {
        let routes = self.routes.read().expect("routes lock");
        let (mode, replicas, _) = routes.get(app)?;
        let mut replicas = replicas.clone();
        let now = Instant::now();
        let suspect = |r: &ReplicaState| {
            r.suspect_until
                .lock()
                .expect("suspect lock")
                .is_some_and(|until| until > now)
        };
        match mode {
            RouteMode::ActivePassive => replicas.sort_by_key(|r| suspect(r)),
            RouteMode::ActiveActive => replicas.sort_by_key(|r| {
                (
                    suspect(r),
                    r.in_flight.load(Ordering::Relaxed),
                    r.latency_us.load(Ordering::Relaxed),
                )
            }),
        }
        Some(replicas)
    }

    /// Forward one visitor request (in a span of its own when traces are exported: its
    /// context goes to the host in `traceparent`).
    pub async fn handle<B>(&self, request: http::Request<B>) -> http::Response<GatewayBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !fog_net::trace::enabled() {
            return self.handle_counted(request).await;
        }
        // The root of the request's trace: a visitor's own trace context is not trusted.
        let span = tracing::info_span!(
            target: fog_net::trace::TARGET,
            "router.request",
            otel.kind = "server",
            http.request.method = %request.method(),
            fog.app = tracing::field::Empty,
            fog.request_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if let Some((app, _)) = Self::app_of(&request) {
            span.record("fog.app", app.as_str());
        }
        let response = self.handle_counted(request).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(id) = response
            .headers()
            .get("x-fog-request-id")
            .and_then(|v| v.to_str().ok())
        {
            span.record("fog.request_id", id);
        }
        response
    }

    /// Forward one visitor request, counted in the metrics if they are on.
    async fn handle_counted<B>(&self, request: http::Request<B>) -> http::Response<GatewayBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(metrics) = self.metrics.get() else {
            return self.forward_request(request).await;
        };
        let started = Instant::now();
        let app = Self::app_of(&request).map(|(app, _)| app);
        let response = self.forward_request(request).await;
        // Only an app in the routes is a label: the name a visitor typed is unbounded.
        let app = app
            .filter(|app| {
                self.routes
                    .read()
                    .expect("routes lock")
                    .contains_key(app.as_str())
            })
            .unwrap_or_default();
        metrics.record(
            &app,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    async fn forward_request<B>(&self, request: http::Request<B>) -> http::Response<GatewayBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some((app, path)) = Self::app_of(&request) else {
            return plain(
                404,
                "no app in the request: use http://<app>.localhost/ or /apps/<app>/",
            );
        };
        if self.candidates(&app).is_none() {
            return plain(404, &format!("no app named {app:?}"));
        }
        let (parts, body) = request.into_parts();
        let mut body = match RequestBody::read(body, self.config.retry_body).await {
            Ok(body) => body,
            Err(err) => return plain(400, &format!("request body could not be read: {err}")),
        };
        // Try the replicas; when none can take the request right now (a primary being moved
        // or promoted, a replica starting), hold it and try again until the hold runs out: the
        // longer hold while replicas say the primary is changing, so a handover slowed down
        // (a loaded machine, a control plane's store electing) delays visitors, never fails them.
        let started = Instant::now();
        let (held_until, handover_until) = (
            started + self.config.hold,
            started + self.config.hold.max(self.config.handover_hold),
        );
        let mut last_error = String::new();
        // Whether the last failure was that no replica was live (503) rather than that one
        // failed (502).
        let mut none_live = false;
        let mut pause = Duration::from_millis(20);
        let mut woken = false;
        loop {
            // Whether a replica of this round said the primary is changing.
            let mut changing = false;
            let Some(mut replicas) = self.candidates(&app) else {
                return plain(404, &format!("no app named {app:?}"));
            };
            if replicas.is_empty() {
                last_error = format!("app {app:?} has no live replica right now");
                none_live = true;
                // Perhaps parked at zero replicas: ask for one, and hold the request.
                if !woken {
                    woken = true;
                    self.wake(&app).await;
                }
            }
            if body.streams() {
                // A streamed body is sent once: to the primary, which can take writes.
                if let Some(primary) = self.primary(&app)
                    && let Some(at) = replicas.iter().position(|r| Arc::ptr_eq(r, &primary))
                {
                    replicas.swap(0, at);
                }
            }
            let mut tried = 0;
            while tried < replicas.len().min(self.config.attempts.max(1) + 1) {
                let replica = replicas[tried].clone();
                tried += 1;
                let Some(sent) = body.take() else {
                    return plain(
                        502,
                        &format!(
                            "app {app:?} could not take this request ({last_error}); its body \
                             (over {} bytes) streamed and is not resent",
                            self.config.retry_body
                        ),
                    );
                };
                match self.forward(&replica, &app, &path, &parts, sent).await {
                    Forwarded::Answer(response) => return response,
                    Forwarded::TimedOut => {
                        return plain(
                            504,
                            &format!(
                                "app {app:?} did not answer within {} s",
                                self.config.timeout.as_secs()
                            ),
                        );
                    }
                    Forwarded::Follower => {
                        // Writes go to the primary: try it next if it is not next already.
                        last_error = format!("device {} only follows", replica.device);
                        none_live = false;
                        changing = true;
                        let primary = self.primary(&app);
                        if let Some(primary) = primary
                            && let Some(at) = replicas[tried..]
                                .iter()
                                .position(|r| Arc::ptr_eq(r, &primary))
                        {
                            replicas.swap(tried, tried + at);
                        }
                    }
                    Forwarded::Moving(reason) => {
                        *replica.suspect_until.lock().expect("suspect lock") =
                            Some(Instant::now() + self.config.suspect_for);
                        last_error = reason;
                        none_live = false;
                        changing = true;
                    }
                    Forwarded::Elsewhere(reason) => {
                        *replica.suspect_until.lock().expect("suspect lock") =
                            Some(Instant::now() + self.config.suspect_for);
                        last_error = reason;
                        none_live = false;
                    }
                }
            }
            let until = if changing { handover_until } else { held_until };
            if Instant::now() + pause > until {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        plain(
            if none_live { 503 } else { 502 },
            &format!("every replica of {app:?} failed: {last_error}"),
        )
    }

    /// Ask the control plane to wake an app parked at zero replicas.
    async fn wake(&self, app: &str) {
        let path = format!("/v1/apps/{app}/wake");
        let answer = self
            .call(
                http::Method::POST,
                &path,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await;
        match answer {
            Ok((status, _, _)) if status.is_success() => {
                tracing::info!(app, "asked the control plane to wake the app");
            }
            Ok((status, _, _)) => tracing::warn!(app, "waking refused: {status}"),
            Err(err) => tracing::warn!(app, "cannot wake the app: {err}"),
        }
    }

    /// Serve HTTP/1.1 on `io`, a connection bound to `app` (a Betanet or onion visitor's): every
    /// request goes to that app, whatever host it names. The visitor may half-close its side
    /// once a request is sent.
    pub async fn serve_app<I>(self: Arc<Self>, io: I, app: String, visitor: Option<IpAddr>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let host = match http::HeaderValue::from_str(&format!("{app}.localhost")) {
            Ok(host) => host,
            Err(_) => return,
        };
        let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
            let gateway = self.clone();
            request
                .headers_mut()
                .insert(http::header::HOST, host.clone());
            async move { Ok::<_, std::convert::Infallible>(gateway.handle_from(request, visitor).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .await;
    }

    /// Send a spot check to the canary on the one device it names: the status and body (cut
    /// at [`fog_proto::canary::MAX_ANSWER_BYTES`]) the device answered, or why it did not.
    pub(crate) async fn probe(
        &self,
        challenge: &fog_proto::canary::Challenge,
    ) -> Result<(u16, Bytes), String> {
        use fog_proto::canary::{APP, MAX_ANSWER_BYTES};
        // A listening device the routes do not name yet: its key comes with the check.
        if let Some(htx) = &challenge.htx
            && let Some(addr) = &htx.addr
            && let Some(key) = hex::decode(&htx.key)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
        {
            self.dialer.learn([(addr.clone(), key)]);
        }
        let replica = Arc::new(ReplicaState::new(
            challenge.device.clone(),
            challenge.addr.clone(),
            challenge.htx.clone(),
        ));
        let (parts, ()) = http::Request::get(challenge.path.as_str())
            .body(())
            .map_err(|e| format!("bad spot-check path: {e}"))?
            .into_parts();
        match self
            .forward(
                &replica,
                APP,
                &challenge.path,
                &parts,
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .await
        {
            Forwarded::Answer(response) => {
                let status = response.status().as_u16();
                match Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                {
                    Ok(body) => Ok((status, body.to_bytes())),
                    // Longer than any right answer: it is the device's (wrong) answer.
                    Err(err) if err.is::<http_body_util::LengthLimitError>() => Ok((
                        status,
                        Bytes::from_static(b"(an answer longer than the limit)"),
                    )),
                    Err(err) => Err(format!("the answer's body failed: {err}")),
                }
            }
            Forwarded::TimedOut => Err("the device did not answer in time".into()),
            Forwarded::Follower => Err("the device's canary only follows".into()),
            Forwarded::Moving(reason) | Forwarded::Elsewhere(reason) => Err(reason),
        }
    }

    /// The app's primary (the first replica in the route), if it is live.
    fn primary(&self, app: &str) -> Option<Arc<ReplicaState>> {
        let routes = self.routes.read().expect("routes lock");
        routes.get(app)?.1.first().cloned()
    }

    /// Send the request to one replica.
    async fn forward(
        &self,
        replica: &Arc<ReplicaState>,
        app: &str,
        path: &str,
        parts: &http::request::Parts,
        body: ForwardBody,
    ) -> Forwarded {
        // A host that listens for HTX is dialled; one behind NAT is reached on the connection it
        // attached to this router with; plain HTTP is for local development. Both pooled clients
        // take the absolute form; the HTX one opens a stream on the host's HTX connection for
        // each new pooled connection.
        let listening = replica.htx.as_ref().and_then(|h| h.addr.clone());
        let (htx, authority) = match (self.config.htx_data_plane, listening, &replica.addr) {
            (true, Some(addr), _) => (true, addr),
            (true, None, _) if self.dialer.attached(&replica.device).is_some() => {
                (true, fog_htx::dial::attached_authority(&replica.device))
            }
            (true, None, _) if replica.htx.is_some() => {
                return Forwarded::Elsewhere(format!(
                    "device {} is not attached to this router",
                    replica.device
                ));
            }
            (_, _, Some(addr)) => (false, addr.clone()),
            (_, _, None) => {
                return Forwarded::Elsewhere(format!(
                    "device {} has no plain-HTTP address",
                    replica.device
                ));
            }
        };
        let target = format!("http://{authority}{path}");
        let uri = match target.parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(err) => {
                return Forwarded::Answer(plain(400, &format!("bad request target: {err}")));
            }
        };
        let mut forward = http::Request::builder()
            .method(parts.method.clone())
            .uri(uri);
        for (name, value) in &parts.headers {
            if !HOP_HEADERS.contains(&name.as_str()) && name != http::header::HOST {
                forward = forward.header(name, value);
            }
        }
        let forward = forward
            .header(http::header::HOST, format!("{app}.localhost"))
            .header("x-fog-app", app)
            .body(body);
        let mut forward = match forward {
            Ok(forward) => forward,
            Err(err) => return Forwarded::Answer(plain(400, &format!("bad request: {err}"))),
        };
        fog_net::trace::inject(&tracing::Span::current(), forward.headers_mut());
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let sent = async {
            match htx {
                true => self.htx_client.request(forward).await,
                false => self.client.request(forward).await,
            }
            .map_err(|e| {
                // hyper's error alone says little; its source says why.
                let reason = match std::error::Error::source(&e) {
                    Some(source) => format!("{e}: {source}"),
                    None => e.to_string(),
                };
                (e.is_connect(), reason)
            })
        };
        let result = tokio::time::timeout(self.config.timeout, sent).await;
        replica.in_flight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(Ok(response)) => {
                // The host did not run the app, or ran it without changing anything (it no
                // longer has it, its device stopped offering capacity, the app is moving, or
                // this replica only follows): try elsewhere.
                let kind = response
                    .headers()
                    .get(fog_proto::ERROR_HEADER)
                    .and_then(|k| k.to_str().ok())
                    .and_then(|k| k.parse::<ErrorKind>().ok());
                match kind {
                    Some(ErrorKind::Follower) => Forwarded::Follower,
                    Some(ErrorKind::Moved) => Forwarded::Moving(format!(
                        "device {} is handing the app over",
                        replica.device
                    )),
                    Some(kind) if kind.retry_elsewhere() => Forwarded::Elsewhere(format!(
                        "device {} does not serve the app now ({kind})",
                        replica.device
                    )),
                    _ => {
                        replica.answered_in(started.elapsed());
                        let (parts, body) = response.into_parts();
                        Forwarded::Answer(http::Response::from_parts(parts, body.boxed()))
                    }
                }
            }
            Ok(Err((connecting, err))) => {
                // Retry elsewhere only what cannot have run twice: the request never left (no
                // connection), or it is idempotent. A POST the device may have handled before
                // it failed is not resent.
                let idempotent = matches!(
                    parts.method,
                    http::Method::GET
                        | http::Method::HEAD
                        | http::Method::OPTIONS
                        | http::Method::PUT
                        | http::Method::DELETE
                );
                *replica.suspect_until.lock().expect("suspect lock") =
                    Some(Instant::now() + self.config.suspect_for);
                if connecting || idempotent {
                    tracing::info!(
                        app,
                        device = replica.device,
                        "replica failed, retrying elsewhere: {err}"
                    );
                    Forwarded::Elsewhere(format!("device {} failed: {err}", replica.device))
                } else {
                    Forwarded::Answer(plain(
                        502,
                        &format!(
                            "device {} failed while handling this {} request; it was not resent \
                             because it may have taken effect: {err}",
                            replica.device, parts.method
                        ),
                    ))
                }
            }
            Err(_) => Forwarded::TimedOut,
        }
    }
}

/// A visitor's request body as the gateway holds it.
enum RequestBody {
    /// Small enough to keep: every retry resends it.
    Kept(Bytes),
    /// Larger: what was read so far and the rest still on the visitor's connection, forwarded
    /// once.
    Streaming(Option<ForwardBody>),
}

impl RequestBody {
    /// Read `body` up to `keep` bytes; past that, stream it.
    async fn read<B>(body: B, keep: usize) -> Result<RequestBody, BoxError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut body = Box::pin(body);
        let mut kept = bytes::BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(RequestBody::Kept(kept.freeze())),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(frame)) => {
                    // Trailers are not forwarded (the data is).
                    if let Ok(data) = frame.into_data() {
                        kept.extend_from_slice(&data);
                    }
                    if kept.len() > keep {
                        let prefix = futures::stream::once(std::future::ready(Ok::<_, BoxError>(
                            hyper::body::Frame::data(kept.freeze()),
                        )));
                        // A replica that answers before the end (a body over the app's limit)
                        // leaves the rest to be read here, so the visitor gets the answer.
                        let rest = http_body_util::BodyStream::new(
                            fog_net::drain::DrainOnDrop::new(body)
                                .map_err(|err| -> BoxError { err.into() }),
                        );
                        let chained = http_body_util::StreamBody::new(futures::StreamExt::chain(
                            prefix, rest,
                        ));
                        return Ok(RequestBody::Streaming(Some(chained.boxed_unsync())));
                    }
                }
            }
        }
    }

    /// Whether the body streams (so it goes to one replica only).
    fn streams(&self) -> bool {
        matches!(self, RequestBody::Streaming(_))
    }

    /// The body to send to the next replica; `None` once a streamed body has been sent.
    fn take(&mut self) -> Option<ForwardBody> {
        match self {
            RequestBody::Kept(bytes) => Some(
                Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            RequestBody::Streaming(body) => body.take(),
        }
    }
}

/// What forwarding to one replica came to.
enum Forwarded {
    /// The app's answer (or a final error): send it to the visitor.
    Answer(http::Response<GatewayBody>),
    /// The app did not answer in time.
    TimedOut,
    /// A follower that cannot take this request (it writes): the primary can.
    Follower,
    /// A primary being moved away (fenced): the new primary will take the request.
    Moving(String),
    /// This replica cannot serve the app now; nothing was done there.
    Elsewhere(String),
}

/// Serve visitors on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    fog_net::serve_http1_from(
        listener,
        move |request, peer: std::net::SocketAddr| {
            let gateway = gateway.clone();
            async move { gateway.handle_from(request, Some(peer.ip())).await }
        },
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

    fn request(host: &str, target: &str) -> http::Request<Empty<Bytes>> {
        http::Request::builder()
            .uri(target)
            .header("host", host)
            .body(Empty::new())
            .unwrap()
    }

    #[test]
    fn apps_are_found_by_host_name_or_path_prefix() {
        let app = |host, target| Gateway::app_of(&request(host, target));
        assert_eq!(
            app("hello.localhost:7080", "/a?b=1"),
            Some(("hello".into(), "/a?b=1".into()))
        );
        assert_eq!(
            app("127.0.0.1:7080", "/apps/counter/api/count"),
            Some(("counter".into(), "/api/count".into()))
        );
        assert_eq!(
            app("127.0.0.1:7080", "/apps/counter"),
            Some(("counter".into(), "/".into()))
        );
        assert_eq!(
            app("127.0.0.1:7080", "/apps/counter?x=1"),
            Some(("counter".into(), "/?x=1".into()))
        );
        assert_eq!(app("127.0.0.1:7080", "/other"), None);
        assert_eq!(app("a.b.localhost", "/"), None);
    }

    /// A replica on loopback that answers every request as a follower until `primary_at`, and
    /// as the primary (200) from then on, as a handover's target does once it switches.
    async fn replica_promoted_at(primary_at: Instant) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(move |_: http::Request<_>| async move {
                    let response = if Instant::now() < primary_at {
                        http::Response::builder()
                            .status(409)
                            .header(fog_proto::ERROR_HEADER, ErrorKind::Follower.to_string())
                            .body(Full::new(Bytes::from_static(b"only follows")))
                    } else {
                        http::Response::builder().body(Full::new(Bytes::from_static(b"1")))
                    };
                    Ok::<_, std::convert::Infallible>(response.unwrap())
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_write_is_held_while_the_primary_changes_longer_than_the_plain_hold() {
        // Every replica only follows for a second (fencing), then the new primary takes writes.
        let addr = replica_promoted_at(Instant::now() + Duration::from_secs(1)).await;
        let gateway = Gateway::new(GatewayConfig {
            htx_data_plane: false,
            hold: Duration::from_millis(100),
            handover_hold: Duration::from_secs(10),
            ..GatewayConfig::new("http://127.0.0.1:9".parse().unwrap())
        });
        gateway.set_routes(vec![Route {
            app: "counter".into(),
            mode: RouteMode::ActivePassive,
            replicas: vec![fog_proto::api::Replica {
                device: "d1".into(),
                addr: Some(addr.to_string()),
                htx: None,
            }],
            betanet: None,
        }]);
        let post = http::Request::post("/apps/counter/api/increment")
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = gateway.handle(post).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// A replica on loopback that answers each request after `delay`, counting what it served.
    async fn replica_answering_after(
        delay: Duration,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = served.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counted = counted.clone();
                let service = hyper::service::service_fn(move |_: http::Request<_>| {
                    let counted = counted.clone();
                    async move {
                        // The replica's own distance from the visitor, not a wait of the test.
                        tokio::time::sleep(delay).await;
                        counted.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"hello"),
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (addr, served)
    }

    #[tokio::test]
    async fn equally_idle_replicas_of_an_active_active_app_are_chosen_by_measured_latency() {
        // The far replica comes first in the route: without measurements it would take every
        // request sent one at a time.
        let (far, far_served) = replica_answering_after(Duration::from_millis(200)).await;
        let (near, near_served) = replica_answering_after(Duration::ZERO).await;
        let gateway = Gateway::new(GatewayConfig {
            htx_data_plane: false,
            ..GatewayConfig::new("http://127.0.0.1:9".parse().unwrap())
        });
        let replica = |device: &str, addr: std::net::SocketAddr| fog_proto::api::Replica {
            device: device.into(),
            addr: Some(addr.to_string()),
            htx: None,
        };
        gateway.set_routes(vec![Route {
            app: "hello".into(),
            mode: RouteMode::ActiveActive,
            replicas: vec![replica("far", far), replica("near", near)],
            betanet: None,
        }]);
        for _ in 0..10 {
            let response = gateway.handle(request("hello.localhost", "/")).await;
            assert_eq!(response.status(), 200);
        }
        // One request each to measure both, then the near one.
        assert_eq!(
            (
                far_served.load(Ordering::Relaxed),
                near_served.load(Ordering::Relaxed)
            ),
            (1, 9)
        );
    }

    #[tokio::test]
    async fn apps_changed_marks_apps_published_or_removed_only() {
        let gateway = Gateway::new(GatewayConfig::new("http://127.0.0.1:9".parse().unwrap()));
        let mut changed = gateway.apps_changed();
        let route = |app: &str, device: &str| Route {
            app: app.into(),
            mode: RouteMode::ActivePassive,
            replicas: vec![fog_proto::api::Replica {
                device: device.into(),
                addr: Some("127.0.0.1:1".into()),
                htx: None,
            }],
            betanet: None,
        };
        gateway.set_routes(vec![route("a", "d1")]);
        assert!(changed.has_changed().unwrap(), "a published");
        changed.borrow_and_update();
        // A replica moving is no change to the set of apps.
        gateway.set_routes(vec![route("a", "d2")]);
        assert!(!changed.has_changed().unwrap());
        gateway.set_routes(vec![route("a", "d2"), route("b", "d1")]);
        assert!(changed.has_changed().unwrap(), "b published");
        changed.borrow_and_update();
        gateway.set_routes(vec![route("b", "d1")]);
        assert!(changed.has_changed().unwrap(), "a removed");
    }
}
