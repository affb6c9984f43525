//! `/healthz` and `/metrics`, without authentication.
use crate::commands::Commands;
use crate::metrics::Metrics;
use crate::mqtt::ConnectionState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

/// What the health and metrics routes read.
#[derive(Clone)]
pub struct HealthState {
    /// The broker connection.
    pub mqtt: ConnectionState,
    /// The queue, whose store must answer.
    pub commands: Arc<Commands>,
    /// The metrics, rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// `/healthz`, and `/metrics` when `metrics` is on.
pub fn routes(state: HealthState, metrics: bool) -> Router {
    let mut r = Router::new().route("/healthz", get(healthz));
    if metrics {
        r = r.route("/metrics", get(render_metrics));
    }
    r.with_state(state)
}

async fn healthz(State(s): State<HealthState>) -> Response {
    let mqtt = s.mqtt.is_connected();
    let store = s.commands.store_answers().await;
    let status = if mqtt && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    (
        status,
        axum::Json(json!({"role": "active", "mqtt": word(mqtt), "store": word(store)})),
    )
        .into_response()
}

async fn render_metrics(State(s): State<HealthState>) -> Response {
    // the store's health as of this scrape, so that an alert can see it fail
    let store = s.commands.store_answers().await;
    s.metrics.store_up.set(store as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
