//! The command API: `/v1/devices/{network}/{id}/commands`, `/v1/commands/{id}` and
//! `/v1/devices/{network}/{id}`. Every route needs `Authorization: Bearer <token>`.
//! Errors are JSON `{error:{code, message}}`; bad input is always a 4xx.
use crate::commands::model::CommandState;
use crate::commands::store::CommandStore;
use crate::commands::{Commands, RequestError};
use crate::device::{DeviceId, excerpt};
use crate::http::{AppState, constant_time_eq, error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The API routes, behind bearer-token authentication.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/devices/{network}/{id}/commands",
            get(list).post(create),
        )
        .route("/v1/devices/{network}/{id}", get(device_state))
        .route("/v1/commands/{id}", get(get_one).delete(cancel))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
}

async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let ok = bearer(req.headers()).is_some_and(|given| {
        s.api_tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
    });
    if !ok {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid Authorization: Bearer <token> is needed",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(req).await
}

/// The secret of `Authorization: Bearer <secret>` or `Basic base64(user:secret)` (any
/// user), as Sigfox callbacks carry it.
pub fn bearer_or_basic_secret(headers: &HeaderMap) -> Option<String> {
    if let Some(token) = bearer(headers) {
        return Some(token.to_owned());
    }
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, secret) = text.split_once(':')?;
    Some(secret.to_owned())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn device(path: Result<Path<(String, String)>, PathRejection>) -> Result<DeviceId, Response> {
    let Path((network, id)) =
        path.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))?;
    DeviceId::parse(&network, &id)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_device", e.to_string()))
}

fn store_unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store failed serving a request");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the command store is not available; try again",
    )
}

async fn create(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let device = match device(path) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {} bytes", s.body_limit),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e.body_text()),
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("application/json"));
    if !json_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        );
    }
    let value = match crate::command_json::read_body(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_json", e),
    };
    created(&s.commands, &s, &device, &value).await
}

async fn created(commands: &Commands, s: &AppState, device: &DeviceId, body: &Value) -> Response {
    match commands.create(device, body).await {
        Ok((cmd, new)) => {
            if new {
                s.chirpstack.command_created(device).await;
            }
            (StatusCode::ACCEPTED, axum::Json(cmd.to_json())).into_response()
        }
        Err(RequestError::Invalid(m)) => error(StatusCode::BAD_REQUEST, "invalid_command", m),
        Err(RequestError::Conflict(m)) => error(StatusCode::CONFLICT, "id_conflict", m),
        Err(RequestError::Store(e)) => store_unavailable(e),
    }
}

async fn list(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let device = match device(path) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "the query string does not parse",
        );
    };
    let state = match q.get("state") {
        None => None,
        Some(name) => match CommandState::from_name(name) {
            Some(st) => Some(st),
            None => {
                let names: Vec<_> = CommandState::ALL.iter().map(|s| s.name()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_state",
                    format!(
                        "state: unknown \"{name}\"; expected one of {}",
                        names.join(", ")
                    ),
                );
            }
        },
    };
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                "limit: expected 1..=1000",
            );
        }
    };
    read_after_windows(&s).await;
    match s.commands.store().list(&device, state, limit).await {
        Ok(cmds) => axum::Json(json!({"device": device.to_string(), "commands": cmds.iter().map(|c| c.to_json()).collect::<Vec<_>>()})).into_response(),
        Err(e) => store_unavailable(e),
    }
}

/// Reads show the receive windows already handed over (their store write is at most
/// a few ms behind); a store that does not answer is reported by the read itself.
async fn read_after_windows(s: &AppState) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.commands.settled()).await;
}

/// A command id from the path; one that is not text (invalid UTF-8) gets the contract's
/// JSON error.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn command_id(path: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    path.map(|Path(id)| id)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))
}

async fn get_one(State(s): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let id = match command_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    read_after_windows(&s).await;
    match s.commands.store().get(&id).await {
        Ok(Some((cmd, history))) => {
            let mut v = cmd.to_json();
            v["history"] = history
                .iter()
                .map(|h| {
                    let mut e = h.event_json(&cmd.id);
                    if let Some(m) = e.as_object_mut() {
                        m.remove("command_id");
                    }
                    e
                })
                .collect();
            axum::Json(v).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no command \"{}\"", excerpt(&id)),
        ),
        Err(e) => store_unavailable(e),
    }
}

async fn cancel(State(s): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let id = match command_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match s.commands.cancel(&id).await {
        Ok(Some(cmd)) => axum::Json(cmd.to_json()).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no command \"{}\"", excerpt(&id)),
        ),
        Err(Ok(state)) => error(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "command \"{}\" is {state}: only a queued command can be cancelled (a scheduled one is already with the network)",
                excerpt(&id)
            ),
        ),
        Err(Err(e)) => store_unavailable(e),
    }
}

async fn device_state(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let device = match device(path) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match s.pipeline.state(&device) {
        Some(state) => axum::Json(state).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_device",
            format!("no uplink from {device} since the bridge started"),
        ),
    }
}
