//! `hello`: a small static site (HTML, CSS, an SVG and a PNG) with correct content types.

use fog_sdk::{Request, Response};

/// The site's files, compiled into the component.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../static/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../static/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/style.css"),
    ),
    (
        "/logo.svg",
        "image/svg+xml",
        include_bytes!("../static/logo.svg"),
    ),
    ("/dot.png", "image/png", include_bytes!("../static/dot.png")),
];

fn handle(req: Request) -> Response {
    if req.method() != "GET" && req.method() != "HEAD" {
        return Response::method_not_allowed();
    }
    match FILES.iter().find(|(path, _, _)| *path == req.path()) {
        Some((_, content_type, body)) => {
            Response::bytes(content_type, *body).with_header("cache-control", "public, max-age=60")
        }
        None => Response::not_found(),
    }
}

fog_sdk::app!(handle);
