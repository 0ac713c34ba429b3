//! A Betanet visitor (`fog fetch betanet://…` / `fog fetch bn1:…`): resolve the name to a
//! descriptor, check it against the name (the name is the hash of the key that signed it), make
//! an access ticket, open an HTX connection to a front — directly or through mix relays — and
//! send one HTTP/1.1 request on a stream.

use std::time::Duration;

use bytes::Bytes;
use fog_htx::conn;
use fog_htx::handshake::StaticKey;
use fog_htx::mix::{self, MixMode, Relay};
use fog_htx::names;
use fog_htx::tickets;
use fog_proto::api::{ErrorBody, NameDescriptor, RelayInfo};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};

use crate::front::{FRONT_PROLOGUE, hello, visitor_config};

/// A parsed Betanet URL: the name and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetanetUrl {
    /// The name as given (`betanet://<hex>` or `bn1:<base32>`).
    pub name: String,
    /// What the control plane resolves (the hex id or the bn1 name).
    pub lookup: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parse `betanet://<64 hex>[/path]` or `bn1:<39 base32>[/path]`.
pub fn parse_url(url: &str) -> Result<BetanetUrl, String> {
    let (name, lookup, rest) = if let Some(rest) = url.strip_prefix("betanet://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let id = &rest[..end];
        if id.len() != 64 || hex::decode(id).is_err() {
            return Err(format!(
                "{url:?}: a betanet:// name is 64 hex digits (sha256 of the app's key)"
            ));
        }
        (
            format!("betanet://{}", id.to_ascii_lowercase()),
            id.to_ascii_lowercase(),
            &rest[end..],
        )
    } else if url.starts_with("bn1:") {
        let end = url.find(['/', '?']).unwrap_or(url.len());
        let name = &url[..end];
        names::parse_bn1(name).map_err(|e| format!("{url:?}: {e}"))?;
        (name.to_string(), name.to_string(), &url[end..])
    } else {
        return Err(format!(
            "{url:?} is not a Betanet address: use betanet://<hex> or bn1:<name>"
        ));
    };
    let path = if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_string()
    };
    Ok(BetanetUrl { name, lookup, path })
}

/// What a fetch returned.
#[derive(Debug)]
pub struct Fetched {
    /// The app the name belongs to.
    pub app: String,
    /// The front that answered.
    pub front: String,
    /// Relays the connection went through.
    pub hops: usize,
    /// Whether HTX ran inside TLS.
    pub tls: bool,
    /// The response (body collected).
    pub response: http::Response<Bytes>,
}

async fn get_json<T: serde::de::DeserializeOwned>(control: &str, path: &str) -> Result<T, String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: http::Uri = format!("{control}{path}")
        .parse()
        .map_err(|e| format!("bad control-plane URL {control:?}: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| format!("the control plane at {control} did not answer"))?
        .map_err(|e| format!("cannot reach the control plane at {control}: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        let reason = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(reason);
    }
    serde_json::from_slice(&body).map_err(|e| format!("malformed answer from {path}: {e}"))
}

/// Resolve `url`'s name with the control plane at `control` and check the descriptor.
pub async fn resolve(control: &str, url: &BetanetUrl) -> Result<NameDescriptor, String> {
    let descriptor: NameDescriptor = get_json(control, &format!("/v1/names/{}", url.lookup))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", url.name))?;
    let app_key: [u8; 32] = hex::decode(&descriptor.app_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("the descriptor's app key is not 32 bytes of hex")?;
    if !names::names_key(&url.name, &app_key) {
        return Err(format!(
            "the descriptor for {} is signed by a key that name does not belong to",
            url.name
        ));
    }
    descriptor.verify(fog_proto::auth::now_s())?;
    Ok(descriptor)
}

/// Fetch `url` (GET), through `mix`'s relays (from the control plane) when not in performance
/// mode. Fronts are tried in the descriptor's order; `front` (host:port) picks one of them.
pub async fn fetch(
    control: &str,
    url: &str,
    mix: MixMode,
    front: Option<&str>,
) -> Result<Fetched, String> {
    let url = parse_url(url)?;
    let mut descriptor = resolve(control, &url).await?;
    if let Some(wanted) = front {
        let listed: Vec<String> = descriptor.fronts.iter().map(|f| f.addr.clone()).collect();
        descriptor.fronts.retain(|f| f.addr == wanted);
        if descriptor.fronts.is_empty() {
            return Err(format!(
                "{} is not a front of {}: its descriptor lists {listed:?}",
                wanted, url.name
            ));
        }
    }
    let app_key: [u8; 32] = hex::decode(&descriptor.app_key)
        .expect("checked in resolve")
        .try_into()
        .expect("checked in resolve");
    let app_id: [u8; 32] = Sha256::digest(app_key).into();
    let relays: Vec<Relay> = if mix == MixMode::Performance {
        Vec::new()
    } else {
        get_json::<Vec<RelayInfo>>(control, "/v1/relays")
            .await
            .map_err(|e| format!("cannot list relays: {e}"))?
            .into_iter()
            .filter_map(|r| {
                Some(Relay {
                    key: hex::decode(&r.key).ok()?.try_into().ok()?,
                    addr: r.addr,
                })
            })
            .collect()
    };
    let mut failures = Vec::new();
    for front in &descriptor.fronts {
        match visit(front, &url, &descriptor.app, &app_id, mix, &relays).await {
            Ok((response, hops)) => {
                return Ok(Fetched {
                    app: descriptor.app.clone(),
                    front: front.addr.clone(),
                    hops,
                    tls: front.tls,
                    response,
                });
            }
            Err(err) => failures.push(format!("front {}: {err}", front.addr)),
        }
    }
    Err(failures.join("; "))
}

async fn visit(
    front: &fog_proto::api::FrontInfo,
    url: &BetanetUrl,
    app: &str,
    app_id: &[u8; 32],
    mix: MixMode,
    relays: &[Relay],
) -> Result<(http::Response<Bytes>, usize), String> {
    let key = |hex_key: &str, what: &str| -> Result<[u8; 32], String> {
        hex::decode(hex_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or(format!("the front's {what} is not 32 bytes of hex"))
    };
    let front_key = key(&front.key, "key")?;
    let ticket_key = key(&front.ticket_key, "ticket key")?;
    let mut seed = [0u8; 16];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let path = mix::choose_path(mix, &seed, &front_key, relays).map_err(|e| e.to_string())?;
    let pipe = mix::dial(&path, &front.addr, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    // A fresh key per visit: the ticket is bound to it, and visits cannot be linked by key.
    let client = StaticKey::generate();
    let ticket = tickets::ticket(
        &client.private,
        &ticket_key,
        &ticket_key,
        fog_proto::auth::now_s() / 3600,
    );
    let hello = hello(app_id, &ticket);
    let connection = if front.tls {
        let (stream, exporter) = fog_htx::tls::connect(pipe)
            .await
            .map_err(|e| e.to_string())?;
        let prologue = fog_htx::tls::bound_prologue(FRONT_PROLOGUE, &exporter);
        conn::connect_with_hello(
            stream,
            &client,
            &front_key,
            &prologue,
            &hello,
            visitor_config(),
        )
        .await
    } else {
        conn::connect_with_hello(
            pipe,
            &client,
            &front_key,
            FRONT_PROLOGUE,
            &hello,
            visitor_config(),
        )
        .await
    }
    .map_err(|e| e.to_string())?;
    let stream = connection.open().map_err(|e| e.to_string())?;
    let why = |fallback: String| match connection.error() {
        Some(error) => error.to_string(),
        None => fallback,
    };
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| why(e.to_string()))?;
    tokio::spawn(driver);
    let request = http::Request::get(&url.path)
        .header(http::header::HOST, format!("{app}.localhost"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 60 s".to_string())?
        .map_err(|e| why(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, 64 << 20)
        .collect()
        .await
        .map_err(|e| why(e.to_string()))?
        .to_bytes();
    connection.close("done");
    Ok((http::Response::from_parts(parts, body), path.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn betanet_urls_parse_or_say_why_not() {
        let id = "ab".repeat(32);
        let url = parse_url(&format!("betanet://{id}/api/count?x=1")).unwrap();
        assert_eq!(url.lookup, id);
        assert_eq!(url.path, "/api/count?x=1");
        assert_eq!(parse_url(&format!("betanet://{id}")).unwrap().path, "/");
        let bn1 = names::bn1(&[7u8; 32]);
        let url = parse_url(&format!("{bn1}/style.css")).unwrap();
        assert_eq!(
            (url.lookup.as_str(), url.path.as_str()),
            (bn1.as_str(), "/style.css")
        );
        assert!(parse_url("betanet://abc").unwrap_err().contains("64 hex"));
        assert!(parse_url("bn1:zzz").is_err());
        assert!(
            parse_url("http://x.onion/")
                .unwrap_err()
                .contains("not a Betanet")
        );
    }
}
