//! Hostile guest: answers 200 and then trickles its body, one byte every 200 ms for a minute.
//!
//! Contract: the host gives up at the request's wall-clock deadline and answers 500 with a reason
//! naming the deadline.

use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct SlowBody;

impl Guest for SlowBody {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream taken once");
        for _ in 0..300 {
            if stream.blocking_write_and_flush(b".").is_err() {
                break;
            }
            monotonic_clock::subscribe_duration(200_000_000).block();
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(SlowBody);
