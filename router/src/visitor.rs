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
use fog_net::control_urls::ControlUrls;
use fog_proto::api::{NameDescriptor, RelayInfo};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};

use crate::error::{ControlError, FrontError, VisitError};
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
pub fn parse_url(url: &str) -> Result<BetanetUrl, VisitError> {
    let (name, lookup, rest) = if let Some(rest) = url.strip_prefix("betanet://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let id = &rest[..end];
        if id.len() != 64 || hex::decode(id).is_err() {
            return Err(VisitError::BadHexName {
                url: url.to_string(),
            });
        }
        (
            format!("betanet://{}", id.to_ascii_lowercase()),
            id.to_ascii_lowercase(),
            &rest[end..],
        )
    } else if url.starts_with("bn1:") {
        let end = url.find(['/', '?']).unwrap_or(url.len());
        let name = &url[..end];
        names::parse_bn1(name).map_err(|source| VisitError::BadBn1 {
            url: url.to_string(),
            source,
        })?;
        (name.to_string(), name.to_string(), &url[end..])
    } else {
        return Err(VisitError::NotBetanet {
            url: url.to_string(),
        });
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

async fn get_json<T: serde::de::DeserializeOwned>(
    control: &ControlUrls,
    path: &str,
) -> Result<T, ControlError> {
    control.try_each(|base| get_one(base, path)).await
}

/// [`get_json`] from one control plane.
async fn get_one<T: serde::de::DeserializeOwned>(
    control: String,
    path: &str,
) -> Result<T, ControlError> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: http::Uri = format!("{control}{path}")
        .parse()
        .map_err(|e| ControlError::Request {
            path: path.to_string(),
            reason: format!("bad control-plane URL {control:?}: {e}"),
        })?;
    let after = Duration::from_secs(10);
    let unreachable = |reason: String| ControlError::Unreachable {
        path: path.to_string(),
        reason,
    };
    let response = tokio::time::timeout(after, client.get(uri))
        .await
        .map_err(|_| ControlError::Timeout {
            path: path.to_string(),
            after,
        })?
        .map_err(|e| unreachable(format!("{control}: {e}")))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(ControlError::status(path, status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| ControlError::Malformed {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Resolve `url`'s name with the control plane at `control` and check the descriptor.
pub async fn resolve(
    control: &ControlUrls,
    url: &BetanetUrl,
) -> Result<NameDescriptor, VisitError> {
    let descriptor: NameDescriptor = get_json(control, &format!("/v1/names/{}", url.lookup))
        .await
        .map_err(|source| VisitError::Resolve {
            name: url.name.clone(),
            source,
        })?;
    let invalid = |reason: String| VisitError::Descriptor {
        name: url.name.clone(),
        reason,
    };
    let app_key: [u8; 32] = hex::decode(&descriptor.app_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| invalid("the app key is not 32 bytes of hex".into()))?;
    if !names::names_key(&url.name, &app_key) {
        return Err(invalid(
            "it is signed by a key that name does not belong to".into(),
        ));
    }
    descriptor
        .verify(fog_proto::auth::now_s())
        .map_err(invalid)?;
    Ok(descriptor)
}

/// Fetch `url` (GET), through `mix`'s relays (from the control plane) when not in performance
/// mode. Fronts are tried in the descriptor's order; `front` (host:port) picks one of them.
pub async fn fetch(
    control: &ControlUrls,
    url: &str,
    mix: MixMode,
    front: Option<&str>,
) -> Result<Fetched, VisitError> {
    let url = parse_url(url)?;
    let mut descriptor = resolve(control, &url).await?;
    if let Some(wanted) = front {
        let listed: Vec<String> = descriptor.fronts.iter().map(|f| f.addr.clone()).collect();
        descriptor.fronts.retain(|f| f.addr == wanted);
        if descriptor.fronts.is_empty() {
            return Err(VisitError::FrontNotListed {
                wanted: wanted.to_string(),
                name: url.name.clone(),
                listed,
            });
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
            .map_err(VisitError::Relays)?
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
            Err(err) => failures.push((front.addr.clone(), err)),
        }
    }
    Err(VisitError::AllFrontsFailed {
        name: url.name.clone(),
        failures,
    })
}

async fn visit(
    front: &fog_proto::api::FrontInfo,
    url: &BetanetUrl,
    app: &str,
    app_id: &[u8; 32],
    mix: MixMode,
    relays: &[Relay],
) -> Result<(http::Response<Bytes>, usize), FrontError> {
    let key = |hex_key: &str, what: &'static str| -> Result<[u8; 32], FrontError> {
        hex::decode(hex_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or(FrontError::BadKey { what })
    };
    let front_key = key(&front.key, "key")?;
    let ticket_key = key(&front.ticket_key, "ticket key")?;
    let mut seed = [0u8; 16];
    getrandom::fill(&mut seed).map_err(|e| FrontError::Random(e.to_string()))?;
    let path = mix::choose_path(mix, &seed, &front_key, relays)?;
    let pipe = mix::dial(&path, &front.addr, Duration::from_secs(10)).await?;
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
        let (stream, exporter) = fog_htx::tls::connect(pipe).await?;
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
    }?;
    let stream = connection.open()?;
    // The connection's own error (a front's typed CLOSE) says more than hyper's.
    let why = |fallback: String| match connection.error() {
        Some(error) => FrontError::Htx(error),
        None => FrontError::Http(fallback),
    };
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| why(e.to_string()))?;
    tokio::spawn(driver);
    let request = http::Request::get(&url.path)
        .header(http::header::HOST, format!("{app}.localhost"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| FrontError::Http(e.to_string()))?;
    let patience = Duration::from_secs(60);
    let response = tokio::time::timeout(patience, sender.send_request(request))
        .await
        .map_err(|_| FrontError::Timeout(patience))?
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
        assert!(matches!(
            parse_url("betanet://abc"),
            Err(VisitError::BadHexName { .. })
        ));
        assert!(matches!(
            parse_url("bn1:zzz"),
            Err(VisitError::BadBn1 { .. })
        ));
        assert!(matches!(
            parse_url("http://x.onion/"),
            Err(VisitError::NotBetanet { .. })
        ));
    }
}
