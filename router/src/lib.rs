//! Fog's router: the visitor edge.
//!
//! [`Gateway`] is the plain-HTTP front: it maps a request to an app (by a `<app>.localhost` host
//! name or an `/apps/<app>/` path prefix), picks the least-loaded live replica (ties: the one
//! that answered fastest lately) from the routes the control plane publishes, forwards the
//! request to that device's host with `x-fog-app`, and retries on another replica when a device
//! fails before answering. It never sees app state, and it never tells hosts who the visitor is.
//!
//! Hosts are reached over HTX ([`dial`]), optionally through mix relays. [`front`] is the second
//! way in for visitors: HTX connections addressed to an app's self-certifying Betanet name and
//! gated by access tickets; [`visitor`] is the matching client (`fog fetch`). Hosts behind NAT
//! reach the router instead: [`attach`] admits their outbound connections, sends requests back
//! down them, and splices two attached hosts together for state transfer. Errors are typed
//! ([`error`]): callers decide by variant, never by a message's words.

#![deny(missing_docs)]

pub mod attach;
pub mod canary;
pub mod error;
pub mod front;
mod gateway;
pub mod metrics;
pub mod onion;
pub mod visitor;

pub use error::{ControlError, FrontError, OnionError, SpliceError, VisitError, VisitorRefusal};
pub use fog_net::limit::Rate;
pub use gateway::{DEFAULT_VISITOR_BURST, DEFAULT_VISITOR_RATE, Gateway, GatewayConfig, serve};
