//! The Sigfox callback routes: `POST /v1/sigfox/uplink` (DATA, UPLINK and BIDIR) and
//! `POST /v1/sigfox/ack` (SERVICE ACKNOWLEDGE), authenticated with the callback secret
//! (`Authorization: Basic` with any user, or `Bearer`). The adapter does the rest.
use super::api::bearer_or_basic_secret;
use super::error::HttpError;
use crate::networks::sigfox::SigfoxAdapter;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::sync::Arc;
use std::time::Instant;

/// What the Sigfox routes use.
#[derive(Clone)]
pub struct SigfoxRoutes {
    /// The adapter.
    pub adapter: Arc<SigfoxAdapter>,
    /// `http.body_limit_bytes`, for the `413` message.
    pub body_limit: usize,
}

/// The two callback routes.
pub fn routes(state: SigfoxRoutes) -> Router {
    Router::new()
        .route("/v1/sigfox/uplink", post(uplink))
        .route("/v1/sigfox/ack", post(ack))
        .with_state(state)
}

/// Authenticates a callback and hands over its body, and whether it is form-encoded.
fn read<'b>(
    s: &SigfoxRoutes,
    headers: &HeaderMap,
    body: &'b Result<Bytes, BytesRejection>,
) -> Result<(&'b [u8], bool), HttpError> {
    if !s
        .adapter
        .authorized(bearer_or_basic_secret(headers).as_deref())
    {
        return Err(HttpError::unauthorized(
            "Basic realm=\"sigfox\"",
            "the callback's Authorization header does not carry the configured sigfox.secret",
        ));
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return Err(HttpError::body(e, s.body_limit)),
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    Ok((body, form))
}

async fn uplink(
    State(s): State<SigfoxRoutes>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let received = Instant::now();
    let (body, form) = read(&s, &headers, &body)?;
    Ok(match s.adapter.data(body, form, received).await? {
        Some(reply) => (StatusCode::OK, axum::Json(reply.to_json())).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn ack(
    State(s): State<SigfoxRoutes>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, HttpError> {
    let (body, form) = read(&s, &headers, &body)?;
    s.adapter.acknowledge(body, form).await?;
    Ok(StatusCode::NO_CONTENT)
}
