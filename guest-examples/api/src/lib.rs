//! `api`: a JSON echo and a CPU-bound computation sized by a parameter.
//!
//! - `POST /echo` with a JSON body returns `{"echo": <body>, "method": ..., "path": ...}` and the
//!   `content-type` it was sent with;
//! - `GET /primes?n=N` counts the primes below N (a sieve: CPU and memory grow with N, N ≤ 50
//!   million) and returns `{"n": N, "primes": count}`;
//! - `GET /fib?n=N` computes the N-th Fibonacci number modulo 2^64 by naive iteration repeated
//!   N times (pure CPU, no memory);
//! - `GET /config/<key>` returns the app's config value `<key>` (`wasi:config/store`) as
//!   text, or 404 when the app has none of that name.

use fog_sdk::{Request, Response};
use serde_json::{Value, json};

const MAX_SIEVE: u64 = 50_000_000;

fn handle(req: Request) -> Response {
    match (req.method(), req.path()) {
        ("POST", "/echo") => match req.json::<Value>() {
            Ok(body) => Response::json(&json!({
                "content_type": req.header("content-type"),
                "echo": body,
                "method": req.method(),
                "path": req.path(),
                "query": req.query(),
            })),
            Err(err) => Response::bad_request(&format!("body is not JSON: {err}")),
        },
        ("GET", "/primes") => match size(&req, MAX_SIEVE) {
            Ok(n) => Response::json(&json!({ "n": n, "primes": count_primes(n) })),
            Err(response) => response,
        },
        ("GET", "/fib") => match size(&req, u64::MAX) {
            Ok(n) => Response::json(&json!({ "n": n, "fib": fib_mod(n) })),
            Err(response) => response,
        },
        ("GET", path) if path.starts_with("/config/") => {
            match fog_sdk::config::get(&path["/config/".len()..]) {
                Ok(Some(value)) => Response::text(value),
                Ok(None) => Response::not_found(),
                Err(err) => Response::error(500, &err.to_string()),
            }
        }
        _ => Response::not_found(),
    }
}

fn size(req: &Request, max: u64) -> Result<u64, Response> {
    let n = req
        .query_param("n")
        .ok_or_else(|| Response::bad_request("missing query parameter `n`"))?;
    match n.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Response::bad_request(&format!(
            "`n` must be a whole number ≤ {max}"
        ))),
    }
}

fn count_primes(n: u64) -> u64 {
    if n < 3 {
        return 0;
    }
    let n = n as usize;
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

fn fib_mod(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        let next = a.wrapping_add(b);
        a = b;
        b = next;
    }
    a
}

fog_sdk::app!(handle);
