//! Hostile guest: tries an outbound HTTP request to `http://127.0.0.1:<port>/` (`?port=N`;
//! `&host=H` and `&scheme=https` change the host and scheme).
//!
//! Contract: answers 200 with a body starting `blocked:` when the host refused the request, or
//! `reached:` followed by the status when the request went out. Without permission in its
//! manifest, a Fog host must make it say `blocked:`.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct OutboundHttp;

fn attempt(scheme: &str, host: &str, port: &str) -> String {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(&format!("{host}:{port}")));
    let _ = request.set_path_with_query(Some("/"));
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(err) => return format!("blocked: {err:?}"),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => format!("reached: {}", response.status()),
        Some(Ok(Err(err))) => format!("blocked: {err:?}"),
        other => format!("blocked: {other:?}"),
    }
}

impl Guest for OutboundHttp {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let param = |name: &str, default: &str| {
            query
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or(default)
                .to_string()
        };
        let message = attempt(
            &param("scheme", "http"),
            &param("host", "127.0.0.1"),
            &param("port", "9"),
        );
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(message.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(OutboundHttp);
