//! `counter`: a visit counter and a JSON API on key-value state.
//!
//! - `GET /` counts the visit and shows the count;
//! - `GET /api/count` returns `{"visits": N}` without counting;
//! - `POST /api/increment?by=K` adds K (default 1) and returns the new count;
//! - `PUT /api/notes/<name>` stores the body, `GET /api/notes/<name>` reads it back,
//!   `GET /api/notes` lists the names.

use fog_sdk::kv::Bucket;
use fog_sdk::{Request, Response};
use serde_json::json;

fn handle(req: Request) -> Response {
    match route(&req) {
        Ok(response) => response,
        Err(err) => Response::error(500, &err.to_string()),
    }
}

fn route(req: &Request) -> Result<Response, fog_sdk::kv::KvError> {
    let counts = Bucket::open("")?;
    let notes = Bucket::open("notes")?;
    Ok(match (req.method(), req.path()) {
        ("GET", "/") => {
            let visits = counts.increment("visits", 1)?;
            Response::html(format!(
                "<!doctype html><title>Counter</title><h1>You are visitor {visits}</h1>"
            ))
        }
        ("GET", "/api/count") => Response::json(&json!({ "visits": counts.get_number("visits")? })),
        ("POST", "/api/increment") => {
            let by = match req.query_param("by").map(|by| by.parse::<u64>()) {
                None => 1,
                Some(Ok(by)) => by,
                Some(Err(_)) => return Ok(Response::bad_request("`by` must be a whole number")),
            };
            Response::json(&json!({ "visits": counts.increment("visits", by)? }))
        }
        ("GET", "/api/notes") => Response::json(&json!({ "notes": notes.keys()? })),
        (method, path) if path.starts_with("/api/notes/") => {
            let name = &path["/api/notes/".len()..];
            if name.is_empty() || name.len() > 200 {
                return Ok(Response::bad_request("a note name has 1 to 200 characters"));
            }
            match method {
                "PUT" => {
                    notes.set(name, req.body())?;
                    Response::json(&json!({ "stored": name, "bytes": req.body().len() }))
                }
                "GET" => match notes.get(name)? {
                    Some(body) => Response::bytes("application/octet-stream", body),
                    None => Response::not_found(),
                },
                "DELETE" => {
                    notes.delete(name)?;
                    Response::new(204)
                }
                _ => Response::method_not_allowed(),
            }
        }
        _ => Response::not_found(),
    })
}

fog_sdk::app!(handle);
