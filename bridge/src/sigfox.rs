//! The Sigfox adapter: DATA callbacks (UPLINK and BIDIR) and SERVICE ACKNOWLEDGE, over
//! HTTP. A BIDIR callback with `ack` true is the device's receive window: the reply
//! carries one 8-byte command frame, or is a `204`.
//!
//! Sigfox writes callback bodies from the user's template by substituting text, so a
//! value may arrive as a JSON number, a boolean or a string, and the body may be JSON or
//! `application/x-www-form-urlencoded`: every field is read from any of them.
use crate::api::bearer_or_basic_secret;
use crate::commands::model::CommandState;
use crate::commands::store::CommandStore;
use crate::commands::{Commands, ReceiveWindow};
use crate::device::{DeviceId, Network};
use crate::http::{AppState, constant_time_eq, error};
use crate::pipeline::{CodecKeys, Uplink, lock};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

/// Sigfox settings and the per-day record of quota refusals already written.
pub struct SigfoxState {
    /// The callback secret; empty refuses every callback.
    pub secret: String,
    /// Downlinks a device may take per day.
    pub daily_downlinks: u8,
    /// (device, day) pairs whose quota refusal is already in the commands' history.
    quota_noted: Mutex<HashSet<(DeviceId, i64)>>,
}

impl SigfoxState {
    /// From `[sigfox]`.
    pub fn new(secret: &str, daily_downlinks: u8) -> Self {
        SigfoxState {
            secret: secret.to_owned(),
            daily_downlinks,
            quota_noted: Mutex::new(HashSet::new()),
        }
    }
}

const DAY_MS: i64 = 86_400_000;

/// Why a callback was refused: the HTTP status and a message naming the field.
type Refusal = Box<Response>;

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
    Box::new(error(status, code, message))
}

/// Authenticates and parses a callback body into a map of fields.
fn read_callback(
    s: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, Refusal> {
    let secret = &s.sigfox.secret;
    let given = bearer_or_basic_secret(headers);
    if secret.is_empty()
        || !given.is_some_and(|g| constant_time_eq(g.as_bytes(), secret.as_bytes()))
    {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the callback's Authorization header does not carry the configured sigfox.secret",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"sigfox\""),
        );
        return Err(Box::new(r));
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {} bytes", s.body_limit),
            ));
        }
        Err(e) => return Err(refuse(StatusCode::BAD_REQUEST, "bad_body", e.body_text())),
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        return Ok(url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "expected a JSON object",
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("not JSON: {e}"),
        )),
    }
}

/// A field as text, whether the template quoted it or not.
fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn required(m: &Map<String, Value>, key: &str) -> Result<String, Refusal> {
    text(m, key).filter(|s| !s.is_empty()).ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "missing_field",
            format!("{key}: missing"),
        )
    })
}

fn number<T: std::str::FromStr>(m: &Map<String, Value>, key: &str) -> Result<Option<T>, Refusal> {
    match text(m, key) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_field",
                format!("{key}: \"{s}\" is not a number"),
            )
        }),
    }
}

fn boolean(m: &Map<String, Value>, key: &str) -> Result<bool, Refusal> {
    match text(m, key).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("{key}: \"{other}\" is not true or false"),
        )),
    }
}

/// `POST /v1/sigfox/uplink`: a DATA callback, UPLINK or BIDIR.
pub async fn uplink(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let received = Instant::now();
    match uplink_inner(&s, &headers, body, received).await {
        Ok(r) => r,
        Err(r) => *r,
    }
}

async fn uplink_inner(
    s: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    received: Instant,
) -> Result<Response, Refusal> {
    let m = read_callback(s, headers, body)?;
    let device_as_written = required(&m, "device")?;
    let device = DeviceId::new(Network::Sigfox, &device_as_written)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_field", format!("device: {e}")))?;
    let data_hex = text(&m, "data").unwrap_or_default();
    let data = hex::decode(&data_hex).map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("data: \"{data_hex}\" is not hex"),
        )
    })?;
    if data.len() > gateway_config::sigfox::MAX_UPLINK_BYTES {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("data: {} bytes; a Sigfox uplink has at most 12", data.len()),
        ));
    }
    let seq: Option<u16> = number(&m, "seqNumber")?;
    if seq.is_some_and(|q| q >= gateway_config::sigfox::SEQ_NUMBER_MODULUS) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            "seqNumber: out of range 0..=4095",
        ));
    }
    let time: Option<i64> = number(&m, "time")?;
    let ack = boolean(&m, "ack")?;
    let long_polling = boolean(&m, "longPolling")?;
    let rssi: Option<f64> = number(&m, "rssi")?;
    let snr: Option<f64> = number(&m, "snr")?;
    let device_type = text(&m, "deviceTypeId").filter(|t| !t.is_empty());

    let mut meta = Map::new();
    meta.insert("seq_number".into(), json!(seq));
    meta.insert(
        "time".into(),
        json!(time.map(|t| crate::clock::rfc3339(t * 1000))),
    );
    meta.insert("station".into(), json!(text(&m, "station")));
    meta.insert("rssi".into(), json!(rssi));
    meta.insert("snr".into(), json!(snr));
    meta.insert("device_type_id".into(), json!(device_type));
    meta.insert("ack".into(), json!(ack));
    meta.insert("long_polling".into(), json!(long_polling));
    let mut facts = Map::new();
    facts.insert("device_type_id".into(), json!(device_type));
    // Retries (+1, +2, +4 min) and copies from several base stations repeat the message's
    // own time; with it, a sequence number that wrapped (12 bits) is a new message.
    let dedup_key = seq.map(|q| format!("{q}|{}", time.map_or(String::new(), |t| t.to_string())));
    let up = Uplink {
        device: device.clone(),
        payload: data,
        fport: None,
        received,
        dedup_key,
        codec_keys: CodecKeys {
            sigfox_device_type: device_type,
            ..Default::default()
        },
        meta: crate::pipeline::raw_json(&meta),
        network_facts: facts,
    };
    let Some(ingested) = s.pipeline.ingest(up).await else {
        return Ok(StatusCode::NO_CONTENT.into_response()); // a retry: published once, no second command
    };
    let window = if ack {
        Some(ReceiveWindow { frames: 1 })
    } else {
        None
    };
    let plan = if window.is_some() && s.commands.has_queued(&device) {
        let day = s.commands.now().div_euclid(DAY_MS);
        if take_quota(s, &device, day).await {
            let plan = s
                .commands
                .after_uplink(&device, &ingested.acks, window)
                .await;
            if plan.is_none() {
                let _ = s.commands.store().return_daily_quota(&device, day).await;
            }
            plan
        } else {
            note_quota(s, &device, day).await;
            s.commands.after_uplink(&device, &ingested.acks, None).await
        }
    } else {
        s.commands.after_uplink(&device, &ingested.acks, None).await
    };
    Ok(match plan {
        Some(plan) => {
            let mut reply = Map::new();
            reply.insert(
                device_as_written,
                json!({"downlinkData": hex::encode(&plan.payload)}),
            );
            (StatusCode::OK, axum::Json(Value::Object(reply))).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn take_quota(s: &AppState, device: &DeviceId, day: i64) -> bool {
    match s
        .commands
        .store()
        .take_daily_quota(device, day, s.sigfox.daily_downlinks as u32)
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(device = %device, error = %e, "store failed taking the daily downlink quota");
            false
        }
    }
}

/// Writes "daily quota used up" into the history of the device's queued commands, once
/// a day.
async fn note_quota(s: &AppState, device: &DeviceId, day: i64) {
    {
        let mut noted = lock(&s.sigfox.quota_noted);
        noted.retain(|(_, d)| *d >= day); // only today's notes matter
        if !noted.insert((device.clone(), day)) {
            return;
        }
    }
    let reason = format!(
        "waiting: the daily downlink quota ({}) is used up",
        s.sigfox.daily_downlinks
    );
    if let Ok(queued) = s
        .commands
        .store()
        .list(device, Some(CommandState::Queued), 1000)
        .await
    {
        for cmd in queued {
            s.commands
                .transition(
                    &cmd.id,
                    &[CommandState::Queued],
                    CommandState::Queued,
                    Some(&reason),
                )
                .await;
        }
    }
}

/// Sigfox ACKNOWLEDGE info codes: name, and whether retrying can help.
fn info_code(code: u32) -> (&'static str, bool) {
    match code {
        0 => ("ACKED", true),
        1 => ("NO_ANSWER", true),
        2 => ("INVALID_PAYLOAD", false),
        3 => ("OVERRUN_ERROR", true),
        4 => ("NETWORK_ERROR", true),
        5 => ("PENDING", true),
        6 => ("NO_DOWNLINK_CONTRACT", false),
        7 => ("TOO_MANY_REQUESTS", true),
        8 => ("INVALID_CONFIGURATION", false),
        _ => ("UNKNOWN", true),
    }
}

/// `POST /v1/sigfox/ack`: SERVICE ACKNOWLEDGE for the device's last downlink.
pub async fn ack(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match ack_inner(&s, &headers, body).await {
        Ok(r) => r,
        Err(r) => *r,
    }
}

async fn ack_inner(
    s: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let m = read_callback(s, headers, body)?;
    let device_text = required(&m, "device")?;
    let device = DeviceId::new(Network::Sigfox, &device_text)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_field", format!("device: {e}")))?;
    let code: u32 = number(&m, "infoCode")?.ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "infoCode: missing",
        )
    })?;
    let acked = boolean(&m, "downlinkAck")?;
    let message = text(&m, "infoMessage").unwrap_or_default();
    let Some(downlink) = last_downlink(&s.commands, &device).await else {
        tracing::info!(device = %device, code, "ACKNOWLEDGE for a device with no downlink in flight");
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let (name, retry) = info_code(code);
    let reason = format!("sigfox: {name}: {message}");
    if code == 0 && acked {
        s.commands.network_ack(&downlink, true).await;
    } else if retry {
        s.commands.network_not_delivered(&downlink, &reason).await;
    } else {
        s.commands
            .network_dropped(&downlink, CommandState::Failed, &reason)
            .await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The downlink id of the device's newest command with the network.
async fn last_downlink(commands: &Commands, device: &DeviceId) -> Option<String> {
    commands.settled().await;
    let newest = commands
        .store()
        .list(device, Some(CommandState::Scheduled), 1)
        .await
        .ok()?;
    newest.into_iter().next()?.network_ref
}
