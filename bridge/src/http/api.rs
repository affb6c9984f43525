//! The command API: `/v1/devices/{network}/{id}/commands`, `/v1/commands/{id}` and
//! `/v1/devices/{network}/{id}`. Every route needs `Authorization: Bearer <token>`.
//! Errors are JSON `{error:{code, message}}`; bad input is always a 4xx.
use super::error::HttpError;
use crate::commands::Commands;
use crate::commands::model::CommandState;
use crate::device::DeviceId;
use crate::pipeline::Pipeline;
use crate::secret::constant_time_eq;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// What the command API uses.
#[derive(Clone)]
pub struct ApiState {
    /// The command queue: the API's only way to commands.
    pub commands: Arc<Commands>,
    /// Device states.
    pub pipeline: Arc<Pipeline>,
    /// Accepted bearer tokens.
    pub api_tokens: Arc<Vec<String>>,
    /// `http.body_limit_bytes`, for the `413` message.
    pub body_limit: usize,
}

/// The API routes, behind bearer-token authentication.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v1/devices/{network}/{id}/commands",
            get(list).post(create),
        )
        .route("/v1/devices/{network}/{id}", get(device_state))
        .route("/v1/commands/{id}", get(get_one).delete(cancel))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let ok = bearer(req.headers()).is_some_and(|given| {
        s.api_tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
    });
    if !ok {
        return HttpError::unauthorized(
            "Bearer",
            "a valid Authorization: Bearer <token> is needed",
        )
        .into_response();
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

fn device(path: Result<Path<(String, String)>, PathRejection>) -> Result<DeviceId, HttpError> {
    let Path((network, id)) =
        path.map_err(|e| HttpError::bad_request("bad_path", e.body_text()))?;
    DeviceId::parse(&network, &id).map_err(|e| HttpError::bad_request("bad_device", e.to_string()))
}

async fn create(
    State(s): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let device = device(path)?;
    let body = body.map_err(|e| HttpError::body(&e, s.body_limit))?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("application/json"));
    if !json_type {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        ));
    }
    let value = crate::commands::json::read_body(&body)
        .map_err(|e| HttpError::bad_request("bad_json", e))?;
    let (cmd, _) = s.commands.create(&device, &value).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(cmd.to_json())).into_response())
}

async fn list(
    State(s): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HttpError> {
    let device = device(path)?;
    let Ok(Query(q)) = query else {
        return Err(HttpError::bad_request(
            "bad_query",
            "the query string does not parse",
        ));
    };
    let state = match q.get("state") {
        None => None,
        Some(name) => Some(CommandState::from_name(name).ok_or_else(|| {
            let names: Vec<_> = CommandState::ALL.iter().map(|s| s.name()).collect();
            HttpError::bad_request(
                "bad_state",
                format!(
                    "state: unknown \"{}\"; expected one of {}",
                    crate::device::excerpt(name),
                    names.join(", ")
                ),
            )
        })?),
    };
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        Some(_) => {
            return Err(HttpError::bad_request(
                "bad_limit",
                "limit: expected 1..=1000",
            ));
        }
    };
    let cmds = s.commands.list(&device, state, limit).await?;
    let cmds: Vec<_> = cmds.iter().map(|c| c.to_json()).collect();
    Ok(axum::Json(json!({"device": device.to_string(), "commands": cmds})).into_response())
}

/// A command id from the path; one that is not text (invalid UTF-8) gets the contract's
/// JSON error.
fn command_id(path: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    path.map(|Path(id)| id)
        .map_err(|e| HttpError::bad_request("bad_path", e.body_text()))
}

async fn get_one(
    State(s): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = command_id(path)?;
    let (cmd, history) = s.commands.get(&id).await?;
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
    Ok(axum::Json(v).into_response())
}

async fn cancel(
    State(s): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = command_id(path)?;
    let cmd = s.commands.cancel(&id).await?;
    Ok(axum::Json(cmd.to_json()).into_response())
}

async fn device_state(
    State(s): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, HttpError> {
    let device = device(path)?;
    match s.pipeline.state(&device) {
        Some(state) => Ok(axum::Json(state).into_response()),
        None => Err(HttpError::not_found(
            "unknown_device",
            format!("no uplink from {device} since the bridge started"),
        )),
    }
}
