//! The router's typed errors: callers decide by variant, never by the words of a message.

use std::path::PathBuf;
use std::time::Duration;

use fog_htx::HtxError;

/// A request from the router (or a visitor) to the control plane that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request could not be built (a bad control-plane URL).
    #[error("bad control-plane request {path}: {reason}")]
    Request {
        /// The API path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No answer in time.
    #[error("the control plane did not answer {path} within {after:?}")]
    Timeout {
        /// The API path.
        path: String,
        /// How long the router waited.
        after: Duration,
    },
    /// The connection or the answer's body failed.
    #[error("cannot reach the control plane for {path}: {reason}")]
    Unreachable {
        /// The API path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The control plane refused with an error status.
    #[error("{path}: status {status}: {reason}")]
    Status {
        /// The API path.
        path: String,
        /// The status.
        status: http::StatusCode,
        /// The control plane's one-line reason.
        reason: String,
    },
    /// The answer is not what the API promises.
    #[error("malformed answer from {path}: {reason}")]
    Malformed {
        /// The API path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl ControlError {
    /// The refusal of `path` with `status` and the error `body` the control plane sent.
    pub(crate) fn status(path: &str, status: http::StatusCode, body: &[u8]) -> ControlError {
        let reason = serde_json::from_slice::<fog_proto::api::ErrorBody>(body).map_or_else(
            |_| String::from_utf8_lossy(body).trim().to_string(),
            |e| e.error,
        );
        ControlError::Status {
            path: path.to_string(),
            status,
            reason,
        }
    }
}

impl fog_net::control_urls::Failover for ControlError {
    fn fail_over(&self) -> bool {
        match self {
            ControlError::Timeout { .. } | ControlError::Unreachable { .. } => true,
            ControlError::Status { status, .. } => *status == http::StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Request { .. } | ControlError::Malformed { .. } => false,
        }
    }
}

/// Why a Betanet visit (`fog fetch bn1:…`) failed.
#[derive(Debug, thiserror::Error)]
pub enum VisitError {
    /// Not a `betanet://` or `bn1:` address.
    #[error("{url:?} is not a Betanet address: use betanet://<hex> or bn1:<name>")]
    NotBetanet {
        /// What was given.
        url: String,
    },
    /// A `betanet://` name that is not 64 hex digits.
    #[error("{url:?}: a betanet:// name is 64 hex digits (sha256 of the app's key)")]
    BadHexName {
        /// What was given.
        url: String,
    },
    /// A `bn1:` name that does not parse.
    #[error("{url:?}: {source}")]
    BadBn1 {
        /// What was given.
        url: String,
        /// Why.
        source: HtxError,
    },
    /// The control plane could not resolve the name.
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        /// The name.
        name: String,
        /// Why.
        source: ControlError,
    },
    /// The descriptor does not check out against the name.
    #[error("the descriptor for {name} is not valid: {reason}")]
    Descriptor {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The front asked for is not one of the name's fronts.
    #[error("{wanted} is not a front of {name}: its descriptor lists {listed:?}")]
    FrontNotListed {
        /// The front asked for.
        wanted: String,
        /// The name.
        name: String,
        /// The fronts the descriptor lists.
        listed: Vec<String>,
    },
    /// The relays for a mix path could not be listed.
    #[error("cannot list relays: {0}")]
    Relays(#[source] ControlError),
    /// No front answered (each with its reason); an empty list means the name has no front.
    #[error("no front of {name} answered{}", failures_text(.failures))]
    AllFrontsFailed {
        /// The name.
        name: String,
        /// Each front tried and why it failed.
        failures: Vec<(String, FrontError)>,
    },
}

fn failures_text(failures: &[(String, FrontError)]) -> String {
    failures
        .iter()
        .map(|(front, error)| format!("; front {front}: {error}"))
        .collect()
}

/// Why one front could not be visited.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// The descriptor lists a key that is not 32 bytes of hex.
    #[error("the front's {what} is not 32 bytes of hex")]
    BadKey {
        /// Which key.
        what: &'static str,
    },
    /// No randomness for the path seed.
    #[error("no randomness: {0}")]
    Random(String),
    /// The path, the relays, TLS, the handshake or the connection failed (or the front closed
    /// it, with its typed reason).
    #[error(transparent)]
    Htx(#[from] HtxError),
    /// The HTTP exchange on the stream failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The front did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Why the onion front could not be configured or could not launch an app's service.
#[derive(Debug, thiserror::Error)]
pub enum OnionError {
    /// The Tor network's configuration file could not be read.
    #[error("reading {path}: {source}")]
    ReadNetwork {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// arti's configuration is not valid.
    #[error("arti configuration{}: {reason}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config {
        /// The file it came from, if any.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// The control plane sent an onion key that is not 32 bytes of hex.
    #[error("the onion key of {app} is not 32 bytes of hex")]
    BadKey {
        /// The app.
        app: String,
    },
    /// The key does not give the address the control plane announced.
    #[error("the control plane says {claimed} but the key is {actual}")]
    AddressMismatch {
        /// What the control plane said.
        claimed: String,
        /// What the key gives.
        actual: String,
    },
    /// arti refused to launch the service.
    #[error("onion service of {app}: {reason}")]
    Launch {
        /// The app.
        app: String,
        /// Why.
        reason: String,
    },
}

/// Why a host's splice request was not served.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// The stream's tag is not a splice.
    #[error("unknown stream tag {0}")]
    Tag(u8),
    /// A device asked to be spliced to itself.
    #[error("a device cannot be spliced to itself")]
    ToItself,
    /// The control plane could not be asked whether the two are paired.
    #[error("cannot check the pairing with the control plane: {0}")]
    Control(#[source] ControlError),
    /// The control plane says no placement pairs them.
    #[error("{0}")]
    NotPaired(String),
    /// The other device has no connection to this router.
    #[error("device {0} is not attached to this router")]
    NotAttached(String),
    /// The HTX stream failed.
    #[error(transparent)]
    Htx(#[from] HtxError),
    /// Copying between the two ended with an error.
    #[error("splice {from} <-> {to} ended: {reason}")]
    Ended {
        /// The device that asked.
        from: String,
        /// The device it was spliced to.
        to: String,
        /// Why.
        reason: String,
    },
}

/// Why the Betanet front refused a visitor's connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisitorRefusal {
    /// The hello is not a visitor hello.
    #[error("a visitor hello is {expected_len} bytes starting with version {version}")]
    Hello {
        /// The length a hello has.
        expected_len: usize,
        /// The version it starts with.
        version: u8,
    },
    /// The access ticket was refused.
    #[error("access ticket refused: {0}")]
    Ticket(#[source] HtxError),
    /// No app with that Betanet name is routed here.
    #[error("no app with this Betanet name is routed here")]
    UnknownApp,
}
