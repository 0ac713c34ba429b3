//! The HTTP API: routing `/v1` requests to the concerns that answer them, reading bodies with
//! limits, checking signatures, and turning answers and [`ApiError`]s into JSON responses.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use fog_proto::api;
use fog_proto::auth::{self, AUTH_HEADER, META_HEADER};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

use crate::error::ApiError;
use crate::replay::ReplayError;
use crate::store::{Table, decode};
use crate::{ApiResponse, Control, ROUTES_HOLD, now_ms};

/// What a handler returns: a response, or the error the visitor of the API is told.
pub(crate) type Answer = Result<ApiResponse, ApiError>;

/// A JSON response with `status`.
pub(crate) fn json<T: Serialize>(status: u16, value: &T) -> ApiResponse {
    let body = serde_json::to_vec(value).expect("API types always serialise");
    let mut response = bytes_response("application/json", body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    response
}

/// A 200 carrying `bytes` as `content_type`.
pub(crate) fn bytes_response(content_type: &'static str, bytes: impl Into<Bytes>) -> ApiResponse {
    let mut response = http::Response::new(ApiBody::full(bytes));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Size of the frames a timed download is sent in: the connection takes the next one only
/// when it has room for it, so the last is taken about when the bytes before it have left.
const DOWNLOAD_CHUNK: usize = 64 << 10;

/// A response body: bytes in one frame, or a download to a device sent in frames whose end is
/// timed (the device's measured throughput, see [`crate::observe`]).
pub struct ApiBody {
    frames: VecDeque<Bytes>,
    /// Run once, when the connection is done with the last frame (it asks past it, or drops
    /// the body: with a known length hyper never asks); never if the download was cut short.
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Drop for ApiBody {
    fn drop(&mut self) {
        if self.frames.is_empty()
            && let Some(on_end) = self.on_end.take()
        {
            on_end();
        }
    }
}

impl std::fmt::Debug for ApiBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiBody")
            .field("frames", &self.frames.len())
            .field("timed", &self.on_end.is_some())
            .finish()
    }
}

impl ApiBody {
    /// `bytes` in one frame.
    pub fn full(bytes: impl Into<Bytes>) -> ApiBody {
        let bytes: Bytes = bytes.into();
        ApiBody {
            frames: if bytes.is_empty() {
                VecDeque::new()
            } else {
                VecDeque::from([bytes])
            },
            on_end: None,
        }
    }

    /// `bytes` in frames of [`DOWNLOAD_CHUNK`], calling `on_end` once the last was taken.
    fn timed(bytes: Bytes, on_end: impl FnOnce() + Send + Sync + 'static) -> ApiBody {
        let mut frames = VecDeque::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            frames.push_back(rest.split_to(DOWNLOAD_CHUNK.min(rest.len())));
        }
        ApiBody {
            frames,
            on_end: Some(Box::new(on_end)),
        }
    }
}

impl hyper::body::Body for ApiBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(frame))));
        }
        if let Some(on_end) = this.on_end.take() {
            on_end();
        }
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        // A timed body is not at its end before the connection asked past the last frame.
        self.frames.is_empty() && self.on_end.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
    }
}

impl Control {
    /// A 200 carrying `bytes` to `device`, timed from now (the bytes are at hand: neither
    /// reading them nor pulling them from a peer counts) to when the connection took the last
    /// frame: a sample of the device's throughput. The kernel's send buffer still holds the
    /// tail then, so a sample errs fast, never slow.
    pub(crate) fn timed_download(
        self: &Arc<Self>,
        device: String,
        content_type: &'static str,
        bytes: Bytes,
    ) -> ApiResponse {
        let started = std::time::Instant::now();
        let control = Arc::downgrade(self);
        let size = bytes.len() as u64;
        let mut response = http::Response::new(ApiBody::timed(bytes, move || {
            if let Some(control) = control.upgrade() {
                control.record_transfer(&device, size, started.elapsed());
            }
        }));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    }
}

/// The `after=ID` of a logs request's query (none: every kept line at once); anything else in
/// the query is refused.
fn logs_after(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    match query.strip_prefix("after=").map(str::parse::<u64>) {
        Some(Ok(after)) => Ok(Some(after)),
        _ => Err(ApiError::BadRequest(format!(
            "bad logs query {query:?}: expected after=ID (a line id, digits)"
        ))),
    }
}

impl Control {
    /// Serve one API request; never fails (errors become JSON error responses).
    pub async fn handle<B>(self: &Arc<Self>, request: http::Request<B>) -> ApiResponse
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let answer = self.route(request).await;
        let response = answer.unwrap_or_else(ApiError::into_response);
        if response.status().is_client_error() || response.status().is_server_error() {
            tracing::info!(%method, path, status = response.status().as_u16(), "refused");
        }
        response
    }

    pub(crate) async fn route<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_string();
        if request.method() == http::Method::GET {
            if path == fog_net::metrics::PATH {
                return Ok(self.scrape()?);
            }
            if let Some(page) = crate::dashboard::page(&path, request.uri().query()) {
                return page;
            }
        }
        let Some(rest) = path.strip_prefix(api::PREFIX) else {
            return Err(ApiError::NotFound(format!(
                "unknown path {path}: the API lives under {}",
                api::PREFIX
            )));
        };
        let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let method = request.method().clone();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["apps"]) => self.publish(request).await,
            ("POST", ["bundles"]) => self.store_bundle(request).await,
            ("GET", ["apps"]) => Ok(json(200, &self.app_infos()?)),
            ("GET", ["apps", name]) => Ok(json(200, &self.app_info(&self.app(name)?)?)),
            ("POST", ["apps", name, "scale"]) => self.scale(name, request).await,
            ("GET", ["apps", name, "config"]) => self.list_config(name, request).await,
            ("POST", ["apps", name, "config"]) => self.change_config(name, request).await,
            ("DELETE", ["apps", name]) => self.remove(name, request).await,
            ("POST", ["apps", name, "move"]) => self.request_move(name, request).await,
            ("POST", ["apps", name, "wake"]) => self.wake(name),
            ("POST", ["apps", name, "snapshot"]) => self.store_snapshot(name, request).await,
            ("POST", ["apps", name, "snapshot", "latest"]) => {
                self.latest_snapshot(name, request).await
            }
            ("GET", ["apps", name, "logs"]) => {
                fog_proto::validate_app_name(name).map_err(ApiError::BadRequest)?;
                self.app(name)?;
                let after = logs_after(request.uri().query())?;
                let lines = self
                    .logs
                    .read(self.store.as_ref(), name, after, crate::logs::LOGS_HOLD)
                    .await?;
                Ok(json(200, &lines))
            }
            ("POST", ["devices"]) => self.register(request).await,
            ("GET", ["devices"]) => Ok(json(200, &self.device_infos()?)),
            ("GET", ["devices", id]) => {
                match self.device_infos()?.into_iter().find(|d| d.id == *id) {
                    Some(device) => Ok(json(200, &device)),
                    None => Err(ApiError::NotFound(format!("no device {id}"))),
                }
            }
            ("GET", ["devices", a, "peers", b]) => self.pairing(a, b),
            ("POST", ["devices", id, "heartbeat"]) => self.heartbeat(id, request).await,
            ("GET", ["devices", id, "ledger"]) => {
                let prefix = format!("{id}/");
                let periods: Vec<api::SignedPeriod> = self
                    .store
                    .list(Table::Ledger)?
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| decode(Table::Ledger, k, v))
                    .collect::<Result<_, _>>()?;
                Ok(json(200, &periods))
            }
            ("GET", ["balances"]) => Ok(json(200, &self.balances()?)),
            ("GET", ["blobs", sha]) => {
                // `local=1`: a peer pulling; answer from this disk only (no pull in turn).
                let local = request
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "local=1"));
                // A host signs its download, so it can be timed as that device's throughput.
                let device = if request.headers().contains_key(AUTH_HEADER) {
                    let (signer, _, _) = self.signed_limited(request, 0, false).await?;
                    Some(self.signing_device(&signer)?)
                } else {
                    None
                };
                let found = if local {
                    self.store.get(Table::Blobs, sha)?.map(Bytes::from)
                } else {
                    self.blob(sha).await?
                };
                match (found, device) {
                    (Some(bytes), Some(device)) => {
                        Ok(self.timed_download(device, "application/wasm", bytes))
                    }
                    (Some(bytes), None) => Ok(bytes_response("application/wasm", bytes)),
                    (None, _) => Err(ApiError::NotFound(format!("no blob {sha}"))),
                }
            }
            ("POST", ["blobs", sha, "pull"]) => {
                let from = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("from=")))
                    .ok_or_else(|| {
                        ApiError::BadRequest("pull needs ?from=<control plane id>".into())
                    })?
                    .to_string();
                self.pull_blob(sha, &from).await?;
                Ok(json(200, &serde_json::json!({ "sha256": sha })))
            }
            ("GET", ["plane"]) => Ok(json(
                200,
                &api::PlaneInfo {
                    id: self.id.clone(),
                    leading: self.is_leading(),
                    advertise: self.config.advertise.clone(),
                    peers: self.planes.peers().into_iter().map(|p| p.url).collect(),
                },
            )),
            ("GET", ["routes"]) => {
                let after = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
                    .and_then(|v| v.parse::<u64>().ok());
                let mut seen = self.version.subscribe();
                if let Some(after) = after {
                    let _ = tokio::time::timeout(ROUTES_HOLD, seen.wait_for(|v| *v != after)).await;
                }
                let version = *self.version.borrow();
                let mut response = json(200, &self.routes()?);
                response.headers_mut().insert(
                    api::ROUTES_VERSION_HEADER,
                    http::HeaderValue::from_str(&version.to_string()).expect("digits"),
                );
                Ok(response)
            }
            ("POST", ["canary", "challenges"]) => self.canary_challenges(request).await,
            ("POST", ["canary", "answers"]) => self.canary_answers(request).await,
            ("POST", ["fronts"]) => {
                let (signer, body, _) = self.signed(request, 64 << 10).await?;
                self.trusted_router(&signer, "to register a Betanet front")?;
                let front: api::FrontInfo = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("malformed front: {e}")))?;
                self.registrations
                    .register_front(&signer, front)
                    .map_err(ApiError::BadRequest)?;
                Ok(json(200, &self.registrations.fronts()))
            }
            ("GET", ["fronts"]) => Ok(json(200, &self.registrations.fronts())),
            ("POST", ["attach"]) => {
                let (signer, body, _) = self.signed(request, 64 << 10).await?;
                self.trusted_router(&signer, "to register an attach endpoint")?;
                let info: api::AttachInfo = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("malformed attach endpoint: {e}")))?;
                let changed = self
                    .registrations
                    .register_attach(&signer, info)
                    .map_err(ApiError::BadRequest)?;
                if changed {
                    // Held heartbeats return at once with the new list.
                    self.bump();
                }
                Ok(json(200, &self.registrations.attach_points()))
            }
            ("GET", ["attach"]) => Ok(json(200, &self.registrations.attach_points())),
            ("POST", ["attach", "rtts"]) => self.router_rtts(request).await,
            ("POST", ["relays"]) => {
                let (signer, body, _) = self.signed(request, 64 << 10).await?;
                let registration: api::RelayRegistration = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("malformed relay: {e}")))?;
                // A wrong token is refused before anything is recorded.
                if let Some(token) = &registration.admission_token {
                    self.check_admission_token(token)?;
                }
                let relay = api::RelayInfo {
                    addr: registration.addr,
                    key: registration.key,
                };
                self.registrations
                    .register_relay(&signer, relay)
                    .map_err(ApiError::BadRequest)?;
                if registration.admission_token.is_some() {
                    self.admit(&signer, crate::admission::AdmittedBy::Token)?;
                } else if !self.is_admitted(&signer)? {
                    tracing::info!(relay = signer, "relay registered, pending admission");
                }
                Ok(json(200, &self.admitted_relays()?))
            }
            // Only admitted relays: a pending one is never on a path.
            ("GET", ["relays"]) => Ok(json(200, &self.admitted_relays()?)),
            ("POST", ["admissions"]) => self.admit_request(request).await,
            ("GET", ["pending"]) => Ok(json(200, &self.pending()?)),
            ("POST", ["onion-leases"]) => {
                let (signer, _, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
                self.trusted_router(&signer, "with onion leases")?;
                Ok(json(200, &self.onion_leases_for(&signer)?))
            }
            ("GET", ["onion-leases"]) => Ok(json(200, &self.onion_lease_infos()?)),
            ("GET", ["names", name]) => self.resolve(name),
            (
                _,
                [
                    "apps" | "bundles" | "devices" | "blobs" | "routes" | "fronts" | "relays"
                    | "names" | "onion-leases" | "attach" | "admissions" | "pending",
                    ..,
                ],
            ) => Err(ApiError::MethodNotAllowed(format!(
                "{method} is not allowed on {path}"
            ))),
            _ => Err(ApiError::NotFound(format!("unknown path {path}"))),
        }
    }

    /// Refuse (403) a signer that is not a router this control plane trusts; `what` ends the
    /// reason ("router key K is not trusted {what}").
    pub(crate) fn trusted_router(&self, signer: &str, what: &str) -> Result<(), ApiError> {
        if self.config.trusted_routers.iter().any(|r| r == signer) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "router key {signer} is not trusted {what}"
            )))
        }
    }

    /// Read a body up to `limit` bytes.
    pub(crate) async fn body<B>(body: B, limit: u64) -> Result<Bytes, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match Limited::new(body, limit as usize).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(
                format!("body larger than the limit of {limit} bytes"),
            )),
            Err(err) => Err(ApiError::BadRequest(format!(
                "body could not be read: {err}"
            ))),
        }
    }

    /// Read the body and check the request's signature; returns (signer, body, meta).
    pub(crate) async fn signed<B>(
        &self,
        request: http::Request<B>,
        limit: u64,
    ) -> Result<(String, Bytes, String), ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.signed_limited(request, limit, true).await
    }

    /// [`Control::signed`], counting the request against the signer's rate limit only if
    /// `rate_limited`: a download (a host fetching the components of many apps at once) only
    /// identifies its device and changes nothing.
    pub(crate) async fn signed_limited<B>(
        &self,
        request: http::Request<B>,
        limit: u64,
        rate_limited: bool,
    ) -> Result<(String, Bytes, String), ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let auth_header = header(AUTH_HEADER);
        if auth_header.is_none() {
            return Err(ApiError::Unauthorized(auth::AuthError::Missing.to_string()));
        }
        let meta = header(META_HEADER).unwrap_or_default();
        let body = Self::body(body, limit).await?;
        let now_s = now_ms() / 1000;
        let signed = auth::verify(
            auth_header.as_deref(),
            parts.method.as_str(),
            parts.uri.path(),
            &auth::sha256_hex(&body),
            &meta,
            now_s,
        )
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        // Limited before the replay check, so a request refused here may be sent again.
        if let Some(limit) = self.key_limit.as_ref().filter(|_| rate_limited)
            && let Err(wait) = limit.check(&signed.key)
        {
            return Err(ApiError::RateLimited {
                retry_after_s: fog_net::limit::retry_after_secs(wait),
            });
        }
        self.replays.admit(&signed, now_s).map_err(|e| match e {
            ReplayError::Replayed | ReplayError::Superseded => {
                ApiError::Unauthorized(e.to_string())
            }
            ReplayError::Full | ReplayError::TooFast => ApiError::Unavailable(e.to_string()),
        })?;
        Ok((signed.key, body, meta))
    }
}
