//! Fog's fileserver: serves a static site from the read-only directory the host gives it (an
//! unpacked site bundle), so `fog publish DIR` needs no toolchain.
//!
//! The directory holds `site/<path>`, a line `<sha256> <size>` for every file of the site, and
//! `objects/<sha256>`, the bytes. Contract: `GET /a/` serves `site/a/index.html`; `GET /a` on a
//! directory redirects (301) to `/a/`; a missing file gets `404.html` with status 404 (or a
//! plain 404); the content type follows the extension; every file has a strong ETag (its
//! sha256), and a matching `If-None-Match` gets 304; one `Range: bytes=…` gets 206 with
//! `Content-Range` (416 when it cannot be satisfied); a `.br` or `.gz` sibling is served with
//! `Content-Encoding` when `Accept-Encoding` allows it (`Vary: Accept-Encoding` whenever one
//! exists); bodies are spliced from the file to the response by the host in chunks, never read
//! whole into the guest's memory. Methods other than GET and HEAD get 405.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, OpenFlags, PathFlags,
};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct FileServer;

/// A file of the site: where its bytes are and how many there are.
struct Entry {
    sha256: String,
    size: u64,
}

impl Entry {
    fn etag(&self) -> String {
        format!("\"{}\"", &self.sha256[..32])
    }
}

/// What a site path names.
enum Found {
    File(Entry),
    Dir,
    Missing,
}

fn lookup(root: &Descriptor, rel: &str) -> Found {
    let pointer = format!("site/{rel}");
    match root.stat_at(PathFlags::empty(), &pointer) {
        Ok(stat) if stat.type_ == DescriptorType::Directory => return Found::Dir,
        Ok(stat) if stat.type_ == DescriptorType::RegularFile && stat.size < 256 => {}
        _ => return Found::Missing,
    }
    let Ok(file) = root.open_at(
        PathFlags::empty(),
        &pointer,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    ) else {
        return Found::Missing;
    };
    let Ok((bytes, _)) = file.read(256, 0) else {
        return Found::Missing;
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some(sha), Some(size)) if sha.len() == 64 => Found::File(Entry {
            sha256: sha.to_string(),
            size,
        }),
        _ => Found::Missing,
    }
}

fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "csv" => "text/csv; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "zip" => "application/zip",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// Percent-decode a URL path; `None` if it is not UTF-8 or has a bad escape.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The site path a URL path names (no leading slash), or `None` for one that tries to leave
/// the site.
fn site_path(decoded: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains(['\\', '\0']) => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Whether `Accept-Encoding` lists `coding` with a non-zero quality.
fn accepts(accept_encoding: &str, coding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        name.eq_ignore_ascii_case(coding) && q > 0.0
    })
}

/// The byte range asked for: `None` to send the whole file (no header, another unit, or several
/// ranges), `Some(Err(()))` when it cannot be satisfied.
fn parse_range(header: Option<&str>, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        match last.parse::<u64>() {
            Ok(n) if n > 0 && size > 0 => Ok((size.saturating_sub(n), size - 1)),
            _ => Err(()),
        }
    } else {
        match (first.parse::<u64>(), last) {
            (Ok(a), "") if a < size => Ok((a, size - 1)),
            (Ok(a), b) => match b.parse::<u64>() {
                Ok(b) if a <= b && a < size => Ok((a, b.min(size - 1))),
                _ => Err(()),
            },
            _ => Err(()),
        }
    };
    Some(range)
}

fn header(fields: &Fields, name: &str) -> Option<String> {
    let values = fields.get(name);
    if values.is_empty() {
        return None;
    }
    let joined: Vec<String> = values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    Some(joined.join(", "))
}

/// Send a response with `headers` and either a short text body or bytes of a stored object.
fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, String)], body: Body<'_>) {
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value.as_bytes());
    }
    if let Body::Text(text) = &body {
        let _ = fields.append("content-type", b"text/plain; charset=utf-8");
        let _ = fields.append("content-length", text.len().to_string().as_bytes());
    }
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        match body {
            Body::Empty => {}
            Body::Text(text) => {
                for chunk in text.as_bytes().chunks(4096) {
                    if stream.blocking_write_and_flush(chunk).is_err() {
                        break;
                    }
                }
            }
            Body::Object {
                root,
                sha256,
                start,
                len,
            } => {
                let object = root.open_at(
                    PathFlags::empty(),
                    &format!("objects/{sha256}"),
                    OpenFlags::empty(),
                    DescriptorFlags::READ,
                );
                if let Ok(input) = object.and_then(|file| file.read_via_stream(start)) {
                    // The host copies file to socket; the guest only asks for the next chunk.
                    let mut left = len;
                    while left > 0 {
                        match stream.blocking_splice(&input, left.min(1 << 20)) {
                            Ok(0) => break,
                            Ok(n) => left -= n,
                            Err(_) => break,
                        }
                    }
                    let _ = stream.blocking_flush();
                }
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

enum Body<'a> {
    Empty,
    Text(String),
    Object {
        root: &'a Descriptor,
        sha256: String,
        start: u64,
        len: u64,
    },
}

fn not_found(root: &Descriptor, out: ResponseOutparam, head: bool) {
    match lookup(root, "404.html") {
        Found::File(page) => {
            let headers = [
                ("content-type", content_type("404.html").to_string()),
                ("cache-control", "no-cache".to_string()),
            ];
            let body = if head {
                Body::Empty
            } else {
                Body::Object {
                    root,
                    sha256: page.sha256,
                    start: 0,
                    len: page.size,
                }
            };
            respond(out, 404, &headers, body);
        }
        _ => respond(out, 404, &[], Body::Text("404 not found\n".into())),
    }
}

impl Guest for FileServer {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let head = match request.method() {
            Method::Get => false,
            Method::Head => true,
            _ => {
                let allow = [("allow", "GET, HEAD".to_string())];
                return respond(out, 405, &allow, Body::Text("method not allowed\n".into()));
            }
        };
        let Some(root) = get_directories().into_iter().next().map(|(dir, _)| dir) else {
            return respond(
                out,
                500,
                &[],
                Body::Text("the host gave the fileserver no site directory\n".into()),
            );
        };
        let target = request.path_with_query().unwrap_or_else(|| "/".into());
        let (raw_path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_string(), Some(query.to_string())),
            None => (target.clone(), None),
        };
        let Some(rel) = percent_decode(&raw_path).and_then(|p| site_path(&p)) else {
            return not_found(&root, out, head);
        };
        let path = if rel.is_empty() {
            "index.html".to_string()
        } else if raw_path.ends_with('/') {
            format!("{rel}/index.html")
        } else {
            rel.clone()
        };
        let entry = match lookup(&root, &path) {
            Found::File(entry) => entry,
            Found::Dir => {
                // `/docs` → `/docs/`, so relative links in docs/index.html resolve.
                let mut location = format!("{raw_path}/");
                if let Some(query) = query {
                    location = format!("{location}?{query}");
                }
                let headers = [("location", location)];
                return respond(out, 301, &headers, Body::Text("moved\n".into()));
            }
            Found::Missing => return not_found(&root, out, head),
        };
        let headers_in = request.headers();
        let range_header = header(&headers_in, "range");
        let accept = header(&headers_in, "accept-encoding").unwrap_or_default();
        let br = lookup(&root, &format!("{path}.br"));
        let gz = lookup(&root, &format!("{path}.gz"));
        let has_variant = matches!(br, Found::File(_)) || matches!(gz, Found::File(_));
        // A range applies to the file itself: ranges are served from the identity encoding.
        let (chosen, encoding) = match (br, gz) {
            (Found::File(v), _) if range_header.is_none() && accepts(&accept, "br") => {
                (v, Some("br"))
            }
            (_, Found::File(v)) if range_header.is_none() && accepts(&accept, "gzip") => {
                (v, Some("gzip"))
            }
            _ => (entry, None),
        };
        let etag = chosen.etag();
        let mut headers = vec![
            ("content-type", content_type(&path).to_string()),
            ("etag", etag.clone()),
            ("accept-ranges", "bytes".to_string()),
            ("cache-control", "no-cache".to_string()),
        ];
        if has_variant {
            headers.push(("vary", "Accept-Encoding".to_string()));
        }
        if let Some(encoding) = encoding {
            headers.push(("content-encoding", encoding.to_string()));
        }
        if let Some(tags) = header(&headers_in, "if-none-match") {
            let matched = tags.split(',').map(str::trim).any(|tag| {
                tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag.as_str())
            });
            if matched {
                headers.retain(|(name, _)| *name != "content-type");
                return respond(out, 304, &headers, Body::Empty);
            }
        }
        let size = chosen.size;
        let (status, start, len) = match parse_range(range_header.as_deref(), size) {
            None => (200, 0, size),
            Some(Ok((first, last))) => {
                headers.push(("content-range", format!("bytes {first}-{last}/{size}")));
                (206, first, last - first + 1)
            }
            Some(Err(())) => {
                let headers = [("content-range", format!("bytes */{size}"))];
                return respond(
                    out,
                    416,
                    &headers,
                    Body::Text("range not satisfiable\n".into()),
                );
            }
        };
        let body = if head {
            Body::Empty
        } else {
            headers.push(("content-length", len.to_string()));
            Body::Object {
                root: &root,
                sha256: chosen.sha256,
                start,
                len,
            }
        };
        respond(out, status, &headers, body);
    }
}

wasip2::http::proxy::export!(FileServer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Some(Ok((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Some(Ok((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Some(Ok((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Some(Ok((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Some(Err(())));
        assert_eq!(parse_range(Some("bytes=9-1"), 100), Some(Err(())));
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Some(Err(())));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), None);
        assert_eq!(parse_range(None, 100), None);
    }

    #[test]
    fn paths_stay_inside_the_site() {
        assert_eq!(site_path("/a/./b//c").as_deref(), Some("a/b/c"));
        assert_eq!(site_path("/a/../etc"), None);
        assert!(accepts("gzip, br;q=0", "gzip"));
        assert!(!accepts("gzip, br;q=0", "br"));
    }
}
