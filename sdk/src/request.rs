//! The request an app's handler receives: method, path, query, headers and the whole body.

use std::cell::OnceCell;
use std::rc::Rc;

use wasip2::http::types::{IncomingRequest, Method};
use wasip2::io::streams::StreamError;

use crate::{MAX_REQUEST_BODY, Response};

/// An HTTP request. Method, target and body are read before the handler runs; the headers are
/// fetched from the host the first time the handler asks for one, so a handler that never looks
/// at them does not pay for copying them in.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    query: String,
    headers: Headers,
    body: Vec<u8>,
}

/// A request's headers as (lower-case name, raw value) pairs, read on first use.
#[derive(Debug, Clone)]
struct Headers {
    read: OnceCell<Vec<(String, Vec<u8>)>>,
    /// The request to read them from (kept alive with the `Request`); `None` for a request
    /// built by hand, whose headers are known from the start.
    from: Option<Rc<IncomingRequest>>,
}

impl Headers {
    fn known(headers: Vec<(String, Vec<u8>)>) -> Self {
        Headers {
            read: OnceCell::from(lower_case(headers)),
            from: None,
        }
    }

    fn get(&self) -> &[(String, Vec<u8>)] {
        self.read.get_or_init(|| match &self.from {
            // The `fields` handle is dropped here, before the request it belongs to.
            Some(incoming) => lower_case(incoming.headers().entries()),
            None => Vec::new(),
        })
    }
}

fn lower_case(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect()
}

impl Request {
    /// Build a request by hand, for an app's own unit tests.
    ///
    /// `target` is the path with an optional `?query`.
    pub fn new(method: &str, target: &str, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) -> Self {
        Self::with_headers(method, target, Headers::known(headers), body)
    }

    fn with_headers(method: &str, target: &str, headers: Headers, body: Vec<u8>) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, query),
            None => (target, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        Request {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body,
        }
    }

    /// Read a `wasi:http` incoming request; on failure, the response to send instead.
    pub(crate) fn from_incoming(incoming: IncomingRequest) -> Result<Self, Response> {
        let method = match incoming.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(other) => other.to_ascii_uppercase(),
        };
        let target = incoming
            .path_with_query()
            .unwrap_or_else(|| "/".to_string());
        let body = read_body(&incoming)?;
        let headers = Headers {
            read: OnceCell::new(),
            from: Some(Rc::new(incoming)),
        };
        Ok(Request::with_headers(&method, &target, headers, body))
    }

    /// The method in upper case: `"GET"`, `"POST"`, ...
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, always starting with `/`, still percent-encoded.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string without the `?` (empty when there is none).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The first value of query parameter `name`, percent-decoded (`+` reads as a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key) == name).then(|| percent_decode(value))
            })
            .next()
    }

    /// The first value of header `name` (case-insensitive), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .get()
            .iter()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// All headers as (lower-case name, raw value) pairs, in the order received.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        self.headers.get()
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Bytes asked for per read of the request body.
const READ_CHUNK: u64 = 64 * 1024;

/// Read the whole body, refusing one larger than [`MAX_REQUEST_BODY`].
fn read_body(incoming: &IncomingRequest) -> Result<Vec<u8>, Response> {
    let unreadable = |what: &str| Response::error(400, &format!("request body unreadable: {what}"));
    let body = incoming
        .consume()
        .map_err(|()| unreadable("consumed twice"))?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| unreadable("no stream"))?;
        loop {
            // A non-blocking read first: a body that is already there (or already over, as an
            // empty one is) costs no wait; only when nothing is ready yet does the read block.
            let chunk = match stream.read(READ_CHUNK) {
                Ok(chunk) if chunk.is_empty() => stream.blocking_read(READ_CHUNK),
                other => other,
            };
            match chunk {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > MAX_REQUEST_BODY {
                        return Err(Response::error(413, "request body too large"));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    return Err(unreadable(&err.to_debug_string()));
                }
            }
        }
    }
    Ok(bytes)
}

/// Decode `%XX` escapes and `+`; invalid escapes are kept as written.
fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let req = Request::new(
            "get",
            "/calc?n=42&name=a%20b+c&bad=%zz&end=%4",
            vec![],
            vec![],
        );
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/calc");
        assert_eq!(req.query_param("n").as_deref(), Some("42"));
        assert_eq!(req.query_param("name").as_deref(), Some("a b c"));
        assert_eq!(req.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(req.query_param("end").as_deref(), Some("%4"));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn headers_are_case_insensitive() {
        let req = Request::new(
            "POST",
            "",
            vec![("Content-Type".into(), b"application/json".to_vec())],
            br#"{"a":1}"#.to_vec(),
        );
        assert_eq!(req.path(), "/");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("CONTENT-TYPE"), Some("application/json"));
        let value: serde_json::Value = req.json().unwrap();
        assert_eq!(value["a"], 1);
    }
}
