//! Upload guest: reads the request body as a stream (never whole) and answers its length and
//! SHA-256, `LEN HEX`; a body that breaks off (cut at the app's limit) answers 400 with the
//! error the host gave. The tests send it bodies far larger than its memory.

use sha2::{Digest, Sha256};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

struct Upload;

/// Read `request`'s body to its end: (length, SHA-256), or why it broke off.
fn digest(request: IncomingRequest) -> Result<(u64, String), String> {
    let body = request.consume().map_err(|()| "body taken twice".to_string())?;
    let stream = body.stream().map_err(|()| "stream taken twice".to_string())?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                len += chunk.len() as u64;
                hasher.update(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => return Err(err.to_debug_string()),
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(body);
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((len, hex))
}

impl Guest for Upload {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match digest(request) {
            Ok((len, hex)) => (200, format!("{len} {hex}")),
            Err(err) => (400, format!("request body broke off: {err}")),
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream taken once");
        let _ = stream.blocking_write_and_flush(text.as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Upload);
