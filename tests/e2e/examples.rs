//! Every example app over real HTTP: hello's files and types, counter's API, api's echo and
//! computation.

use bytes::Bytes;
use fog_host::Manifest;
use fog_test_programs as programs;
use fog_tests::{TestHost, get, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_serves_its_site_with_content_types() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("hello"), programs::HELLO);
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "Hello from Fog"),
        ("/index.html", "text/html; charset=utf-8", "<!doctype html>"),
        ("/style.css", "text/css; charset=utf-8", "font-family"),
        ("/logo.svg", "image/svg+xml", "<svg"),
    ] {
        let reply = get(host.addr, "hello", path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), content_type, "{path}");
        assert!(reply.text().contains(needle), "{path}: {}", reply.text());
        assert!(!reply.header("x-fog-request-id").is_empty());
        assert!(reply.header("x-fog-fuel").parse::<u64>().unwrap() > 0);
    }
    let png = get(host.addr, "hello", "/dot.png").await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), "image/png");
    assert!(png.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(get(host.addr, "hello", "/missing").await.status, 404);
    let post = request(host.addr, "POST", "/", &[("x-fog-app", "hello")], "x")
        .await
        .unwrap();
    assert_eq!(post.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_found_by_host_name_and_unknown_apps_get_404() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("hello"), programs::HELLO);
    let reply = request(
        host.addr,
        "GET",
        "/",
        &[("host", "hello.localhost:8080")],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let unknown = get(host.addr, "nope", "/").await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.text().contains("no app named \"nope\""),
        "{}",
        unknown.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_counts_and_keeps_notes() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("counter"), programs::COUNTER);
    for n in 1..=3 {
        let page = get(host.addr, "counter", "/").await;
        assert_eq!(page.status, 200);
        assert!(
            page.text().contains(&format!("visitor {n}")),
            "{}",
            page.text()
        );
    }
    let count = get(host.addr, "counter", "/api/count").await;
    assert_eq!(count.header("content-type"), "application/json");
    assert_eq!(count.text(), r#"{"visits":3}"#);
    let add = request(
        host.addr,
        "POST",
        "/api/increment?by=10",
        &[("x-fog-app", "counter")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(add.text(), r#"{"visits":13}"#);
    let bad = request(
        host.addr,
        "POST",
        "/api/increment?by=x",
        &[("x-fog-app", "counter")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    let put = request(
        host.addr,
        "PUT",
        "/api/notes/todo",
        &[("x-fog-app", "counter")],
        "buy milk",
    )
    .await
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        get(host.addr, "counter", "/api/notes/todo").await.text(),
        "buy milk"
    );
    assert_eq!(
        get(host.addr, "counter", "/api/notes").await.text(),
        r#"{"notes":["todo"]}"#
    );
    assert_eq!(
        get(host.addr, "counter", "/api/notes/other").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_echoes_json_and_computes() {
    let host = TestHost::start(None).await;
    host.add(Manifest::new("api"), programs::API);
    let echo = request(
        host.addr,
        "POST",
        "/echo?x=1",
        &[("x-fog-app", "api"), ("content-type", "application/json")],
        r#"{"hello":["fog",1]}"#,
    )
    .await
    .unwrap();
    assert_eq!(echo.status, 200);
    assert_eq!(
        echo.text(),
        r#"{"content_type":"application/json","echo":{"hello":["fog",1]},"method":"POST","path":"/echo","query":"x=1"}"#
    );
    let not_json = request(host.addr, "POST", "/echo", &[("x-fog-app", "api")], "{")
        .await
        .unwrap();
    assert_eq!(not_json.status, 400);
    let primes = get(host.addr, "api", "/primes?n=100000").await;
    assert_eq!(primes.text(), r#"{"n":100000,"primes":9592}"#);
    let fib = get(host.addr, "api", "/fib?n=90").await;
    assert_eq!(fib.text(), r#"{"fib":2880067194370816120,"n":90}"#);
    // Bigger work burns more fuel.
    let small: u64 = get(host.addr, "api", "/fib?n=1000")
        .await
        .header("x-fog-fuel")
        .parse()
        .unwrap();
    let big: u64 = get(host.addr, "api", "/fib?n=1000000")
        .await
        .header("x-fog-fuel")
        .parse()
        .unwrap();
    assert!(big > small * 100, "fuel {small} vs {big}");
    assert_eq!(get(host.addr, "api", "/primes?n=x").await.status, 400);
    assert_eq!(get(host.addr, "api", "/primes").await.status, 400);
}
