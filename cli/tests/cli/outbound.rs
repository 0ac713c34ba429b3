//! Outbound HTTP per app (`fog publish --allow-outbound`): a guest reaches the origins it was
//! granted and nothing else; local servers on loopback stand in for the outside hosts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fog_test_programs as programs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fog::run;
use crate::publish::Fog;

/// A loopback HTTP server answering every request with a tiny 200, counting connections.
async fn counting_server() -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, count)
}

/// What the outbound guest says for `query` through the router (polled while the route or a
/// new grant is on its way, until `done` holds).
async fn call(fog: &Fog, query: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = fog_tests::request(
            fog.router.addr,
            "GET",
            &format!("/?{query}"),
            &[("host", "caller.localhost")],
            "",
        )
        .await;
        let text = match reply {
            Ok(reply) if reply.status == 200 => reply.text(),
            Ok(reply) => format!("status {}: {}", reply.status, reply.text()),
            Err(err) => err,
        };
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn blocked(text: &str) -> bool {
    text.starts_with("blocked:") && text.contains("HttpRequestDenied")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reaches_the_origins_it_was_granted_and_nothing_else() {
    let (listed, listed_hits) = counting_server().await;
    let (unlisted, unlisted_hits) = counting_server().await;
    let fog = Fog::start(1);
    let publish = |port: u16| {
        let origin = format!("http://127.0.0.1:{port}");
        let (code, _, err) = fog.fog(&[
            "publish",
            programs::OUTBOUND_HTTP,
            "--name",
            "caller",
            "--allow-outbound",
            &origin,
        ]);
        assert_eq!(code, 0, "{err}");
    };
    publish(listed);

    let text = call(&fog, &format!("port={listed}"), |t| t == "reached: 200").await;
    assert_eq!(text, "reached: 200");
    let reached = listed_hits.load(Ordering::SeqCst);
    assert!(reached >= 1);
    // Another port, another host name for the same address, another scheme: all refused.
    for query in [
        format!("port={unlisted}"),
        format!("host=localhost&port={listed}"),
        format!("scheme=https&port={listed}"),
    ] {
        let text = call(&fog, &query, |_| true).await;
        assert!(blocked(&text), "{query}: {text}");
    }
    assert_eq!(unlisted_hits.load(Ordering::SeqCst), 0);
    assert_eq!(listed_hits.load(Ordering::SeqCst), reached);

    // The same component published again with another origin: the running replica takes the
    // new grant (same code, so the host keeps the app and swaps what it may reach).
    publish(unlisted);
    let text = call(&fog, &format!("port={unlisted}"), |t| t == "reached: 200").await;
    assert_eq!(text, "reached: 200");
    let text = call(&fog, &format!("port={listed}"), |_| true).await;
    assert!(blocked(&text), "{text}");
    assert_eq!(listed_hits.load(Ordering::SeqCst), reached);
}

#[test]
fn malformed_outbound_origins_are_refused_on_the_command_line() {
    // An address nothing listens on: a request sent would fail with exit 1, not 2.
    for bad in [
        "api.example.com",
        "127.0.0.1:8080",
        "ftp://example.com",
        "https://example.com/path",
        "http://",
    ] {
        let (code, _, err) = run(&[
            "publish",
            programs::HELLO,
            "--allow-outbound",
            bad,
            "--control",
            "http://127.0.0.1:9",
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("not an outbound origin"), "{bad}: {err}");
    }
}
