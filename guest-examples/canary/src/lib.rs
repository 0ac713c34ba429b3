//! `canary`: Fog's spot check. The control plane places it on every device and sends it
//! known-answer requests through a router; a device that answers wrongly loses its replicas.
//!
//! Contract: `GET /<nonce>?rounds=<k>`, with `<nonce>` 32 hex digits (16 bytes) and `k` in
//! 1..=1000, answers 200 `text/plain` with the hex of `H_k`, where
//! `H_1 = sha256("fog-canary-v1" ‖ nonce bytes)` and `H_(i+1) = sha256(H_i)`; anything else
//! answers 400. `fog_proto::canary::expected` is the same formula on the control plane's side.
//! No state, no imports beyond `wasi:http`.

use fog_sdk::{Request, Response};
use sha2::{Digest, Sha256};

/// Domain separation: the answer is useful for nothing but this check.
const LABEL: &[u8] = b"fog-canary-v1";
/// Most hash rounds one check may ask for.
const MAX_ROUNDS: u32 = 1000;

fn handle(req: Request) -> Response {
    if req.method() != "GET" {
        return Response::method_not_allowed();
    }
    let Some(nonce) = parse_nonce(req.path().trim_start_matches('/')) else {
        return Response::bad_request("the path must be 32 hex digits");
    };
    let rounds = match req.query_param("rounds").map(|r| r.parse::<u32>()) {
        Some(Ok(k)) if (1..=MAX_ROUNDS).contains(&k) => k,
        _ => return Response::bad_request("rounds must be 1..=1000"),
    };
    let mut hash: [u8; 32] = Sha256::new()
        .chain_update(LABEL)
        .chain_update(nonce)
        .finalize()
        .into();
    for _ in 1..rounds {
        hash = Sha256::digest(hash).into();
    }
    Response::text(hex(&hash)).with_header("cache-control", "no-store")
}

fn parse_nonce(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fog_sdk::app!(handle);
