//! The host's own HTTP/1.1 listener: picks the app for each request and serves it.
//!
//! Owning the listener (rather than sitting behind a container runtime's proxy) is what keeps a
//! request's cost down to one fresh store; see `benches/RESULTS.md`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use fog_proto::ErrorKind;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::app::{App, HostResponse};

/// Header that names the app a request is for (set by routers).
pub const APP_HEADER: &str = "x-fog-app";

/// The apps a host serves, by name, and which one answers requests that name none.
#[derive(Debug, Default)]
pub struct AppTable {
    apps: RwLock<HashMap<String, Arc<App>>>,
    default_app: RwLock<Option<String>>,
    log: crate::reqlog::RequestLog,
    gate: crate::harvest::Gate,
    /// Set once metrics are exported (`--metrics-listen`); nothing is recorded otherwise.
    metrics: std::sync::OnceLock<Arc<crate::metrics::HostMetrics>>,
    /// Test only (`fog host --corrupt-responses`): change every app's answer, as a broken or
    /// cheating device would, so spot checks can be seen catching it.
    corrupt: std::sync::atomic::AtomicBool,
}

impl AppTable {
    /// An empty table.
    pub fn new() -> Arc<AppTable> {
        Arc::new(AppTable::default())
    }

    /// An empty table that logs requests to `log`.
    pub fn with_request_log(log: crate::reqlog::RequestLog) -> Arc<AppTable> {
        Arc::new(AppTable {
            log,
            ..AppTable::default()
        })
    }

    /// Every request served, for `fog logs` (the agent ships it to the control plane).
    pub fn request_log(&self) -> &crate::reqlog::RequestLog {
        &self.log
    }

    /// Serve `app` under its name, replacing an app of the same name.
    pub fn insert(&self, app: Arc<App>) {
        let name = app.name().to_string();
        self.apps.write().expect("app table lock").insert(name, app);
    }

    /// Stop serving the app `name`; in-flight requests finish on the old instance.
    pub fn remove(&self, name: &str) -> Option<Arc<App>> {
        self.apps.write().expect("app table lock").remove(name)
    }

    /// Test only: from now on, flip a bit in every byte of every app's (whole) response body,
    /// as a broken or cheating device would. Spot checks exist to catch this.
    pub fn corrupt_responses(&self) {
        self.corrupt
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Record every request in `metrics` from now on.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::HostMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// What the host admits (set by the harvester; admits everything otherwise).
    pub fn gate(&self) -> &crate::harvest::Gate {
        &self.gate
    }

    /// Answer requests that name no app with `name`.
    pub fn set_default(&self, name: Option<String>) {
        *self.default_app.write().expect("app table lock") = name;
    }

    /// The app called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<App>> {
        self.apps.read().expect("app table lock").get(name).cloned()
    }

    /// All apps, sorted by name.
    pub fn list(&self) -> Vec<Arc<App>> {
        let mut apps: Vec<_> = self
            .apps
            .read()
            .expect("app table lock")
            .values()
            .cloned()
            .collect();
        apps.sort_by(|a, b| a.name().cmp(b.name()));
        apps
    }

    /// The app a request is for: the `x-fog-app` header, else a `<name>.localhost` host name,
    /// else the default app.
    fn route<B>(&self, request: &http::Request<B>) -> Result<Arc<App>, String> {
        if let Some(name) = request.headers().get(APP_HEADER) {
            let name = name.to_str().unwrap_or("");
            return self
                .get(name)
                .ok_or_else(|| format!("no app named {name:?} on this host"));
        }
        if let Some(app) = fog_net::app_from_host(request).and_then(|name| self.get(name)) {
            return Ok(app);
        }
        let default = self.default_app.read().expect("app table lock").clone();
        match default {
            Some(name) => self
                .get(&name)
                .ok_or_else(|| format!("no app named {name:?} on this host")),
            None => Err("no app named in the request (x-fog-app header or <app>.localhost)".into()),
        }
    }

    /// Serve one request from whichever app it is for (in a span of its own when traces are
    /// exported, the child of the router's span whose context came in `traceparent`).
    pub async fn handle<B>(&self, request: http::Request<B>) -> HostResponse
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !fog_net::trace::enabled() {
            return self.handle_counted(request).await;
        }
        let span = tracing::info_span!(
            target: fog_net::trace::TARGET,
            "host.request",
            otel.kind = "server",
            http.request.method = %request.method(),
            fog.app = tracing::field::Empty,
            fog.request_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        fog_net::trace::set_parent(&span, request.headers());
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

    /// Serve one request, counted in the metrics if they are on.
    async fn handle_counted<B>(&self, request: http::Request<B>) -> HostResponse
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(metrics) = self.metrics.get() else {
            return self.serve(request).await.0;
        };
        let started = std::time::Instant::now();
        let (response, app, fuel) = self.serve(request).await;
        metrics.record(
            app.as_ref().map_or("", |a| a.name()),
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
            fuel,
        );
        response
    }

    /// Serve one request: the response, the app that answered it (if the request named one of
    /// this host's) and the fuel it burnt.
    async fn serve<B>(&self, request: http::Request<B>) -> (HostResponse, Option<Arc<App>>, u64)
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.uri().path().starts_with("/_fog/") {
            // Reserved for Fog's own traffic between devices (served over HTX only).
            return (plain(403, "paths under /_fog/ are reserved"), None, 0);
        }
        match self.route(&request) {
            Ok(app) => {
                tracing::Span::current().record("fog.app", app.name());
                let admission = match self.gate.admit() {
                    Ok(admission) => admission,
                    Err(reason) => {
                        let mut response = plain(503, &reason);
                        let headers = response.headers_mut();
                        headers.insert(
                            fog_proto::ERROR_HEADER,
                            http::HeaderValue::from_static(ErrorKind::Harvest.as_str()),
                        );
                        headers.insert(
                            http::header::RETRY_AFTER,
                            http::HeaderValue::from_static("1"),
                        );
                        return (response, Some(app), 0);
                    }
                };
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let (mut response, report) = app.handle(request).await;
                if self.corrupt.load(std::sync::atomic::Ordering::Relaxed) {
                    response = response.map(crate::body::HostBody::corrupted);
                }
                admission.finish(report.fuel);
                let line = fog_proto::api::LogLine {
                    app: app.name().to_string(),
                    device: String::new(),
                    seq: 0,
                    id: 0,
                    ts_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    request_id: report.request_id,
                    method,
                    path,
                    status: report.status,
                    fuel: report.fuel,
                    micros: report.elapsed.as_micros() as u64,
                    error: report.failure.map(|f| f.kind().to_string()),
                };
                self.log.record(line);
                (response, Some(app), report.fuel)
            }
            Err(reason) => {
                // Not the app's answer: routers retry such a request on another replica.
                let mut response = plain(404, &reason);
                response.headers_mut().insert(
                    fog_proto::ERROR_HEADER,
                    http::HeaderValue::from_static(ErrorKind::UnknownApp.as_str()),
                );
                (response, None, 0)
            }
        }
    }
}

fn plain(status: u16, reason: &str) -> HostResponse {
    let mut response = http::Response::new(crate::body::HostBody::full(format!("{reason}\n")));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Accept HTTP/1.1 connections on `listener` and serve `apps` until `shutdown` resolves; then
/// stop accepting and let open connections finish their current request.
pub async fn serve(listener: TcpListener, apps: Arc<AppTable>, shutdown: impl Future<Output = ()>) {
    fog_net::serve_http1(
        listener,
        move |request| {
            let apps = apps.clone();
            async move { apps.handle(request).await }
        },
        shutdown,
    )
    .await;
}

pub use fog_net::bind;
