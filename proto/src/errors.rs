//! The kinds of failure a host reports in the `x-fog-error` header of an answer that is the
//! host's own (not the app's), so routers decide what to do by type, never by reading text.

use std::fmt;
use std::str::FromStr;

/// The response header that carries an [`ErrorKind`].
pub const ERROR_HEADER: &str = "x-fog-error";

/// Why a host answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The app's concurrency cap is reached (503).
    Overloaded,
    /// The request body is over the app's limit (413).
    RequestTooLarge,
    /// The request could not be read or is malformed (400).
    BadRequest,
    /// The guest ran out of fuel.
    Fuel,
    /// The guest hit its memory cap.
    Memory,
    /// The guest ran past its deadline.
    Timeout,
    /// The guest overflowed its stack.
    StackOverflow,
    /// The guest trapped.
    Trap,
    /// The guest's response body is over the limit.
    ResponseTooLarge,
    /// The guest returned no response.
    NoResponse,
    /// The host itself failed.
    Host,
    /// The replica only follows: writes go to the primary (routers retry there).
    Follower,
    /// The app is moving to another device (routers retry elsewhere).
    Moved,
    /// The device offers no capacity now (routers retry elsewhere).
    Harvest,
    /// The host does not run that app (routers retry elsewhere).
    UnknownApp,
}

impl ErrorKind {
    /// Every kind, for tests and documentation.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::Overloaded,
        ErrorKind::RequestTooLarge,
        ErrorKind::BadRequest,
        ErrorKind::Fuel,
        ErrorKind::Memory,
        ErrorKind::Timeout,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::ResponseTooLarge,
        ErrorKind::NoResponse,
        ErrorKind::Host,
        ErrorKind::Follower,
        ErrorKind::Moved,
        ErrorKind::Harvest,
        ErrorKind::UnknownApp,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::RequestTooLarge => "request-too-large",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::Fuel => "fuel",
            ErrorKind::Memory => "memory",
            ErrorKind::Timeout => "timeout",
            ErrorKind::StackOverflow => "stack-overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::ResponseTooLarge => "response-too-large",
            ErrorKind::NoResponse => "no-response",
            ErrorKind::Host => "host",
            ErrorKind::Follower => "follower",
            ErrorKind::Moved => "moved",
            ErrorKind::Harvest => "harvest",
            ErrorKind::UnknownApp => "unknown-app",
        }
    }

    /// Whether the app did not run (or changed nothing), so the request may be sent to another
    /// replica: the host does not serve the app now, or this replica only follows.
    pub fn retry_elsewhere(self) -> bool {
        matches!(
            self,
            ErrorKind::Follower | ErrorKind::Moved | ErrorKind::Harvest | ErrorKind::UnknownApp
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header value that names no [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {ERROR_HEADER} kind {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownKind(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_header_value() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
        assert!("nonsense".parse::<ErrorKind>().is_err());
    }
}
