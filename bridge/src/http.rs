//! The HTTP server: /healthz and /metrics (the command API and Sigfox routes join it).
use crate::metrics::Metrics;
use crate::mqtt::ConnectionState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The broker connection.
    pub mqtt: ConnectionState,
}

/// The router.
pub fn router(state: AppState, metrics_enabled: bool) -> Router {
    let mut r = Router::new().route("/healthz", get(healthz));
    if metrics_enabled {
        r = r.route("/metrics", get(metrics));
    }
    r.fallback(not_found).with_state(state)
}

/// A JSON error body `{error:{code, message}}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn healthz(State(s): State<AppState>) -> Response {
    let mqtt = s.mqtt.is_connected();
    let status = if mqtt {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"mqtt": if mqtt { "up" } else { "down" }, "store": "up"})),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
