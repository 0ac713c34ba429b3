//! Traces: a router and a host started with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a small
//! OTLP/HTTP receiver in the test send it, for one request, the router's span, the host's span
//! (its child, the context carried in `traceparent` over HTX) and the guest's span, all in one
//! trace and carrying Fog's request id.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;

use crate::fog::{run, spawn, spawn_with_env};

/// One span as received.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    request_id: Option<String>,
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// An OTLP/HTTP (protobuf) trace receiver on loopback: every span it is sent.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(fog_net::serve_http1(
        listener,
        move |request: http::Request<hyper::body::Incoming>| {
            let kept = kept.clone();
            async move {
                assert_eq!(request.uri().path(), "/v1/traces");
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .as_ref()
                        .and_then(|r| string_attribute(&r.attributes, "service.name"))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                service: service.clone(),
                                request_id: string_attribute(&span.attributes, "fog.request_id"),
                                name: span.name,
                                trace_id: span.trace_id,
                                span_id: span.span_id,
                                parent_span_id: span.parent_span_id,
                            });
                        }
                    }
                }
                let mut response = http::Response::new(Full::new(Bytes::from(
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                response
            }
        },
        std::future::pending(),
    ));
    (addr, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_from_router_to_host_to_guest() {
    let (otlp, spans) = receiver().await;
    let endpoint = format!("http://{otlp}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Export within 100 ms rather than 5 s, so the test waits little.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let (code, _, err) = run(&["keygen", "--key", &path("router/device.key")]);
    assert_eq!(code, 0, "{err}");
    let router_key = fog_proto::auth::Identity::from_text(
        &std::fs::read_to_string(dir.path().join("router/device.key")).unwrap(),
    )
    .unwrap()
    .public_hex();
    let control = spawn(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &path("control"),
        "--trust-router",
        &router_key,
    ]);
    let control_url = control.url();
    // The router reaches the host over HTX, on the connection the host dials out with.
    let router = spawn_with_env(
        &[
            "router",
            "--listen",
            "127.0.0.1:0",
            "--control",
            &control_url,
            "--data",
            &path("router"),
            "--attach",
            "127.0.0.1:0",
            "--visitor-rate",
            "0",
        ],
        &env,
    );
    let _host = spawn_with_env(
        &[
            "host",
            "--control",
            &control_url,
            "--data",
            &path("host"),
            "--cpu",
            "1",
            "--always-on",
        ],
        &env,
    );
    let key = path("developer.key");
    let (code, _, err) = run(&["keygen", "--key", &key]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "publish",
        fog_test_programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--control",
        &control_url,
        "--key",
        &key,
    ]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let request_id = loop {
        let reply = fog_tests::request(router.addr, "GET", "/apps/hello/", &[], "").await;
        if let Ok(reply) = reply
            && reply.status == 200
        {
            break reply.headers["x-fog-request-id"]
                .to_str()
                .unwrap()
                .to_string();
        }
        assert!(Instant::now() < deadline, "hello never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The three spans of that request arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    let of_request = |name: &str| {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == name && s.request_id.as_deref() == Some(request_id.as_str()))
            .cloned()
    };
    let (router_span, host_span, guest_span) = loop {
        if let (Some(r), Some(h), Some(g)) = (
            of_request("router.request"),
            of_request("host.request"),
            of_request("guest"),
        ) {
            break (r, h, g);
        }
        assert!(
            Instant::now() < deadline,
            "spans of request {request_id} missing; received: {:#?}",
            spans.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(router_span.service, "fog-router");
    assert_eq!(host_span.service, "fog-host");
    assert_eq!(guest_span.service, "fog-host");
    assert_eq!(router_span.trace_id.len(), 16);
    assert_eq!(host_span.trace_id, router_span.trace_id, "one trace");
    assert_eq!(guest_span.trace_id, router_span.trace_id, "one trace");
    assert_eq!(
        host_span.parent_span_id, router_span.span_id,
        "the host's span is the router's child"
    );
    assert_eq!(
        guest_span.parent_span_id, host_span.span_id,
        "the guest's span is the host's child"
    );
    assert!(
        router_span.parent_span_id.is_empty(),
        "the router starts the trace"
    );
}
