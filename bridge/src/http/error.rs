//! The one error type of the HTTP layer: every refusal renders as the contract's JSON
//! error `{"error": {"code", "message"}}` (docs/contract.md), and each domain error is
//! mapped to its status here, in one place.
use crate::commands::CommandError;
use crate::networks::sigfox::CallbackError;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: its status, a stable code and a message naming what is wrong.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `WWW-Authenticate` of a `401`.
    challenge: Option<&'static str>,
}

impl HttpError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }

    /// A `400`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A `401` asking for `challenge` (`WWW-Authenticate`).
    pub fn unauthorized(challenge: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// A `404`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The store failed: a `503` (not the client's fault; the cause is logged).
    pub fn store_unavailable(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "store failed serving a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the command store is not available; try again",
        )
    }

    /// A request body axum could not read: too large (`413`) or broken (`400`).
    pub fn body(e: &BytesRejection, limit: usize) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {limit} bytes"),
            )
        } else {
            Self::bad_request("bad_body", e.body_text())
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        r
    }
}

impl From<CommandError> for HttpError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(m) => Self::bad_request("invalid_command", m),
            CommandError::Conflict(m) => Self::new(StatusCode::CONFLICT, "id_conflict", m),
            CommandError::NotFound(_) => Self::not_found("not_found", e.to_string()),
            CommandError::NotCancellable { .. } => {
                Self::new(StatusCode::CONFLICT, "not_cancellable", e.to_string())
            }
            CommandError::Store(s) => Self::store_unavailable(s),
        }
    }
}

impl From<CallbackError> for HttpError {
    fn from(e: CallbackError) -> Self {
        Self::bad_request(e.code(), e.to_string())
    }
}

/// Any route the server does not have.
pub async fn not_found() -> HttpError {
    HttpError::not_found("not_found", "no such route")
}

/// A route asked with a method it does not take.
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_domain_error_renders_the_contracts_json_with_its_status() {
        let cases: Vec<(HttpError, u16, &str)> = vec![
            (
                CommandError::Invalid("x".into()).into(),
                400,
                "invalid_command",
            ),
            (
                CommandError::Conflict("x".into()).into(),
                409,
                "id_conflict",
            ),
            (CommandError::NotFound("c1".into()).into(), 404, "not_found"),
            (
                CommandError::NotCancellable {
                    id: "c1".into(),
                    state: crate::commands::model::CommandState::Sent,
                }
                .into(),
                409,
                "not_cancellable",
            ),
            (
                CallbackError::Missing("device").into(),
                400,
                "missing_field",
            ),
            (CallbackError::NotAnObject.into(), 400, "bad_body"),
        ];
        for (e, status, code) in cases {
            let r = e.into_response();
            assert_eq!(r.status().as_u16(), status);
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], code, "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        let r = HttpError::unauthorized("Bearer", "no").into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
