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
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

/// How long a callback without `time` counts as a copy of one with the same seqNumber:
/// Sigfox retries a callback after 1, 2 and 4 minutes; the 12-bit counter takes days to
/// wrap (at most 140 messages a day).
const UNTIMED_COPY_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Sigfox settings and the per-day record of quota refusals already written.
pub struct SigfoxState {
    /// The callback secret; empty refuses every callback.
    pub secret: String,
    /// Downlinks a device may take per day.
    pub daily_downlinks: u8,
    /// (device, day) pairs whose quota refusal is already in the commands' history.
    quota_noted: Mutex<HashSet<(DeviceId, i64)>>,
    /// The last callbacks by (device, seqNumber): when, its dedup key, and whether it
    /// carried a `time`; kept for [`UNTIMED_COPY_WINDOW`].
    recent_seq: Mutex<HashMap<(DeviceId, u16), SeenCallback>>,
}

/// A callback as [`SigfoxState::dedup_key`] remembers it: when, its dedup key, and
/// whether it carried a `time`.
type SeenCallback = (Instant, String, bool);

impl SigfoxState {
    /// From `[sigfox]`.
    pub fn new(secret: &str, daily_downlinks: u8) -> Self {
        SigfoxState {
            secret: secret.to_owned(),
            daily_downlinks,
            quota_noted: Mutex::new(HashSet::new()),
            recent_seq: Mutex::new(HashMap::new()),
        }
    }

    /// The dedup key of a callback: its own (`seqNumber|time`), unless a callback with
    /// the same seqNumber arrived within [`UNTIMED_COPY_WINDOW`] and one of the two has no
    /// `time`: then it is a copy, and takes that one's key (a template that leaves `time`
    /// out on a retry must not take a second command). Two callbacks that both carry a
    /// time differ when their times do: the counter wrapped.
    fn dedup_key(
        &self,
        device: &DeviceId,
        seq: u16,
        has_time: bool,
        own: Option<String>,
        now: Instant,
    ) -> Option<String> {
        let own = own?;
        let mut recent = lock(&self.recent_seq);
        if recent.len() > 10_000 {
            recent.retain(|_, (at, _, _)| now.duration_since(*at) < UNTIMED_COPY_WINDOW);
        }
        let key = (device.clone(), seq);
        if let Some((at, earlier, earlier_has_time)) = recent.get(&key) {
            if now.duration_since(*at) < UNTIMED_COPY_WINDOW && !(has_time && *earlier_has_time) {
                return Some(earlier.clone());
            }
        }
        recent.insert(key, (now, own.clone(), has_time));
        Some(own)
    }
}

const DAY_MS: i64 = 86_400_000;

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const MAX_TIME_S: i64 = 253_402_300_799;

/// Why a callback was refused: the HTTP status and a message naming the field.
type Refusal = Box<Response>;

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
    Box::new(error(status, code, message))
}

/// The fields the bridge reads from a callback, each as text whatever JSON type the
/// template gave it (borrowed from the body where it can be); every other field is
/// skipped unread.
#[derive(Debug, Default, PartialEq)]
struct Fields<'a> {
    device: Option<Cow<'a, str>>,
    data: Option<Cow<'a, str>>,
    seq_number: Option<Cow<'a, str>>,
    time: Option<Cow<'a, str>>,
    ack: Option<Cow<'a, str>>,
    long_polling: Option<Cow<'a, str>>,
    rssi: Option<Cow<'a, str>>,
    snr: Option<Cow<'a, str>>,
    station: Option<Cow<'a, str>>,
    device_type_id: Option<Cow<'a, str>>,
    info_code: Option<Cow<'a, str>>,
    downlink_ack: Option<Cow<'a, str>>,
    info_message: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    /// The slot of a field by its name in the callback, if the bridge reads it.
    fn slot(&mut self, key: &str) -> Option<&mut Option<Cow<'a, str>>> {
        Some(match key {
            "device" => &mut self.device,
            "data" => &mut self.data,
            "seqNumber" => &mut self.seq_number,
            "time" => &mut self.time,
            "ack" => &mut self.ack,
            "longPolling" => &mut self.long_polling,
            "rssi" => &mut self.rssi,
            "snr" => &mut self.snr,
            "station" => &mut self.station,
            "deviceTypeId" => &mut self.device_type_id,
            "infoCode" => &mut self.info_code,
            "downlinkAck" => &mut self.downlink_ack,
            "infoMessage" => &mut self.info_message,
            _ => return None,
        })
    }

    /// From an `application/x-www-form-urlencoded` body.
    fn from_form(body: &'a [u8]) -> Self {
        let mut f = Fields::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            if let Some(slot) = f.slot(&k) {
                *slot = Some(v);
            }
        }
        f
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match fields.slot(&key) {
                        // a repeated key: the last one counts, as in a JSON map
                        Some(slot) => *slot = map.next_value::<Text<'de>>()?.0,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// A value as text: a string as written, a number or boolean as JSON writes it; null,
/// an array or an object is no value.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text<'de>, E> {
                // as serde_json writes the number back
                Ok(Text(
                    serde_json::Number::from_f64(v).map(|n| Cow::Owned(n.to_string())),
                ))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// Authenticates and reads a callback body (JSON or form) into its fields.
fn read_callback<'b>(
    s: &AppState,
    headers: &HeaderMap,
    body: &'b Result<Bytes, BytesRejection>,
) -> Result<Fields<'b>, Refusal> {
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
    parse_fields(body, form)
}

/// Reads a callback body, form-encoded or JSON, into its fields.
fn parse_fields(body: &[u8], form: bool) -> Result<Fields<'_>, Refusal> {
    if form {
        return Ok(Fields::from_form(body));
    }
    serde_json::from_slice::<Fields>(body).map_err(|e| {
        // well-formed JSON of another shape, or not JSON at all
        if e.is_data() && serde_json::from_slice::<IgnoredAny>(body).is_ok() {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "expected a JSON object",
            )
        } else {
            let e = serde_json::from_slice::<IgnoredAny>(body)
                .err()
                .unwrap_or(e);
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("not JSON: {e}"),
            )
        }
    })
}

/// A field's text, trimmed; `None` when absent.
fn text<'f>(field: &'f Option<Cow<'_, str>>) -> Option<&'f str> {
    field.as_deref().map(str::trim)
}

fn required<'f>(field: &'f Option<Cow<'_, str>>, key: &str) -> Result<&'f str, Refusal> {
    text(field).filter(|s| !s.is_empty()).ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "missing_field",
            format!("{key}: missing"),
        )
    })
}

fn number<T: std::str::FromStr>(
    field: &Option<Cow<'_, str>>,
    key: &str,
) -> Result<Option<T>, Refusal> {
    match text(field) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_field",
                format!("{key}: \"{s}\" is not a number"),
            )
        }),
    }
}

fn boolean(field: &Option<Cow<'_, str>>, key: &str) -> Result<bool, Refusal> {
    match text(field) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("{key}: \"{other}\" is not true or false"),
        )),
    }
}

/// The `meta` of a Sigfox uplink, as published with its telemetry.
#[derive(serde::Serialize)]
struct SigfoxMeta<'a> {
    seq_number: Option<u16>,
    time: Option<String>,
    station: Option<&'a str>,
    rssi: Option<f64>,
    snr: Option<f64>,
    device_type_id: Option<&'a str>,
    ack: bool,
    long_polling: bool,
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
    let m = read_callback(s, headers, &body)?;
    let (mut up, device_as_written, ack) = uplink_of(&m, received)?;
    let device = up.device.clone();
    if let Some(seq) = number::<u16>(&m.seq_number, "seqNumber")? {
        let has_time = text(&m.time).is_some_and(|t| !t.is_empty());
        up.dedup_key = s
            .sigfox
            .dedup_key(&device, seq, has_time, up.dedup_key.take(), received);
    }
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
                device_as_written.to_owned(),
                json!({"downlinkData": hex::encode(&plan.payload)}),
            );
            (StatusCode::OK, axum::Json(Value::Object(reply))).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The pipeline uplink of a DATA callback's fields, with the device id as the callback
/// wrote it (the BIDIR reply's key) and whether it opens a receive window (`ack`); a
/// refusal names the field at fault.
fn uplink_of<'m>(m: &'m Fields<'_>, received: Instant) -> Result<(Uplink, &'m str, bool), Refusal> {
    let device_as_written = required(&m.device, "device")?;
    let device = DeviceId::new(Network::Sigfox, device_as_written)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_field", format!("device: {e}")))?;
    let data_hex = text(&m.data).unwrap_or_default();
    let data = hex::decode(data_hex).map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("data: \"{}\" is not hex", crate::device::excerpt(data_hex)),
        )
    })?;
    if data.len() > gateway_config::sigfox::MAX_UPLINK_BYTES {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("data: {} bytes; a Sigfox uplink has at most 12", data.len()),
        ));
    }
    let seq: Option<u16> = number(&m.seq_number, "seqNumber")?;
    if seq.is_some_and(|q| q >= gateway_config::sigfox::SEQ_NUMBER_MODULUS) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            "seqNumber: out of range 0..=4095",
        ));
    }
    let time: Option<i64> = number(&m.time, "time")?;
    // seconds since the epoch, as Sigfox writes {time}; one that RFC 3339 cannot write
    // (before 1970 or after 9999) is refused, not multiplied past i64
    if let Some(t) = time.filter(|t| !(0..=MAX_TIME_S).contains(t)) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_field",
            format!("time: {t} is out of range 0..={MAX_TIME_S} (seconds since 1970)"),
        ));
    }
    let ack = boolean(&m.ack, "ack")?;
    let long_polling = boolean(&m.long_polling, "longPolling")?;
    let rssi: Option<f64> = number(&m.rssi, "rssi")?;
    let snr: Option<f64> = number(&m.snr, "snr")?;
    let device_type = text(&m.device_type_id).filter(|t| !t.is_empty());

    let meta = crate::pipeline::raw_json(&SigfoxMeta {
        seq_number: seq,
        time: time.map(|t| crate::clock::rfc3339(t * 1000)),
        station: text(&m.station),
        rssi,
        snr,
        device_type_id: device_type,
        ack,
        long_polling,
    });
    let device_type = device_type.map(str::to_owned);
    let mut facts = Map::new();
    facts.insert("device_type_id".into(), json!(device_type));
    // Retries (+1, +2, +4 min) and copies from several base stations repeat the message's
    // own time; with it, a sequence number that wrapped (12 bits) is a new message.
    let dedup_key = seq.map(|q| format!("{q}|{}", time.map_or(String::new(), |t| t.to_string())));
    let up = Uplink {
        device,
        payload: data,
        fport: None,
        received,
        dedup_key,
        codec_keys: CodecKeys {
            sigfox_device_type: device_type,
            ..Default::default()
        },
        meta,
        network_facts: facts,
    };
    Ok((up, device_as_written, ack))
}

/// Reads a DATA callback body as the uplink route does, after authentication: the
/// pipeline uplink, or the HTTP status and message of the refusal. The one entry point
/// for the fuzz target `sigfox_callback` (`bridge/fuzz`).
pub fn read_uplink_callback(body: &[u8], form: bool) -> Result<Uplink, (u16, String)> {
    let refused = |r: Refusal| (r.status().as_u16(), format!("{:?}", r.status()));
    let fields = parse_fields(body, form).map_err(refused)?;
    uplink_of(&fields, Instant::now())
        .map(|(up, _, _)| up)
        .map_err(refused)
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
    let m = read_callback(s, headers, &body)?;
    let device_text = required(&m.device, "device")?;
    let device = DeviceId::new(Network::Sigfox, device_text)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_field", format!("device: {e}")))?;
    let code: u32 = number(&m.info_code, "infoCode")?.ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "infoCode: missing",
        )
    })?;
    let acked = boolean(&m.downlink_ack, "downlinkAck")?;
    let message = text(&m.info_message).unwrap_or_default();
    let Some(downlink) = last_downlink(&s.commands, &device).await else {
        tracing::info!(device = %device, code, "ACKNOWLEDGE for a device with no downlink in flight");
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let (name, retry) = info_code(code);
    let reason = format!("sigfox: {name}: {message}");
    if code == 0 && acked {
        s.commands.network_ack(&device, &downlink, true).await;
    } else if retry {
        s.commands
            .network_not_delivered(&device, &downlink, &reason)
            .await;
    } else {
        s.commands
            .network_dropped(&device, &downlink, CommandState::Failed, &reason)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 15] = [
        "device",
        "data",
        "seqNumber",
        "time",
        "ack",
        "longPolling",
        "rssi",
        "snr",
        "station",
        "deviceTypeId",
        "infoCode",
        "downlinkAck",
        "infoMessage",
        "deviceType",
        "x",
    ];

    /// What a field read as text used to be: the body parsed into a `serde_json` map,
    /// each value as text the way the map writes it.
    fn reference(body: &[u8]) -> Option<Vec<(String, Option<String>)>> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let text = |k: &str| match m.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        Some(
            KEYS[..13]
                .iter()
                .map(|k| (k.to_string(), text(k)))
                .collect(),
        )
    }

    fn read(body: &[u8]) -> Option<Vec<(String, Option<String>)>> {
        let mut f = serde_json::from_slice::<Fields>(body).ok()?;
        Some(
            KEYS[..13]
                .iter()
                .map(|k| {
                    (
                        k.to_string(),
                        f.slot(k).unwrap().as_deref().map(str::to_owned),
                    )
                })
                .collect(),
        )
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~\u{e9}\"\\\\]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..3)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn fields_read_as_a_json_map_reads_them(
            entries in prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..10)
        ) {
            // written by hand so that keys can repeat, as a template may repeat them
            let body = format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            prop_assert_eq!(read(body.as_bytes()), reference(body.as_bytes()), "{}", body);
        }

        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = serde_json::from_slice::<Fields>(&body);
            let _ = Fields::from_form(&body);
        }
    }

    #[test]
    fn strings_with_escapes_numbers_and_booleans_read_as_text() {
        let body = br#"{"device":"1A\u0032B","seqNumber":17,"rssi":-121.5,"ack":true,"snr":null,"station":{"id":1},"time":"1718031845"}"#;
        let f: Fields = serde_json::from_slice(body).unwrap();
        assert_eq!(f.device.as_deref(), Some("1A2B"));
        assert_eq!(f.seq_number.as_deref(), Some("17"));
        assert_eq!(f.rssi.as_deref(), Some("-121.5"));
        assert_eq!(f.ack.as_deref(), Some("true"));
        assert_eq!(f.snr, None);
        assert_eq!(f.station, None, "an object is no value");
        assert_eq!(f.time.as_deref(), Some("1718031845"));
        let form = Fields::from_form(b"device=1A2B&ack=true&data=0a%20&other=1");
        assert_eq!(form.device.as_deref(), Some("1A2B"));
        assert_eq!(form.data.as_deref(), Some("0a "));
        assert_eq!(form.ack.as_deref(), Some("true"));
    }
}
