//! Static sites with real processes: `fog publish DIR` to a control plane, a router and a host;
//! paths, content types, index pages, the 404 page, ETags, ranges, precompressed variants, a
//! 200 MiB file streamed with the host's and router's memory measured, and bad input refused
//! (`fog new static` as a newcomer uses it is in `newcomer`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use fog_proto::api::AppInfo;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::publish::Fog;

/// Write `files` (path, contents) under `root`.
fn write_site(root: &Path, files: &[(&str, &[u8])]) {
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

const INDEX: &str = "<h1>home</h1>";
const DOCS: &str = "<h1>docs</h1>";
const PAGE: &str = "<h1>a nested page</h1>";
const NOT_FOUND: &str = "<h1>custom 404</h1>";
const CSS: &str = "body { color: #123; }";

/// A site with nested directories, a 404 page, several types and a gzip variant.
fn sample_site(root: &Path) {
    let bin: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    write_site(
        root,
        &[
            ("index.html", INDEX.as_bytes()),
            ("docs/index.html", DOCS.as_bytes()),
            ("docs/guide/page.html", PAGE.as_bytes()),
            ("404.html", NOT_FOUND.as_bytes()),
            ("style.css", CSS.as_bytes()),
            // Not real gzip: the test checks that these exact bytes are what is sent.
            ("style.css.gz", b"gzipped-css-stand-in"),
            ("logo.svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
            ("data.json", b"{\"a\":1}"),
            ("blob.bin", &bin),
        ],
    );
}

/// `fog publish DIR --name NAME --json` → the app, asserting success.
fn publish_site(fog: &Fog, dir: &Path, name: &str) -> AppInfo {
    let (code, out, err) = fog.fog(&["publish", dir.to_str().unwrap(), "--name", name, "--json"]);
    assert_eq!(code, 0, "{err}");
    let info: AppInfo = serde_json::from_str(&out).unwrap();
    assert_eq!(info.running.len(), 1, "{info:?}");
    info
}

/// GET `target` from the site `app` through the router with extra `headers`.
async fn get(fog: &Fog, app: &str, target: &str, headers: &[(&str, &str)]) -> fog_tests::Reply {
    let host = format!("{app}.localhost");
    let mut all = vec![("host", host.as_str())];
    all.extend_from_slice(headers);
    fog_tests::request(fog.router.addr, "GET", target, &all, "")
        .await
        .unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_maps_paths_to_files_with_types_index_pages_and_its_404_page() {
    let fog = Fog::start(1);
    let site = tempfile::tempdir().unwrap();
    sample_site(site.path());
    publish_site(&fog, site.path(), "site");

    for (target, status, body, content_type) in [
        ("/", 200, INDEX, "text/html; charset=utf-8"),
        ("/docs/", 200, DOCS, "text/html; charset=utf-8"),
        (
            "/docs/guide/page.html",
            200,
            PAGE,
            "text/html; charset=utf-8",
        ),
        ("/style.css", 200, CSS, "text/css; charset=utf-8"),
        ("/missing/page", 404, NOT_FOUND, "text/html; charset=utf-8"),
        ("/../etc/passwd", 404, NOT_FOUND, "text/html; charset=utf-8"),
    ] {
        let reply = get(&fog, "site", target, &[]).await;
        assert_eq!(reply.status, status, "{target}: {}", reply.text());
        assert_eq!(reply.text(), body, "{target}");
        assert_eq!(reply.header("content-type"), content_type, "{target}");
    }
    for (target, content_type) in [
        ("/logo.svg", "image/svg+xml"),
        ("/data.json", "application/json"),
        ("/blob.bin", "application/octet-stream"),
    ] {
        let reply = get(&fog, "site", target, &[]).await;
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(reply.header("content-type"), content_type, "{target}");
    }
    // A directory without its slash redirects, so relative links inside it resolve.
    let reply = get(&fog, "site", "/docs", &[]).await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), "/docs/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_answers_304_on_a_matching_etag_and_206_or_416_on_ranges() {
    let fog = Fog::start(1);
    let site = tempfile::tempdir().unwrap();
    sample_site(site.path());
    publish_site(&fog, site.path(), "site");

    let first = get(&fog, "site", "/docs/", &[]).await;
    let etag = first.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag:?}");
    let again = get(&fog, "site", "/docs/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);
    let other = get(
        &fog,
        "site",
        "/docs/",
        &[("if-none-match", "\"something-else\"")],
    )
    .await;
    assert_eq!(other.status, 200);

    let bin = std::fs::read(site.path().join("blob.bin")).unwrap();
    let reply = get(&fog, "site", "/blob.bin", &[("range", "bytes=1000-1999")]).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), "bytes 1000-1999/100000");
    assert_eq!(&reply.body[..], &bin[1000..2000]);
    let tail = get(&fog, "site", "/blob.bin", &[("range", "bytes=-10")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], &bin[bin.len() - 10..]);
    let beyond = get(&fog, "site", "/blob.bin", &[("range", "bytes=100000-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), "bytes */100000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_sends_the_gzip_variant_only_to_visitors_that_accept_it() {
    let fog = Fog::start(1);
    let site = tempfile::tempdir().unwrap();
    sample_site(site.path());
    publish_site(&fog, site.path(), "site");

    let gzipped = get(
        &fog,
        "site",
        "/style.css",
        &[("accept-encoding", "br;q=0, gzip")],
    )
    .await;
    assert_eq!(gzipped.status, 200);
    assert_eq!(gzipped.header("content-encoding"), "gzip");
    assert_eq!(gzipped.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(gzipped.header("vary"), "Accept-Encoding");
    assert_eq!(gzipped.text(), "gzipped-css-stand-in");

    let plain = get(
        &fog,
        "site",
        "/style.css",
        &[("accept-encoding", "identity")],
    )
    .await;
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.header("vary"), "Accept-Encoding");
    assert_eq!(plain.text(), CSS);
    assert_ne!(plain.header("etag"), gzipped.header("etag"));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_streams_with_host_and_router_memory_bounded() {
    const SIZE: usize = 200 << 20;
    let fog = Fog::start(1);
    let site = tempfile::tempdir().unwrap();
    write_site(site.path(), &[("index.html", INDEX.as_bytes())]);
    // A repeated, non-constant 1 MiB pattern: fast to write, and a shifted or dropped chunk
    // changes the hash.
    let pattern: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut expected = Sha256::new();
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(site.path().join("big.bin")).unwrap());
    for chunk in 0..SIZE >> 20 {
        let mut block = pattern.clone();
        block[..8].copy_from_slice(&(chunk as u64).to_le_bytes());
        expected.update(&block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let expected = hex::encode(expected.finalize());
    publish_site(&fog, site.path(), "big");

    let host_pid = fog.hosts[0].child.id();
    let router_pid = fog.router.child.id();
    let (host_before, router_before) = (rss(host_pid), rss(router_pid));

    let stream = tokio::net::TcpStream::connect(fog.router.addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/big.bin")
        .header("host", "big.localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let started = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let (mut host_peak, mut router_peak) = (host_before, router_before);
    let mut next_sample = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body streams to the end");
        if let Ok(data) = frame.into_data() {
            received += data.len();
            hasher.update(&data);
        }
        // Sample both processes every 4 MiB received, while the file is in flight.
        if received >= next_sample {
            host_peak = host_peak.max(rss(host_pid));
            router_peak = router_peak.max(rss(router_pid));
            next_sample += 4 << 20;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(received, SIZE);
    assert_eq!(hex::encode(hasher.finalize()), expected);
    eprintln!(
        "200 MiB in {elapsed:?}; host RSS {} → peak {} MiB, router RSS {} → peak {} MiB",
        host_before >> 20,
        host_peak >> 20,
        router_before >> 20,
        router_peak >> 20
    );
    // Buffering the file would add 200 MiB; streaming adds a few chunks.
    assert!(
        host_peak < host_before + (48 << 20),
        "host grew from {host_before} to {host_peak} bytes"
    );
    assert!(
        router_peak < router_before + (48 << 20),
        "router grew from {router_before} to {router_peak} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_site_directories_are_refused_and_nothing_is_published() {
    let fog = Fog::start(1);
    let temp = tempfile::tempdir().unwrap();

    let empty = temp.path().join("empty");
    std::fs::create_dir_all(empty.join("only/subdirectories")).unwrap();
    let file = temp.path().join("file.html");
    std::fs::write(&file, INDEX).unwrap();
    let huge = temp.path().join("huge");
    write_site(&huge, &[("index.html", INDEX.as_bytes())]);
    // Sparse: over the limit without writing it; the CLI refuses before reading it.
    std::fs::File::create(huge.join("video.mp4"))
        .unwrap()
        .set_len(fog_proto::bundle::MAX_BUNDLE_BYTES + 1)
        .unwrap();

    for (dir, reason) in [
        (&empty, "holds no files"),
        (&huge, "over the site size limit"),
        (&temp.path().join("missing"), "cannot read"),
    ] {
        let (code, _, err) = fog.fog(&["publish", dir.to_str().unwrap(), "--name", "bad"]);
        assert_eq!(code, 1, "{}: {err}", dir.display());
        assert!(err.contains(reason), "{}: {err}", dir.display());
    }
    // A file that is not a component is refused as an app, not published as a site.
    let (code, _, err) = fog.fog(&["publish", file.to_str().unwrap(), "--name", "bad"]);
    assert_ne!(code, 0, "{err}");

    let (code, out, err) = fog.fog(&["ps", "--json"]);
    assert_eq!(code, 0, "{err}");
    let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
    assert!(apps.is_empty(), "{apps:?}");
}
