//! The response an app's handler returns: status, headers and body, with helpers for common types.

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// An HTTP response, built by the handler and sent in one piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `body` with `content_type` and status 200.
    pub fn bytes(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response::new(200)
            .with_header("content-type", content_type)
            .with_body(body)
    }

    /// Plain UTF-8 text, status 200.
    pub fn text(body: impl Into<String>) -> Self {
        Response::bytes("text/plain; charset=utf-8", body.into())
    }

    /// An HTML page, status 200.
    pub fn html(body: impl Into<String>) -> Self {
        Response::bytes("text/html; charset=utf-8", body.into())
    }

    /// `value` serialised as JSON, status 200 (500 with a reason if it cannot be serialised).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::bytes("application/json", body),
            Err(err) => Response::error(500, &format!("cannot encode JSON: {err}")),
        }
    }

    /// A one-line plain-text error with `status`.
    pub fn error(status: u16, reason: &str) -> Self {
        Response::text(format!("{reason}\n")).with_status(status)
    }

    /// 404 Not Found.
    pub fn not_found() -> Self {
        Response::error(404, "not found")
    }

    /// 405 Method Not Allowed.
    pub fn method_not_allowed() -> Self {
        Response::error(405, "method not allowed")
    }

    /// 400 Bad Request with a reason.
    pub fn bad_request(reason: &str) -> Self {
        Response::error(400, reason)
    }

    /// The same response with another status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same response with a header added (names are sent in lower case).
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The same response with another body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The value of header `name` (case-insensitive), if set and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Write this response to the host through `out`.
    pub(crate) fn send(self, out: ResponseOutparam) {
        let mut headers = self.headers;
        if !headers.iter().any(|(name, _)| name == "content-length") {
            headers.push((
                "content-length".to_string(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        // A header the host refuses (forbidden or malformed) leaves the response without headers
        // rather than without an answer.
        let fields = Fields::from_list(&headers).unwrap_or_else(|_| Fields::new());
        // A new `outgoing-response` is already 200: only another status costs a call.
        let response = OutgoingResponse::new(fields);
        if self.status != 200 && response.set_status_code(self.status).is_err() {
            let _ = response.set_status_code(500);
        }
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            // `blocking_write_and_flush` takes at most 4096 bytes per call.
            for chunk in self.body.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_set_type_and_status() {
        let page = Response::html("<p>hi</p>");
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.header("Content-Type"),
            Some("text/html; charset=utf-8")
        );
        let err = Response::error(503, "busy");
        assert_eq!(err.status(), 503);
        assert_eq!(err.body(), b"busy\n");
        let json = Response::json(&serde_json::json!({"ok": true}));
        assert_eq!(json.header("content-type"), Some("application/json"));
        assert_eq!(json.body(), br#"{"ok":true}"#);
    }
}
