//! Request bodies stream from the visitor through the router and the host into the guest: a
//! 64 MiB chunked upload read whole by the guest with the host's and router's memory measured,
//! and bodies over the app's limit cut with 413, with or without a Content-Length.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use fog_proto::api::AppInfo;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use sha2::{Digest, Sha256};

use crate::publish::Fog;
use fog_test_programs as programs;

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// The `n`th 1 MiB block of a generated body: a non-constant pattern stamped with its index, so
/// a dropped, repeated or shifted block changes the hash.
fn block(n: usize) -> Bytes {
    let mut block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    block[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Bytes::from(block)
}

/// A request body of `blocks` MiB made as it is sent, with no length (so it goes chunked); every
/// 4 MiB it samples the resident memory of `pids` into `peaks`.
struct Generated {
    next: usize,
    blocks: usize,
    pids: Vec<u32>,
    peaks: Arc<Mutex<Vec<u64>>>,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.next == self.blocks {
            return Poll::Ready(None);
        }
        if self.next.is_multiple_of(4) {
            let mut peaks = self.peaks.lock().unwrap();
            for (peak, pid) in peaks.iter_mut().zip(&self.pids) {
                *peak = (*peak).max(rss(*pid));
            }
        }
        let block = block(self.next);
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(block))))
    }
}

/// `fog publish` the upload guest as `name` with `limits` flags.
fn publish_upload(fog: &Fog, name: &str, limits: &[&str]) -> AppInfo {
    let mut args = vec!["publish", programs::UPLOAD, "--name", name, "--json"];
    args.extend_from_slice(limits);
    let (code, out, err) = fog.fog(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// POST `body` to `app` through the router on a fresh connection → (status, error kind, text).
async fn post<B>(fog: &Fog, app: &str, body: B) -> (u16, String, String)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(fog.router.addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/")
        .header("host", format!("{app}.localhost"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get(fog_proto::ERROR_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_chunked_upload_streams_to_the_guest_with_host_and_router_memory_bounded() {
    const BLOCKS: usize = 64;
    let fog = Fog::start(1);
    // Room for the body and for hashing it: the point here is the path, not the limits.
    publish_upload(
        &fog,
        "upload",
        &[
            "--max-request-body",
            "128",
            "--fuel",
            "200000000000",
            "--timeout",
            "300000",
        ],
    );
    let mut expected = Sha256::new();
    for n in 0..BLOCKS {
        expected.update(block(n));
    }
    let expected = format!("{} {}", BLOCKS << 20, hex::encode(expected.finalize()));

    let pids = vec![fog.hosts[0].child.id(), fog.router.child.id()];
    let before: Vec<u64> = pids.iter().map(|&pid| rss(pid)).collect();
    let peaks = Arc::new(Mutex::new(before.clone()));
    let body = Generated {
        next: 0,
        blocks: BLOCKS,
        pids: pids.clone(),
        peaks: peaks.clone(),
    };
    let started = std::time::Instant::now();
    let (status, kind, text) = post(&fog, "upload", body).await;
    let elapsed = started.elapsed();
    assert_eq!((status, kind.as_str()), (200, ""), "{text}");
    // The guest read every byte, in order.
    assert_eq!(text, expected);
    let peaks = peaks.lock().unwrap().clone();
    eprintln!(
        "64 MiB upload in {elapsed:?}; host RSS {} → peak {} MiB, router RSS {} → peak {} MiB",
        before[0] >> 20,
        peaks[0] >> 20,
        before[1] >> 20,
        peaks[1] >> 20
    );
    // Buffering the body would add 64 MiB to each; streaming adds a few chunks.
    for (name, (before, peak)) in ["host", "router"].iter().zip(before.iter().zip(&peaks)) {
        assert!(
            *peak < before + (24 << 20),
            "{name} grew from {before} to {peak} bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_apps_limit_is_cut_with_413_with_or_without_a_length() {
    let fog = Fog::start(1);
    publish_upload(&fog, "small", &["--max-request-body", "1"]);
    let host = fog.hosts[0].child.id();
    let host_before = rss(host);

    // No Content-Length: the limit is only crossed mid-stream, past what the router keeps.
    let body = Generated {
        next: 0,
        blocks: 8,
        pids: Vec::new(),
        peaks: Arc::new(Mutex::new(Vec::new())),
    };
    let (status, kind, text) = post(&fog, "small", body).await;
    assert_eq!(
        (status, kind.as_str()),
        (413, "request-too-large"),
        "{text}"
    );
    assert!(text.contains("1048576"), "{text}");

    // A declared length over the limit is refused before the guest runs.
    let declared = http_body_util::Full::new(Bytes::from(vec![7u8; 3 << 20]));
    let (status, kind, text) = post(&fog, "small", declared).await;
    assert_eq!(
        (status, kind.as_str()),
        (413, "request-too-large"),
        "{text}"
    );

    // Nothing is left behind: the app still takes a body within its limit, and the host did not
    // keep what it refused.
    let within = Bytes::from(vec![1u8; 1000]);
    let (status, _, text) = post(&fog, "small", http_body_util::Full::new(within.clone())).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text,
        format!("1000 {}", hex::encode(Sha256::digest(&within)))
    );
    let host_after = rss(host);
    assert!(
        host_after < host_before + (16 << 20),
        "host grew from {host_before} to {host_after} bytes"
    );
}
