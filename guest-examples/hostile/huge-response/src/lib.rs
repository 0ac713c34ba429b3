//! Hostile guest: answers 200 and then streams an endless body in 64 KiB writes.
//!
//! Contract: the host stops reading at its response-size limit and answers 500 with a reason
//! naming that limit.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct HugeResponse;

impl Guest for HugeResponse {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream taken once");
        let chunk = vec![b'x'; 4096];
        loop {
            if stream.blocking_write_and_flush(&chunk).is_err() {
                break;
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(HugeResponse);
