//! Config and secrets through the standard `wasi:config/store` interface.
//!
//! On Fog an app's variables (`fog publish --var K=V`, `fog config APP set K=V`) and secrets
//! (`--secret K=@FILE`) are read the same way, by name. Every request gets a fresh instance, so
//! a changed value is seen by the next request; nothing needs restarting.
//!
//! ```no_run
//! let greeting = fog_sdk::config::get("GREETING").ok().flatten().unwrap_or_default();
//! ```

use std::fmt;

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "fog:app/app-config",
        generate_all,
    });
}

use bindings::wasi::config::store;

/// Why the host could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The source of the config failed.
    Upstream(String),
    /// An I/O error on the host.
    Io(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Upstream(message) => write!(f, "config source failed: {message}"),
            ConfigError::Io(message) => write!(f, "config I/O failed: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn convert(err: store::Error) -> ConfigError {
    match err {
        store::Error::Upstream(message) => ConfigError::Upstream(message),
        store::Error::Io(message) => ConfigError::Io(message),
    }
}

/// The value of `key`, or `None` if the app has no variable or secret of that name.
pub fn get(key: &str) -> Result<Option<String>, ConfigError> {
    store::get(key).map_err(convert)
}

/// Every variable and secret of the app, as (name, value) pairs.
pub fn get_all() -> Result<Vec<(String, String)>, ConfigError> {
    store::get_all().map_err(convert)
}
