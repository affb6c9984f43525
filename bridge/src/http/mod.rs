//! The HTTP server. [`router`] composes one router per area, each with its own state:
//! - [`api`]: the command API (bearer tokens);
//! - [`sigfox`]: the Sigfox callbacks (the callback secret);
//! - [`health`]: `/healthz` and `/metrics`;
//! - [`openapi`]: `/v1/openapi.json`, the description of all of them.
//!
//! [`cellular`] is the devices' own listener (`[cellular] bind`), apart from this router.
//!
//! Every refusal is an [`error::HttpError`], rendered as the contract's JSON error.
//! [`server`] serves the connections.
pub mod api;
pub mod cellular;
pub mod error;
pub mod health;
pub mod openapi;
pub mod server;
pub mod sigfox;
pub mod standby;
pub mod tls;

use crate::commands::Commands;
use crate::metrics::Metrics;
use crate::mqtt::ConnectionState;
use crate::networks::sigfox::SigfoxAdapter;
use crate::pipeline::Pipeline;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use gateway_config::Settings;
pub use server::{ConnectionLimits, serve};
use std::sync::Arc;

/// What the areas of the server are built on.
pub struct Areas {
    /// The command queue.
    pub commands: Arc<Commands>,
    /// Device states.
    pub pipeline: Arc<Pipeline>,
    /// The Sigfox adapter.
    pub sigfox: Arc<SigfoxAdapter>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The broker connection, for `/healthz`.
    pub mqtt: ConnectionState,
    /// API tokens and device groups.
    pub operators: Arc<crate::operators::Operators>,
}

/// The whole router: the areas, the JSON `404` and `405`, the body and header limits.
pub fn router(settings: &Settings, areas: Areas) -> Router {
    let body_limit = settings.http.body_limit_bytes as usize;
    let api = api::routes(api::ApiState {
        commands: areas.commands.clone(),
        pipeline: areas.pipeline,
        operators: areas.operators,
        body_limit,
    });
    let sigfox = sigfox::routes(sigfox::SigfoxRoutes {
        adapter: areas.sigfox,
        body_limit,
    });
    let health = health::routes(
        health::HealthState {
            mqtt: areas.mqtt,
            commands: areas.commands,
            metrics: areas.metrics,
        },
        settings.metrics.enabled,
    );
    api.merge(sigfox)
        .merge(health)
        .merge(openapi::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(server::header_limits))
}
