//! The operator's dashboard at `/dashboard`: a page, a script and a stylesheet compiled into
//! the binary (no CDN: it works with no internet). The script polls the `/v1` JSON views and
//! puts every name it shows in the page as text, never as HTML.

use crate::api::{Answer, bytes_response};
use crate::error::ApiError;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The answer for `path` if it is the dashboard's, or `None` (not a dashboard path).
pub(crate) fn page(path: &str, query: Option<&str>) -> Option<Answer> {
    let rest = path.strip_prefix("/dashboard")?;
    let (content_type, body) = match rest {
        "" | "/" => ("text/html; charset=utf-8", INDEX),
        "/dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => ("text/css; charset=utf-8", STYLE),
        // `/dashboardX` is no dashboard path at all.
        other if !other.starts_with('/') => return None,
        _ => {
            return Some(Err(ApiError::NotFound(format!(
                "no dashboard file {path}: the dashboard is /dashboard"
            ))));
        }
    };
    // The page takes no parameters: a query is a mistake worth saying so.
    if query.is_some_and(|q| !q.is_empty()) {
        return Some(Err(ApiError::BadRequest(
            "the dashboard takes no query parameters".into(),
        )));
    }
    let mut response = bytes_response(content_type, body.as_bytes().to_vec());
    // The page itself: no framing by other sites, scripts only from here.
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; object-src 'none'",
        ),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Some(Ok(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_files_and_clear_refusals() {
        let ok = |path: &str| page(path, None).unwrap().unwrap();
        assert_eq!(ok("/dashboard").status(), 200);
        assert_eq!(
            ok("/dashboard/dashboard.js").headers()[http::header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(page("/dashboardx", None).is_none());
        assert!(page("/v1/apps", None).is_none());
        assert!(matches!(
            page("/dashboard/../../etc/passwd", None),
            Some(Err(ApiError::NotFound(_)))
        ));
        assert!(matches!(
            page("/dashboard", Some("app=<script>")),
            Some(Err(ApiError::BadRequest(_)))
        ));
    }

    #[test]
    fn the_script_never_writes_html() {
        // Names come from developers and devices: they go in as text only.
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!SCRIPT.contains(forbidden), "dashboard.js uses {forbidden}");
        }
    }
}
