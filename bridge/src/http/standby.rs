//! What a standby bridge answers on its HTTP port while another bridge holds the lock
//! (docs/deployment.md): `503` to everything, so that a load balancer or keepalived
//! sends clients to the active one, and a client that reaches it anyway knows why.
use super::error::HttpError;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The standby's routes; `store`: whether PostgreSQL answered the last try of the lock.
pub fn router(store: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(elsewhere)
        .with_state(store)
}

fn retry_soon(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn healthz(State(store): State<Arc<AtomicBool>>) -> Response {
    let store = if store.load(Ordering::Relaxed) {
        "up"
    } else {
        "down"
    };
    retry_soon(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"role": "standby", "mqtt": "down", "store": store})),
        )
            .into_response(),
    )
}

async fn elsewhere() -> Response {
    retry_soon(
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "standby",
            "this bridge is the standby: another bridge holds the PostgreSQL lock and serves requests",
        )
        .into_response(),
    )
}
