//! The Fog SDK: write an HTTP app for Fog in a few lines, with key-value state.
//!
//! A Fog app is a WASI 0.2 component that exports `wasi:http/incoming-handler` and may import the
//! standard `wasi:keyvalue` interfaces (the 0.2.0 draft). This crate hides the component plumbing:
//! you write a function from [`Request`] to [`Response`], hand it to [`app!`], and build with
//! `cargo build --target wasm32-wasip2 --release`. The result runs on `fog run`, on a Fog device,
//! and on any other host that implements `wasi:http/proxy` and `wasi:keyvalue`.
//!
//! # Example
//!
//! A visit counter with a JSON API (the `counter` example in `guest-examples/` is this app):
//!
//! ```no_run
//! use fog_sdk::{Request, Response, kv::Bucket};
//!
//! fn handle(req: Request) -> Response {
//!     let bucket = match Bucket::open("") {
//!         Ok(bucket) => bucket,
//!         Err(err) => return Response::error(500, &err.to_string()),
//!     };
//!     match (req.method(), req.path()) {
//!         ("GET", "/") => match bucket.increment("visits", 1) {
//!             Ok(n) => Response::html(format!("<p>You are visitor {n}.</p>")),
//!             Err(err) => Response::error(500, &err.to_string()),
//!         },
//!         ("GET", "/api/visits") => {
//!             let visits: u64 = bucket.get_number("visits").unwrap_or(0);
//!             Response::json(&serde_json::json!({ "visits": visits }))
//!         }
//!         _ => Response::not_found(),
//!     }
//! }
//!
//! fog_sdk::app!(handle);
//! ```
//!
//! # Limits
//!
//! The host gives every request a fresh instance with a memory cap, a fuel (CPU) budget and a
//! wall-clock deadline. Global variables do not survive between requests: keep state in a
//! [`kv::Bucket`]. Read variables and secrets with [`config::get`] (`wasi:config/store`). A
//! request body larger than [`MAX_REQUEST_BODY`] is refused by the SDK with 413.

#![deny(missing_docs)]

pub mod config;
pub mod kv;
mod request;
mod response;

pub use request::Request;
pub use response::Response;

/// The largest request body the SDK reads into memory (hosts usually refuse larger ones first).
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// Export `handler` (a `fn(Request) -> Response`) as this component's HTTP handler.
///
/// Use it once, at the top level of the app's crate (a `cdylib` built for `wasm32-wasip2`).
#[macro_export]
macro_rules! app {
    ($handler:path) => {
        #[doc(hidden)]
        pub struct __FogApp;

        impl $crate::__private::IncomingHandler for __FogApp {
            fn handle(
                request: $crate::__private::IncomingRequest,
                out: $crate::__private::ResponseOutparam,
            ) {
                $crate::__private::serve(request, out, $handler)
            }
        }

        $crate::__private::wasip2::http::proxy::export!(__FogApp);
    };
}

/// What [`app!`] expands to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wasip2;
    pub use wasip2::exports::http::incoming_handler::Guest as IncomingHandler;
    pub use wasip2::http::types::{IncomingRequest, ResponseOutparam};

    use crate::{Request, Response};

    /// Read the request, run the handler, write its response.
    pub fn serve(
        incoming: IncomingRequest,
        out: ResponseOutparam,
        handler: impl FnOnce(Request) -> Response,
    ) {
        let response = match Request::from_incoming(incoming) {
            Ok(request) => handler(request),
            Err(response) => response,
        };
        response.send(out);
    }
}
