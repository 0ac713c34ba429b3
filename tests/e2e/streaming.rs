//! Streamed responses (apps allowed more than the default response size, such as static
//! sites): a body over the app's limit is cut (the head has gone out, so the connection breaks
//! instead of ending as if complete), and an app within the default limit keeps its clean 500.

use fog_host::{Limits, Manifest};
use fog_test_programs as programs;
use fog_tests::TestHost;
use http_body_util::BodyExt;

fn huge(name: &str, max_response_body: u64) -> Manifest {
    Manifest {
        limits: Limits {
            max_response_body,
            ..Limits::default()
        },
        ..Manifest::new(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_is_cut_not_completed() {
    let host = TestHost::start(None).await;
    let limit = 24u64 << 20;
    host.add(huge("big", limit), programs::HUGE_RESPONSE);

    let stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/")
        .header("host", "localhost")
        .header("x-fog-app", "big")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    // The head went out before the body reached the limit.
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    let ended = loop {
        match body.frame().await {
            Some(Ok(frame)) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
            Some(Err(err)) => break Err(err),
            None => break Ok(()),
        }
    };
    assert!(
        ended.is_err(),
        "the body ended as if complete after {received} bytes"
    );
    assert!(
        received <= limit,
        "{received} bytes sent past the limit {limit}"
    );
    let meter = host.apps.get("big").unwrap().meter();
    assert_eq!(meter.requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_within_the_default_limit_still_gets_a_clean_500() {
    let host = TestHost::start(None).await;
    host.add(
        huge("small", Limits::default().max_response_body),
        programs::HUGE_RESPONSE,
    );
    let reply = fog_tests::get(host.addr, "small", "/").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-fog-error"), "response-too-large");
}
