//! The HTTP server: the command API ([`crate::api`]), /healthz and /metrics.
use crate::chirpstack::ChirpstackAdapter;
use crate::commands::Commands;
use crate::commands::store::CommandStore;
use crate::metrics::Metrics;
use crate::mqtt::ConnectionState;
use crate::pipeline::Pipeline;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gateway_config::Settings;
use serde_json::json;
use std::sync::Arc;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The broker connection.
    pub mqtt: ConnectionState,
    /// Device states.
    pub pipeline: Arc<Pipeline>,
    /// The command queue.
    pub commands: Arc<Commands>,
    /// For class B/C devices, which take a new command at once.
    pub chirpstack: Arc<ChirpstackAdapter>,
    /// Accepted API bearer tokens.
    pub api_tokens: Arc<Vec<String>>,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Serve /metrics.
    pub metrics_enabled: bool,
    /// The Sigfox callbacks' secret and quota.
    pub sigfox: Arc<crate::sigfox::SigfoxState>,
}

impl AppState {
    /// The state for a configuration.
    pub fn new(
        settings: &Settings,
        metrics: Arc<Metrics>,
        mqtt: ConnectionState,
        pipeline: Arc<Pipeline>,
        commands: Arc<Commands>,
        chirpstack: Arc<ChirpstackAdapter>,
    ) -> Self {
        AppState {
            metrics,
            mqtt,
            pipeline,
            commands,
            chirpstack,
            api_tokens: Arc::new(settings.http.api_tokens.clone()),
            body_limit: settings.http.body_limit_bytes as usize,
            metrics_enabled: settings.metrics.enabled,
            sigfox: Arc::new(crate::sigfox::SigfoxState::new(
                &settings.sigfox.secret,
                settings.sigfox.daily_downlinks,
            )),
        }
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit;
    let mut r = crate::api::routes(&state)
        .route(
            "/v1/sigfox/uplink",
            axum::routing::post(crate::sigfox::uplink),
        )
        .route("/v1/sigfox/ack", axum::routing::post(crate::sigfox::ack))
        .route("/healthz", get(healthz));
    if state.metrics_enabled {
        r = r.route("/metrics", get(metrics));
    }
    r.fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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
    let store = s.commands.store().ping().await;
    let status = if mqtt && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    (
        status,
        axum::Json(json!({"mqtt": word(mqtt), "store": word(store)})),
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

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
