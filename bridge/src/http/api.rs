//! The command API: `/v1/devices/{network}/{id}/commands`, `/v1/commands/{id}`,
//! `/v1/devices/{network}/{id}`, the groups (`/v1/groups/{group}`…) and batches
//! (`/v1/batches`). Every route needs `Authorization: Bearer <token>`: the token's scopes
//! decide what it may do (`403` otherwise), and a device it may not see answers the same
//! `404` as one the bridge does not know. Errors are JSON `{error:{code, message}}`; bad
//! input is always a 4xx.
use super::error::HttpError;
use crate::commands::model::{CommandState, Origin};
use crate::commands::{CommandError, Commands};
use crate::device::DeviceId;
use crate::operators::{Operator, Operators};
use crate::pipeline::Pipeline;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
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
    /// The tokens and groups.
    pub operators: Arc<Operators>,
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
        .route("/v1/groups/{group}", get(group))
        .route(
            "/v1/groups/{group}/devices/{network}/{id}",
            put(join_group).delete(leave_group),
        )
        .route("/v1/batches", post(create_batch))
        .route("/v1/batches/{id}", get(batch))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let Some(op) = bearer(req.headers()).and_then(|given| s.operators.authenticate(given)) else {
        return HttpError::unauthorized(
            "Bearer",
            "a valid Authorization: Bearer <token> is needed",
        )
        .into_response();
    };
    req.extensions_mut().insert(op);
    next.run(req).await
}

/// `403` unless the token has `scope`.
fn need(op: &Operator, scope: &str) -> Result<(), HttpError> {
    let has = match scope {
        "read" => op.can_read(),
        _ => op.can_command(),
    };
    if has {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token \"{}\" has no {scope} scope", op.name()),
        ))
    }
}

/// What a device the bridge does not know answers; a device the token may not see
/// answers the same, so that a token learns nothing of devices outside its scope.
fn unknown_device(device: &DeviceId) -> HttpError {
    HttpError::not_found(
        "unknown_device",
        format!("no uplink from {device} since the bridge started"),
    )
}

/// The device of the path, if the token may see it (`404` otherwise), and with `scope`.
fn visible_device(
    s: &ApiState,
    op: &Operator,
    path: Result<Path<(String, String)>, PathRejection>,
    scope: &str,
) -> Result<DeviceId, HttpError> {
    let device = device(path)?;
    if !s.operators.sees(op, &device) {
        return Err(unknown_device(&device));
    }
    need(op, scope)?;
    Ok(device)
}

/// A command the token may see (else the `404` of an unknown id), with `scope`.
async fn visible_command(
    s: &ApiState,
    op: &Operator,
    id: &str,
    scope: &str,
) -> Result<
    (
        crate::commands::model::Command,
        Vec<crate::commands::model::HistoryEntry>,
    ),
    HttpError,
> {
    let (cmd, history) = s.commands.get(id).await?;
    if !s.operators.sees(op, &cmd.device) {
        return Err(CommandError::NotFound(id.to_owned()).into());
    }
    need(op, scope)?;
    Ok((cmd, history))
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

/// A JSON request body: `415` when it says it is something else, `400` when it does not
/// read, `413` when too large.
fn json_body(
    s: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, HttpError> {
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
    crate::commands::json::read_body(&body).map_err(|e| HttpError::bad_request("bad_json", e))
}

async fn create(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let device = visible_device(&s, &op, path, "command")?;
    let value = json_body(&s, &headers, body)?;
    let origin = Origin::Token(op.name().to_owned());
    let (cmd, _) = s.commands.create(&device, &value, origin).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(cmd.to_json())).into_response())
}

async fn list(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HttpError> {
    let device = visible_device(&s, &op, path, "read")?;
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

/// The one parameter of a path (a command, batch or group name); one that is not text
/// (invalid UTF-8) gets the contract's JSON error.
fn path_text(path: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    path.map(|Path(id)| id)
        .map_err(|e| HttpError::bad_request("bad_path", e.body_text()))
}

async fn get_one(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = path_text(path)?;
    let (cmd, history) = visible_command(&s, &op, &id, "read").await?;
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
    Extension(op): Extension<Operator>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = path_text(path)?;
    visible_command(&s, &op, &id, "command").await?;
    let cmd = s
        .commands
        .cancel(&id, &Origin::Token(op.name().to_owned()))
        .await?;
    Ok(axum::Json(cmd.to_json()).into_response())
}

async fn device_state(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, HttpError> {
    let device = visible_device(&s, &op, path, "read")?;
    match s.pipeline.state(&device) {
        Some(state) => Ok(axum::Json(state).into_response()),
        None => Err(unknown_device(&device)),
    }
}

/// A group name from the path (`400` when it is not one).
fn group_name(name: &str) -> Result<String, HttpError> {
    if gateway_config::valid_name(name) {
        Ok(name.to_owned())
    } else {
        Err(HttpError::bad_request(
            "bad_group",
            format!(
                "\"{}\" is not a group name (1 to 64 lowercase letters, digits, '-', '_' or '.')",
                crate::device::excerpt(name)
            ),
        ))
    }
}

/// The members of a group the token sees; `404` when it sees none.
fn visible_members(s: &ApiState, op: &Operator, group: &str) -> Result<Vec<DeviceId>, HttpError> {
    let members: Vec<DeviceId> = s
        .operators
        .members(group)
        .into_iter()
        .filter(|d| s.operators.sees(op, d))
        .collect();
    if members.is_empty() {
        return Err(unknown_group(group));
    }
    Ok(members)
}

fn unknown_group(group: &str) -> HttpError {
    HttpError::not_found(
        "unknown_group",
        format!("no group \"{group}\" with a device this token may see"),
    )
}

async fn group(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let name = group_name(&path_text(path)?)?;
    need(&op, "read")?;
    let devices: Vec<_> = s
        .operators
        .members_with_sources(&name)
        .into_iter()
        .filter(|(d, _)| s.operators.sees(&op, d))
        .map(|(d, sources)| json!({"device": d.to_string(), "sources": sources}))
        .collect();
    if devices.is_empty() {
        return Err(unknown_group(&name));
    }
    Ok(axum::Json(json!({"group": name, "devices": devices})).into_response())
}

/// The path of a membership route: group, network and id.
type MemberPath = Result<Path<(String, String, String)>, PathRejection>;

async fn join_group(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: MemberPath,
) -> Result<Response, HttpError> {
    membership(&s, &op, path, true).await
}

async fn leave_group(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: MemberPath,
) -> Result<Response, HttpError> {
    membership(&s, &op, path, false).await
}

/// Adds a device to a group through the API, or takes that membership away (those
/// from the configuration or a tag stay).
async fn membership(
    s: &ApiState,
    op: &Operator,
    path: MemberPath,
    present: bool,
) -> Result<Response, HttpError> {
    let Path((group, network, id)) =
        path.map_err(|e| HttpError::bad_request("bad_path", e.body_text()))?;
    let group = group_name(&group)?;
    let device = DeviceId::parse(&network, &id)
        .map_err(|e| HttpError::bad_request("bad_device", e.to_string()))?;
    if !s.operators.sees(op, &device) {
        return Err(unknown_device(&device));
    }
    need(op, "command")?;
    s.operators
        .set_member(&group, &device, present)
        .await
        .map_err(HttpError::store_unavailable)?;
    tracing::info!(group, device = %device, present, token = op.name(), "group membership through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/batches`: one command to every device of a group (`"group"`) or of a list
/// (`"devices"`) that the token may see, one per device, under one batch id.
async fn create_batch(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    need(&op, "command")?;
    let mut value = json_body(&s, &headers, body)?;
    let Some(req) = value.as_object_mut() else {
        return Err(HttpError::bad_request(
            "invalid_command",
            "expected a JSON object such as {\"group\":\"depot-1\",\"command\":\"lock\"}",
        ));
    };
    let group = req.remove("group");
    let list = req.remove("devices");
    let devices: Vec<DeviceId> = match (group, list) {
        (Some(serde_json::Value::String(g)), None) => {
            let g = group_name(&g)?;
            visible_members(&s, &op, &g)?
        }
        (None, Some(serde_json::Value::Array(items))) if !items.is_empty() => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let d = item
                    .as_str()
                    .and_then(|t| DeviceId::parse_path(t).ok())
                    .ok_or_else(|| {
                        HttpError::bad_request(
                            "bad_device",
                            format!(
                                "devices[{i}]: {} is not a device such as lorawan/70b3d57ed0000001",
                                crate::device::excerpt(&item.to_string())
                            ),
                        )
                    })?;
                if !s.operators.sees(&op, &d) {
                    return Err(unknown_device(&d));
                }
                out.push(d);
            }
            out.sort();
            out.dedup();
            out
        }
        _ => {
            return Err(HttpError::bad_request(
                "invalid_command",
                "name the devices: either \"group\": a group name, or \"devices\": a non-empty list of devices",
            ));
        }
    };
    let origin = Origin::Token(op.name().to_owned());
    let (batch_id, created) = s.commands.create_batch(&devices, &value, origin).await?;
    let counts = s
        .commands
        .batch_progress(&batch_id)
        .await?
        .unwrap_or_default();
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let progress = crate::commands::progress_json(&batch_id, &counts, s.commands.now());
    Ok((status, axum::Json(progress)).into_response())
}

/// `GET /v1/batches/{id}`: how many of its commands are in each state.
async fn batch(
    State(s): State<ApiState>,
    Extension(op): Extension<Operator>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = path_text(path)?;
    need(&op, "read")?;
    let unknown = || {
        HttpError::not_found(
            "not_found",
            format!("no batch \"{}\"", crate::device::excerpt(&id)),
        )
    };
    if !op.sees_all() {
        let devices = s.commands.batch_devices(&id).await?;
        if devices.is_empty() || !devices.iter().all(|d| s.operators.sees(&op, d)) {
            return Err(unknown());
        }
    }
    let counts = s.commands.batch_progress(&id).await?.ok_or_else(unknown)?;
    Ok(axum::Json(crate::commands::progress_json(
        &id,
        &counts,
        s.commands.now(),
    ))
    .into_response())
}
