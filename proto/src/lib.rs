//! Fog's wire types, shared by the host, the control plane, the router and the CLI.
//!
//! Only (de)serialisation and validation live here: app limits and manifests ([`limits`]), the
//! control-plane API's requests and responses ([`api`]), request signing with ed25519
//! ([`auth`]), and the `x-fog-error` kinds hosts answer with ([`errors`]). Nothing here runs guests or talks to the network.

#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod bundle;
pub mod canary;
pub mod config;
pub mod errors;
pub mod limits;
pub mod origin;
pub mod snapshot;

pub use errors::{ERROR_HEADER, ErrorKind};
pub use limits::{Limits, Manifest, Permissions, validate_app_name};
pub use origin::Origin;
