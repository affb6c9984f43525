//! Sigfox callback bodies. Sigfox writes them from the user's template by substituting
//! text, so a value may arrive as a JSON number, a boolean or a string, and the body may
//! be JSON or `application/x-www-form-urlencoded`: every field is read from any of them.
use crate::device::{DeviceId, Network, excerpt};
use crate::pipeline::{CodecKeys, Uplink};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, json};
use std::borrow::Cow;
use std::fmt;
use std::time::Instant;

/// Why a callback body is refused; the message names the field at fault. Every one is
/// the caller's fault (a 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallbackError {
    /// Well-formed JSON, but not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// A field the callback must carry is absent or empty.
    #[error("{0}: missing")]
    Missing(&'static str),
    /// A field does not read as what it must be.
    #[error("{0}")]
    BadField(String),
}

impl CallbackError {
    /// The error code of the contract's JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            CallbackError::NotAnObject => "bad_body",
            CallbackError::NotJson(_) => "bad_json",
            CallbackError::Missing(_) => "missing_field",
            CallbackError::BadField(_) => "bad_field",
        }
    }
}

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const MAX_TIME_S: i64 = 253_402_300_799;

/// The fields the bridge reads from a callback, each as text whatever JSON type the
/// template gave it (borrowed from the body where it can be); every other field is
/// skipped unread.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Fields<'a> {
    pub(super) device: Option<Cow<'a, str>>,
    pub(super) data: Option<Cow<'a, str>>,
    pub(super) seq_number: Option<Cow<'a, str>>,
    pub(super) time: Option<Cow<'a, str>>,
    pub(super) ack: Option<Cow<'a, str>>,
    pub(super) long_polling: Option<Cow<'a, str>>,
    pub(super) rssi: Option<Cow<'a, str>>,
    pub(super) snr: Option<Cow<'a, str>>,
    pub(super) station: Option<Cow<'a, str>>,
    pub(super) device_type_id: Option<Cow<'a, str>>,
    pub(super) info_code: Option<Cow<'a, str>>,
    pub(super) downlink_ack: Option<Cow<'a, str>>,
    pub(super) info_message: Option<Cow<'a, str>>,
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

/// Reads a callback body, form-encoded or JSON, into its fields.
pub(super) fn parse_fields(body: &[u8], form: bool) -> Result<Fields<'_>, CallbackError> {
    if form {
        return Ok(Fields::from_form(body));
    }
    serde_json::from_slice::<Fields>(body).map_err(|e| {
        // well-formed JSON of another shape, or not JSON at all
        if e.is_data() && serde_json::from_slice::<IgnoredAny>(body).is_ok() {
            CallbackError::NotAnObject
        } else {
            let e = serde_json::from_slice::<IgnoredAny>(body)
                .err()
                .unwrap_or(e);
            CallbackError::NotJson(e.to_string())
        }
    })
}

/// A field's text, trimmed; `None` when absent.
pub(super) fn text<'f>(field: &'f Option<Cow<'_, str>>) -> Option<&'f str> {
    field.as_deref().map(str::trim)
}

pub(super) fn required<'f>(
    field: &'f Option<Cow<'_, str>>,
    key: &'static str,
) -> Result<&'f str, CallbackError> {
    text(field)
        .filter(|s| !s.is_empty())
        .ok_or(CallbackError::Missing(key))
}

pub(super) fn number<T: std::str::FromStr>(
    field: &Option<Cow<'_, str>>,
    key: &str,
) -> Result<Option<T>, CallbackError> {
    match text(field) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            CallbackError::BadField(format!("{key}: \"{}\" is not a number", excerpt(s)))
        }),
    }
}

pub(super) fn boolean(field: &Option<Cow<'_, str>>, key: &str) -> Result<bool, CallbackError> {
    match text(field) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(CallbackError::BadField(format!(
            "{key}: \"{}\" is not true or false",
            excerpt(other)
        ))),
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

/// A DATA callback as read.
pub(super) struct DataCallback<'m> {
    /// The uplink for the pipeline.
    pub(super) up: Uplink,
    /// The device id exactly as the callback wrote it (the BIDIR reply's key).
    pub(super) device_as_written: &'m str,
    /// Whether it opens a receive window (BIDIR with `ack` true).
    pub(super) ack: bool,
    /// Its seqNumber.
    pub(super) seq: Option<u16>,
    /// Whether it carried a `time`.
    pub(super) has_time: bool,
}

/// A DATA callback's fields read once: the pipeline uplink and what the adapter needs
/// besides (see [`DataCallback`]); a refusal names the field at fault.
pub(super) fn uplink_of<'m>(
    m: &'m Fields<'_>,
    received: Instant,
) -> Result<DataCallback<'m>, CallbackError> {
    let device_as_written = required(&m.device, "device")?;
    let device = DeviceId::new(Network::Sigfox, device_as_written)
        .map_err(|e| CallbackError::BadField(format!("device: {e}")))?;
    let data_hex = text(&m.data).unwrap_or_default();
    let data = hex::decode(data_hex).map_err(|_| {
        CallbackError::BadField(format!("data: \"{}\" is not hex", excerpt(data_hex)))
    })?;
    if data.len() > gateway_config::sigfox::MAX_UPLINK_BYTES {
        return Err(CallbackError::BadField(format!(
            "data: {} bytes; a Sigfox uplink has at most 12",
            data.len()
        )));
    }
    let seq: Option<u16> = number(&m.seq_number, "seqNumber")?;
    if seq.is_some_and(|q| q >= gateway_config::sigfox::SEQ_NUMBER_MODULUS) {
        return Err(CallbackError::BadField(
            "seqNumber: out of range 0..=4095".into(),
        ));
    }
    let time: Option<i64> = number(&m.time, "time")?;
    // seconds since the epoch, as Sigfox writes {time}; one that RFC 3339 cannot write
    // (before 1970 or after 9999) is refused, not multiplied past i64
    if let Some(t) = time.filter(|t| !(0..=MAX_TIME_S).contains(t)) {
        return Err(CallbackError::BadField(format!(
            "time: {t} is out of range 0..={MAX_TIME_S} (seconds since 1970)"
        )));
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
    Ok(DataCallback {
        up,
        device_as_written,
        ack,
        seq,
        has_time: time.is_some(),
    })
}

/// Reads a DATA callback body as the uplink route does, after authentication: the
/// pipeline uplink, or why it is refused. The one entry point for the fuzz target
/// `sigfox_callback` (`bridge/fuzz`).
pub fn read_uplink_callback(body: &[u8], form: bool) -> Result<Uplink, CallbackError> {
    let fields = parse_fields(body, form)?;
    uplink_of(&fields, Instant::now()).map(|c| c.up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

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
