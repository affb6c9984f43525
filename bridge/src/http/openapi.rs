//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route of this server, its
//! bodies, error shape and authentication (`openapi.json` beside this file). The tests
//! hold it to the code: every route the server has is in it and back, and every answer
//! of a walk through the running bridge validates against its schema
//! (`tests/it/openapi.rs`).
use axum::Router;
use axum::http::header;
use axum::routing::get;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document's route, without authentication (it describes how to authenticate).
pub fn routes() -> Router {
    Router::new().route(
        "/v1/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT) }),
    )
}
