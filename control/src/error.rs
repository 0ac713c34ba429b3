//! The one error type of the API: each refusal is a kind (which becomes the HTTP status) and a
//! one-line reason that the caller is shown.

use fog_proto::api::{ErrorBody, ErrorCode};

use crate::ApiResponse;
use crate::store::StoreError;

/// Why the control plane refused a request. The variant decides the HTTP status; the text is
/// the reason in the response body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input (400).
    #[error("{0}")]
    BadRequest(String),
    /// A ledger period in a heartbeat that will never be accepted (400, with its code, so the
    /// device drops it).
    #[error("{0}")]
    LedgerPeriod(String),
    /// A missing or bad signature (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid signer that may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such app, device, blob or path (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A body over its limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The control plane cannot answer this now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The signing key sent more requests than its rate allows (429, with `Retry-After`).
    #[error("too many requests signed by this key: retry after {retry_after_s} s")]
    RateLimited {
        /// Whole seconds until the key may try again.
        retry_after_s: u64,
    },
    /// The registry failed (500; 503 when its etcd cannot be reached).
    #[error("registry error: {0}")]
    Registry(#[from] StoreError),
    /// Something else failed inside the control plane (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) | ApiError::LedgerPeriod(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::RateLimited { .. } => 429,
            ApiError::Unavailable(_) | ApiError::Registry(StoreError::Unreachable { .. }) => 503,
            ApiError::Registry(_) | ApiError::Internal(_) => 500,
        }
    }

    /// The code callers act on, if this refusal has one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::LedgerPeriod(_) => Some(ErrorCode::LedgerPeriodRejected),
            ApiError::RateLimited { .. } => Some(ErrorCode::RateLimited),
            _ => None,
        }
    }

    /// The JSON response that tells the caller why.
    pub fn into_response(self) -> ApiResponse {
        if let ApiError::Registry(err) = &self {
            tracing::error!("registry: {err}");
        }
        let mut response = crate::api::json(
            self.status(),
            &ErrorBody {
                error: self.to_string(),
                code: self.code(),
            },
        );
        if let ApiError::RateLimited { retry_after_s } = self {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_s),
            );
        }
        response
    }
}
