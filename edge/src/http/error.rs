//! The one shape every error answer takes: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Handlers return [`ApiError`]; turning it into a response is the only place that knows
//! the wire format, so a client can rely on `code` (stable, snake_case, machine-readable)
//! and show `message` (human, may change). Overload answers carry `Retry-After`, because a
//! client told "not now" without "when" retries at once and makes the overload worse.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_resize::{ErrorClass, ResizeError};

/// An error answer: status, stable code, human message and, for overload, a retry hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParameter,
            message,
        )
    }

    /// 503 with a `Retry-After`: the node is healthy but cannot take this request now.
    pub fn overloaded(code: ErrorCode, message: impl Into<String>, retry_after_s: u32) -> Self {
        Self {
            retry_after_s: Some(retry_after_s.max(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 401: no usable credential. The response carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: a valid credential that may not do this.
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 429 with a `Retry-After`: the tenant's quota or rate says not now.
    pub fn too_many(code: ErrorCode, message: impl Into<String>, retry_after_s: u32) -> Self {
        Self {
            retry_after_s: Some(retry_after_s.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this route does not accept that method",
        )
    }
}

impl From<ResizeError> for ApiError {
    fn from(err: ResizeError) -> Self {
        let status = match err.class() {
            // The pool answers a job stopped at its deadline before this is reached; a
            // stop for another reason is still the node giving up, so 503.
            ErrorClass::Cancelled => {
                return Self::overloaded(ErrorCode::of(&err), err.to_string(), 1);
            }
            ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
            ErrorClass::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorClass::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorClass::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, ErrorCode::of(&err), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        // For the request log (`crate::http::access`).
        response.extensions_mut().insert(self.code);
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera\""),
            );
        }
        // An error is never cacheable: a 503 cached by a CDN would outlive the overload.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Declares [`ErrorCode`] from `Variant = "wire_code"` pairs, so each code is written once.
macro_rules! error_codes {
    ($($variant:ident = $code:literal,)*) => {
        /// Every `error.code` the node answers with: stable, snake_case, the contract a
        /// client can rely on. One enum rather than literals at each refusal, so a typo is
        /// a compile error and the list checked against the OpenAPI document
        /// (`edge/tests/openapi.rs`) is this one. The status each code usually goes with
        /// is noted; a few (`tenant_deleted`, `key_revoked`, `payload_too_large`) are
        /// used with more than one status, which the refusal decides.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    // Usually 400.
    InvalidParameter = "invalid_parameter",
    EmptyBody = "empty_body",
    BodyReadFailed = "body_read_failed",
    InvalidJson = "invalid_json",
    InvalidNodeId = "invalid_node_id",
    NoWatermark = "no_watermark",
    // Usually 401.
    MissingKey = "missing_key",
    MalformedKey = "malformed_key",
    InvalidKey = "invalid_key",
    KeyRevoked = "key_revoked",
    TenantDeleted = "tenant_deleted",
    InvalidToken = "invalid_token",
    // Usually 403.
    TenantSuspended = "tenant_suspended",
    InsufficientScope = "insufficient_scope",
    OtherTenant = "other_tenant",
    InvalidSignature = "invalid_signature",
    SignatureExpired = "signature_expired",
    SourceForbidden = "source_forbidden",
    // Usually 404.
    NotFound = "not_found",
    SourceNotFound = "source_not_found",
    // Usually 405.
    MethodNotAllowed = "method_not_allowed",
    // Usually 408.
    BodyTimeout = "body_timeout",
    // Usually 409.
    IdempotencyInProgress = "idempotency_in_progress",
    Exists = "exists",
    DecommissionSelf = "decommission_self",
    AmbiguousName = "ambiguous_name",
    // Usually 413.
    PayloadTooLarge = "payload_too_large",
    // Usually 415.
    UnsupportedMediaType = "unsupported_media_type",
    UndecodableImage = "undecodable_image",
    // Usually 422.
    ImageTooLarge = "image_too_large",
    TooManyFrames = "too_many_frames",
    AnimationTooLarge = "animation_too_large",
    MetadataTooLarge = "metadata_too_large",
    JobMemoryExceeded = "job_memory_exceeded",
    TooCostly = "too_costly",
    IdempotencyKeyReused = "idempotency_key_reused",
    InvalidField = "invalid_field",
    QuotaNotEnforceable = "quota_not_enforceable",
    // Usually 429.
    RateLimited = "rate_limited",
    QuotaExhausted = "quota_exhausted",
    QuotaUnavailable = "quota_unavailable",
    TooManyConnections = "too_many_connections",
    // Usually 500.
    WorkerLost = "worker_lost",
    InternalError = "internal_error",
    MeteringFailed = "metering_failed",
    EncodeFailed = "encode_failed",
    ExportFailed = "export_failed",
    // Usually 502.
    SourceUnavailable = "source_unavailable",
    SourceRedirects = "source_redirects",
    SourceStatus = "source_status",
    SourceTooLarge = "source_too_large",
    SourceTls = "source_tls",
    // Usually 503.
    Overloaded = "overloaded",
    ShuttingDown = "shutting_down",
    DeadlineExceeded = "deadline_exceeded",
    Cancelled = "cancelled",
    StoreFailed = "store_failed",
    StoreUnavailable = "store_unavailable",
    NotReady = "not_ready",
    // Usually 504.
    SourceTimeout = "source_timeout",
    // Usually 507.
    DirectoryFull = "directory_full",
}

impl ErrorCode {
    /// The code of a pipeline refusal: the pipeline's own stable code
    /// ([`ResizeError::code`]), named here by a variant so the match is exhaustive and
    /// a new pipeline error cannot reach a client without a code of this enum.
    pub fn of(err: &ResizeError) -> ErrorCode {
        match err {
            ResizeError::Empty => ErrorCode::EmptyBody,
            ResizeError::InputTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ResizeError::UnsupportedFormat => ErrorCode::UnsupportedMediaType,
            ResizeError::Corrupt(_) => ErrorCode::UndecodableImage,
            ResizeError::DimensionsTooLarge { .. } => ErrorCode::ImageTooLarge,
            ResizeError::TooManyFrames { .. } => ErrorCode::TooManyFrames,
            ResizeError::AnimationTooLarge { .. } => ErrorCode::AnimationTooLarge,
            ResizeError::InvalidOption(_) => ErrorCode::InvalidParameter,
            ResizeError::MetadataTooLarge { .. } => ErrorCode::MetadataTooLarge,
            ResizeError::JobMemoryExceeded { .. } => ErrorCode::JobMemoryExceeded,
            ResizeError::Cancelled => ErrorCode::Cancelled,
            ResizeError::Encode(_) => ErrorCode::EncodeFailed,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline refusal keeps the pipeline's own stable code on the wire.
    #[test]
    fn a_resize_error_keeps_its_code() {
        let errors = [
            ResizeError::Empty,
            ResizeError::InputTooLarge { bytes: 2, max: 1 },
            ResizeError::UnsupportedFormat,
            ResizeError::Corrupt("x".into()),
            ResizeError::DimensionsTooLarge {
                width: 2,
                height: 2,
                pixels: 4,
                width_max: 1,
                height_max: 1,
                pixels_max: 1,
            },
            ResizeError::TooManyFrames { frames: 2, max: 1 },
            ResizeError::AnimationTooLarge {
                frames: 2,
                pixels: 2,
                max: 1,
            },
            ResizeError::InvalidOption("x".into()),
            ResizeError::MetadataTooLarge {
                kind: "EXIF",
                bytes: 2,
                max: 1,
            },
            ResizeError::JobMemoryExceeded { bytes: 2, max: 1 },
            ResizeError::Cancelled,
            ResizeError::Encode("x".into()),
        ];
        for err in errors {
            let code = err.code();
            assert_eq!(ErrorCode::of(&err).as_str(), code, "{err:?}");
            assert_eq!(ApiError::from(err).code.as_str(), code);
        }
    }
}
