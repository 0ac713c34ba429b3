//! The Fog device host: runs app components in sandboxed, fuel-metered wasmtime instances.
//!
//! One [`Runtime`] per device holds the wasmtime engine (pooling allocator where the address
//! space allows, async, fuel, epoch interruption), the linker, the compiled-component cache and
//! the key-value state database. [`Runtime::load`] turns a component into an [`App`]: validated,
//! compiled and linked once per sha256 (cached on disk by sha256 and engine); the app keeps only
//! its manifest and the hash, and the compiled component, shared by every app of that hash, is
//! mapped on the first request and dropped least-recently-used beyond a budget.
//! [`App::handle`] serves one request in a fresh store with the app's memory cap, fuel budget,
//! deadline and concurrency cap; whatever the guest does, the caller gets a response (the
//! guest's, or a clear error).
//! [`server::serve`] puts a table of apps behind an HTTP/1.1 listener; [`attach`] serves them
//! through connections the host dials out to routers (no inbound port needed).

#![deny(missing_docs)]

pub mod agent;
mod app;
pub mod attach;
pub mod body;
pub mod bundle;
mod code;
pub mod durable;
mod error;
pub mod harvest;
pub mod htx_server;
pub mod kv;
mod limits;
pub mod metrics;
pub mod owner;
pub mod peers;
pub mod replica;
pub mod reqlog;
mod runtime;
pub mod server;
mod state;
mod upload;

pub use app::{App, HostResponse, MeterReading, RequestReport, failure_response};
pub use code::{CodeStats, DEFAULT_CODE_BUDGET};
pub use error::{Failure, LoadError, RuntimeError};
pub use fog_proto::{Limits, Manifest, Permissions, validate_app_name};
pub use limits::LimitArgs;
pub use runtime::{DEFAULT_KEEP_RESIDENT, MAX_COMPONENT_BYTES, Runtime, RuntimeConfig};
