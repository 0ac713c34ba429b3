//! Helpers for Fog's end-to-end tests: a minimal HTTP/1.1 client over real loopback sockets and
//! a host serving a set of apps on an ephemeral port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fog_host::server::{self, AppTable};
use fog_host::{App, Manifest, Runtime, RuntimeConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response as a test sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Time from sending to the last body byte.
    pub elapsed: Duration,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Send one request on a fresh connection to `addr`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    request_from(None, addr, method, target, headers, body).await
}

/// Like [`request`], from the local address `from` when given (e.g. `127.0.0.2`, so a test
/// has visitors with different addresses on loopback).
pub async fn request_from(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    let started = Instant::now();
    let stream = match from {
        None => TcpStream::connect(addr).await,
        Some(from) => {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket
                .bind(SocketAddr::new(from, 0))
                .map_err(|e| format!("bind {from}: {e}"))?;
            socket.connect(addr).await
        }
    }
    .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut builder = http::Request::builder().method(method).uri(target);
    let mut has_host = false;
    for (name, value) in headers {
        has_host |= name.eq_ignore_ascii_case("host");
        builder = builder.header(*name, *value);
    }
    if !has_host {
        builder = builder.header("host", addr.to_string());
    }
    let req = builder
        .body(Full::new(body.into()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        elapsed: started.elapsed(),
    })
}

/// `GET target` from `addr` for app `app` (by the `x-fog-app` header).
pub async fn get(addr: SocketAddr, app: &str, target: &str) -> Reply {
    request(addr, "GET", target, &[("x-fog-app", app)], Bytes::new())
        .await
        .unwrap_or_else(|err| panic!("GET {target} for {app}: {err}"))
}

/// A host runtime serving apps on an ephemeral loopback port until dropped.
pub struct TestHost {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its runtime.
    pub runtime: Arc<Runtime>,
    /// Its apps.
    pub apps: Arc<AppTable>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestHost {
    /// Start a host with its state in `data_dir` (temporary when `None`).
    pub async fn start(data_dir: Option<std::path::PathBuf>) -> TestHost {
        let runtime = Runtime::new(RuntimeConfig {
            data_dir,
            pool_size: 200,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let apps = AppTable::new();
        let listener = server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, apps.clone(), async {
            let _ = stopped.await;
        }));
        TestHost {
            addr,
            runtime,
            apps,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Load the component at `path` under `manifest` and serve it.
    pub fn add(&self, manifest: Manifest, path: &str) -> Arc<App> {
        let app = Arc::new(
            self.runtime
                .load_file(manifest, std::path::Path::new(path))
                .expect("loading the app"),
        );
        self.apps.insert(app.clone());
        app
    }

    /// Stop listening and wait for open connections to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Resident memory of this process in bytes (Linux), for "memory stays bounded" checks.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}
