//! The host's errors: why a component cannot be loaded, and why a request did not get the
//! guest's answer.

use std::path::PathBuf;

use fog_proto::ErrorKind;

/// Why a component could not be loaded as an app.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The bytes do not start with the WebAssembly magic number.
    #[error("{what} is not a WebAssembly binary (no \\0asm header)")]
    NotWasm {
        /// What was being loaded (a path or an app name).
        what: String,
    },
    /// A core WebAssembly module where a component was expected.
    #[error(
        "{what} is a core WebAssembly module, not a component: build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// What was being loaded.
        what: String,
    },
    /// The binary failed to validate or compile (truncated, corrupt, unsupported features).
    #[error("{what} is not a valid component: {reason}")]
    Invalid {
        /// What was being loaded.
        what: String,
        /// The first line of the compiler's explanation.
        reason: String,
    },
    /// A valid component that does not export `wasi:http/incoming-handler`.
    #[error(
        "{what} does not export wasi:http/incoming-handler@0.2: it is not an HTTP app \
         (use fog_sdk::app! or wasi's http::proxy::export!)"
    )]
    NotHttpApp {
        /// What was being loaded.
        what: String,
    },
    /// The component imports something the host does not provide.
    #[error("{what} cannot be linked: {reason}")]
    Link {
        /// What was being loaded.
        what: String,
        /// The missing import, as wasmtime describes it.
        reason: String,
    },
    /// The app's manifest is unusable.
    #[error("bad manifest for app {app}: {reason}")]
    Manifest {
        /// The app.
        app: String,
        /// What is wrong.
        reason: String,
    },
    /// The compiled-component cache could not be written.
    #[error("cannot write the compiled-component cache {path}: {source}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The app's key-value namespace could not be opened.
    #[error("cannot open the state of app {app}: {source}")]
    State {
        /// The app.
        app: String,
        /// What sled said.
        source: sled::Error,
    },
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The state database could not be opened.
    #[error("cannot open the state database in {path}: {source}")]
    State {
        /// The database directory.
        path: PathBuf,
        /// What sled said.
        source: sled::Error,
    },
}

/// Why a request did not get the guest's own answer. Each maps to one HTTP status and a one-line
/// reason the visitor sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The app already runs its maximum number of requests.
    #[error("app is at its concurrency limit of {limit} requests; retry shortly")]
    Overloaded {
        /// The app's concurrency cap.
        limit: u32,
    },
    /// The request body is larger than the app accepts.
    #[error("request body exceeds the limit of {limit} bytes")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request body could not be read from the client.
    #[error("request body could not be read: {0}")]
    BadRequest(String),
    /// The guest burnt its whole fuel budget.
    #[error("guest exhausted its fuel budget of {budget}")]
    FuelExhausted {
        /// The budget.
        budget: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("guest exceeded its memory limit of {limit_mib} MiB")]
    MemoryExceeded {
        /// The cap in MiB.
        limit_mib: u64,
    },
    /// The request ran past its wall-clock deadline.
    #[error("guest exceeded its deadline of {timeout_ms} ms")]
    Timeout {
        /// The deadline in milliseconds.
        timeout_ms: u64,
    },
    /// The guest overflowed its stack.
    #[error("guest overflowed its stack")]
    StackOverflow,
    /// The guest trapped (a panic, `unreachable`, a bad memory access ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest produced more response body than allowed.
    #[error("response body exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The guest returned without setting a response, or set an error instead of one.
    #[error("guest returned no response: {0}")]
    NoResponse(String),
    /// The host itself failed (e.g. the instance pool is exhausted).
    #[error("host error: {0}")]
    Host(String),
    /// The guest tried to write on a replica that is not the app's primary; nothing was
    /// written, and routers retry the request on the primary.
    #[error("this replica of the app is a follower: writes go to the primary")]
    Follower,
    /// The app is being moved to another device; routers retry the request there.
    #[error("the app is moving to another device: retry there")]
    Moved,
}

impl Failure {
    /// The HTTP status a visitor gets for this failure.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Overloaded { .. } | Failure::Follower | Failure::Moved => 503,
            Failure::RequestTooLarge { .. } => 413,
            Failure::BadRequest(_) => 400,
            _ => 500,
        }
    }

    /// The kind sent in the `x-fog-error` header and used in logs.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Overloaded { .. } => ErrorKind::Overloaded,
            Failure::RequestTooLarge { .. } => ErrorKind::RequestTooLarge,
            Failure::BadRequest(_) => ErrorKind::BadRequest,
            Failure::FuelExhausted { .. } => ErrorKind::Fuel,
            Failure::MemoryExceeded { .. } => ErrorKind::Memory,
            Failure::Timeout { .. } => ErrorKind::Timeout,
            Failure::StackOverflow => ErrorKind::StackOverflow,
            Failure::Trap(_) => ErrorKind::Trap,
            Failure::ResponseTooLarge { .. } => ErrorKind::ResponseTooLarge,
            Failure::NoResponse(_) => ErrorKind::NoResponse,
            Failure::Host(_) => ErrorKind::Host,
            Failure::Follower => ErrorKind::Follower,
            Failure::Moved => ErrorKind::Moved,
        }
    }
}

/// The first line of an error chain, trimmed, for one-line messages.
pub(crate) fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}
