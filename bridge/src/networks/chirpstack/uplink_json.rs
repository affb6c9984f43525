//! A faster reader for ChirpStack's JSON `up` event, into `chirpstack_api`'s own
//! `UplinkEvent`.
//!
//! `chirpstack_api`'s generated serde code reads every number through pbjson's
//! `NumberDeserialize`, an untagged enum: serde buffers the value, tries it as a string,
//! builds and drops a formatted error, then reads it as a number. With a dozen numbers an
//! event that is most of the cost of reading it. This reader accepts the same shapes
//! (numbers or numeric strings, enum names or numbers, base64 bytes, RFC 3339 times) for
//! the fields ChirpStack v4 writes in an ordinary `up` event, and **refuses anything
//! else** (a field it does not know, a codec `object`, a relay, a location, a malformed
//! value): the caller then reads the event with `chirpstack_api`'s own deserializer, so
//! the result, and every error message, is exactly that deserializer's. A test checks
//! that both readers give equal events for every fixture and generated event.
use base64::Engine;
use chirpstack_api::common::DeviceClass;
use chirpstack_api::gw::{self, CodeRate, CrcStatus};
use chirpstack_api::integration as ev;
use chirpstack_api::pbjson_types::Timestamp;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::HashMap;
use std::fmt;

/// The event, or `None` when it holds anything this reader leaves to `chirpstack_api`.
pub fn read_up(payload: &[u8]) -> Option<ev::UplinkEvent> {
    if !objects_where_chirpstack_api_wants_them(payload) {
        return None;
    }
    let up: Up = serde_json::from_slice(payload).ok()?;
    Some(ev::UplinkEvent {
        deduplication_id: up.deduplication_id,
        time: up.time.map(|t| t.0),
        device_info: up.device_info.map(|d| ev::DeviceInfo {
            tenant_id: d.tenant_id,
            tenant_name: d.tenant_name,
            application_id: d.application_id,
            application_name: d.application_name,
            device_profile_id: d.device_profile_id,
            device_profile_name: d.device_profile_name,
            device_name: d.device_name,
            dev_eui: d.dev_eui,
            device_class_enabled: d.device_class_enabled.0,
            tags: d.tags,
        }),
        dev_addr: up.dev_addr,
        adr: up.adr,
        dr: up.dr.0,
        f_cnt: up.f_cnt.0,
        f_port: up.f_port.0,
        confirmed: up.confirmed,
        data: up.data.0,
        object: None,
        rx_info: up
            .rx_info
            .into_iter()
            .map(|r| gw::UplinkRxInfo {
                gateway_id: r.gateway_id,
                uplink_id: r.uplink_id.0,
                gw_time: r.gw_time.map(|t| t.0),
                ns_time: r.ns_time.map(|t| t.0),
                rssi: r.rssi.0,
                snr: r.snr.0,
                channel: r.channel.0,
                rf_chain: r.rf_chain.0,
                board: r.board.0,
                antenna: r.antenna.0,
                context: r.context.0,
                metadata: r.metadata,
                crc_status: r.crc_status.0,
                ..Default::default()
            })
            .collect(),
        tx_info: up.tx_info.map(|t| gw::UplinkTxInfo {
            frequency: t.frequency.0,
            modulation: t.modulation.map(|m| gw::Modulation {
                parameters: m.lora.map(|l| {
                    gw::modulation::Parameters::Lora(gw::LoraModulationInfo {
                        bandwidth: l.bandwidth.0,
                        spreading_factor: l.spreading_factor.0,
                        code_rate: l.code_rate.0,
                        polarization_inversion: l.polarization_inversion,
                        preamble: l.preamble.0,
                        no_crc: l.no_crc,
                        ..Default::default()
                    })
                }),
            }),
        }),
        region_config_id: up.region_config_id,
        ..Default::default()
    })
}

/// Whether every array in `payload` is the value of `rxInfo`, and it is an object: a
/// derived `Deserialize` also reads a struct from an array of its fields (`[]` is an
/// event with every field at its default), which `chirpstack_api`'s reader refuses. One
/// pass over the bytes, skipping strings.
fn objects_where_chirpstack_api_wants_them(payload: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    // the last key seen, as its bytes, and whether a `:` followed it
    let mut key_start = 0;
    let mut key = &payload[..0];
    let mut after_colon = false;
    let mut first = true;
    for (i, &b) in payload.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                key = &payload[key_start..i];
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if first {
            if b != b'{' {
                return false;
            }
            first = false;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                key_start = i + 1;
                after_colon = false;
            }
            b':' => after_colon = true,
            b'[' if !(after_colon && key == b"rxInfo") => return false,
            _ => after_colon = false,
        }
    }
    !first
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Up {
    #[serde(default)]
    deduplication_id: String,
    #[serde(default)]
    time: Option<Time>,
    #[serde(default)]
    device_info: Option<Info>,
    #[serde(default)]
    dev_addr: String,
    #[serde(default)]
    adr: bool,
    #[serde(default)]
    dr: Num<u32>,
    #[serde(default)]
    f_cnt: Num<u32>,
    #[serde(default)]
    f_port: Num<u32>,
    #[serde(default)]
    confirmed: bool,
    #[serde(default)]
    data: Bytes,
    #[serde(default)]
    rx_info: Vec<RxInfo>,
    #[serde(default)]
    tx_info: Option<TxInfo>,
    #[serde(default)]
    region_config_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Info {
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    tenant_name: String,
    #[serde(default)]
    application_id: String,
    #[serde(default)]
    application_name: String,
    #[serde(default)]
    device_profile_id: String,
    #[serde(default)]
    device_profile_name: String,
    #[serde(default)]
    device_name: String,
    #[serde(default)]
    dev_eui: String,
    #[serde(default)]
    device_class_enabled: Enum<DeviceClassName>,
    #[serde(default)]
    tags: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RxInfo {
    #[serde(default)]
    gateway_id: String,
    #[serde(default)]
    uplink_id: Num<u32>,
    #[serde(default)]
    gw_time: Option<Time>,
    #[serde(default)]
    ns_time: Option<Time>,
    #[serde(default)]
    rssi: Num<i32>,
    #[serde(default)]
    snr: Num<f32>,
    #[serde(default)]
    channel: Num<u32>,
    #[serde(default)]
    rf_chain: Num<u32>,
    #[serde(default)]
    board: Num<u32>,
    #[serde(default)]
    antenna: Num<u32>,
    #[serde(default)]
    context: Bytes,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    crc_status: Enum<CrcStatusName>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TxInfo {
    #[serde(default)]
    frequency: Num<u32>,
    #[serde(default)]
    modulation: Option<Modulation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Modulation {
    // only LoRa; FSK and LR-FHSS events take the general reader
    lora: Option<Lora>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Lora {
    #[serde(default)]
    bandwidth: Num<u32>,
    #[serde(default)]
    spreading_factor: Num<u32>,
    #[serde(default)]
    code_rate: Enum<CodeRateName>,
    #[serde(default)]
    polarization_inversion: bool,
    #[serde(default)]
    preamble: Num<u32>,
    #[serde(default)]
    no_crc: bool,
}

/// A proto3 JSON number: a JSON number or a string holding one.
#[derive(Default)]
struct Num<T>(T);

trait FromJsonNumber: Sized + Default + std::str::FromStr {
    fn from_u64(v: u64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
}

macro_rules! integer {
    ($t:ty) => {
        impl FromJsonNumber for $t {
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_f64(_: f64) -> Option<Self> {
                // pbjson refuses a float for an integer, even `12.0` (found by fuzzing:
                // a bandwidth of 12.000 was taken here and refused there)
                None
            }
        }
    };
}
integer!(u32);
integer!(i32);

impl FromJsonNumber for f32 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v as f32)
    }
}

impl<'de, T: FromJsonNumber> Deserialize<'de> for Num<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: FromJsonNumber> Visitor<'_> for V<T> {
            type Value = Num<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::from_u64(v)
                    .map(Num)
                    .ok_or_else(|| E::custom("out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_i64(v)
                    .map(Num)
                    .ok_or_else(|| E::custom("out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::from_f64(v)
                    .map(Num)
                    .ok_or_else(|| E::custom("not a number of this type"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map(Num).map_err(|_| E::custom("not a number"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A proto3 JSON enum: its name or its number; `null` is 0.
struct Enum<N>(i32, std::marker::PhantomData<N>);

impl<N> Default for Enum<N> {
    fn default() -> Self {
        Enum(0, std::marker::PhantomData)
    }
}

trait EnumNames {
    fn value(name: &str) -> Option<i32>;
    /// Whether a number is one of the enum's values (pbjson refuses any other: found by
    /// fuzzing, `"deviceClassEnabled": 7`).
    fn known(n: i32) -> bool;
}

struct DeviceClassName;
impl EnumNames for DeviceClassName {
    fn value(name: &str) -> Option<i32> {
        DeviceClass::from_str_name(name).map(|v| v as i32)
    }
    fn known(n: i32) -> bool {
        DeviceClass::try_from(n).is_ok()
    }
}

struct CrcStatusName;
impl EnumNames for CrcStatusName {
    fn value(name: &str) -> Option<i32> {
        CrcStatus::from_str_name(name).map(|v| v as i32)
    }
    fn known(n: i32) -> bool {
        CrcStatus::try_from(n).is_ok()
    }
}

struct CodeRateName;
impl EnumNames for CodeRateName {
    fn value(name: &str) -> Option<i32> {
        CodeRate::from_str_name(name).map(|v| v as i32)
    }
    fn known(n: i32) -> bool {
        CodeRate::try_from(n).is_ok()
    }
}

impl<'de, N: EnumNames> Deserialize<'de> for Enum<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<N>(std::marker::PhantomData<N>);
        impl<N: EnumNames> Visitor<'_> for V<N> {
            type Value = Enum<N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an enum name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                N::value(v)
                    .map(|n| Enum(n, std::marker::PhantomData))
                    .ok_or_else(|| E::custom("unknown enum value"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .ok()
                    .filter(|n| N::known(*n))
                    .map(|n| Enum(n, std::marker::PhantomData))
                    .ok_or_else(|| E::custom("not a value of the enum"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .ok()
                    .filter(|n| N::known(*n))
                    .map(|n| Enum(n, std::marker::PhantomData))
                    .ok_or_else(|| E::custom("not a value of the enum"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Enum(0, std::marker::PhantomData))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Bytes as standard base64.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(de::Error::custom)
    }
}

/// An RFC 3339 time.
struct Time(Timestamp);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        if !as_chirpstack_writes_it(s.as_bytes()) {
            return Err(de::Error::custom(
                "a time this reader leaves to chirpstack_api",
            ));
        }
        let t = time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map_err(de::Error::custom)?;
        Ok(Time(Timestamp {
            seconds: t.unix_timestamp(),
            nanos: t.nanosecond() as i32,
        }))
    }
}

/// Whether a time has exactly the shape ChirpStack writes: `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction, then `Z` or `±HH:MM`, with seconds below 60. The `time` crate's
/// RFC 3339 parser is more lenient than `chirpstack_api`'s (it took any byte between
/// the date and the time: found by fuzzing), and this reader may only take what that one
/// takes.
fn as_chirpstack_writes_it(t: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| t.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| t.get(i) == Some(&c);
    if !(digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T'))
        || !(digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':') && digits(17..19))
        || t[17] >= b'6'
    {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let start = i + 1;
        i = start;
        while t.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return false;
        }
    }
    match &t[i.min(t.len())..] {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(json: &str) -> (Option<ev::UplinkEvent>, ev::UplinkEvent) {
        (
            read_up(json.as_bytes()),
            serde_json::from_str::<ev::UplinkEvent>(json).unwrap(),
        )
    }

    #[test]
    fn equal_to_chirpstack_api_for_the_usual_event() {
        let json = r#"{"deduplicationId":"3ac7e3c4-4401-4b8d-9386-a5c902f9202d","time":"2025-06-13T12:51:07.118204+00:00",
            "deviceInfo":{"tenantId":"t","tenantName":"ChirpStack","applicationId":"a","applicationName":"fleet",
              "deviceProfileId":"p","deviceProfileName":"scooter","deviceName":"s-42","devEui":"70b3d57ed0051a2b",
              "deviceClassEnabled":"CLASS_C","tags":{"fleet":"lisbon"}},
            "devAddr":"01a44c4c","adr":true,"dr":5,"fCnt":"7","fPort":10,"confirmed":false,"data":"BYr4Sgaw0ehj0BQAhAAHAgA=",
            "rxInfo":[{"gatewayId":"2cf7f11081400088","uplinkId":3905,"nsTime":"2025-06-13T12:51:07.118Z","rssi":-102,"snr":-12.25,
              "channel":1,"rfChain":1,"context":"AAAbkw==","metadata":{"region_config_id":"eu868"},"crcStatus":"CRC_OK"},
              {"gatewayId":"2cf7f11081400089","rssi":-99,"snr":3}],
            "txInfo":{"frequency":868300000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7,"codeRate":"CR_4_5"}}},
            "regionConfigId":"eu868"}"#;
        let (fast, full) = both(json);
        assert_eq!(fast.expect("the fast reader takes it"), full);
    }

    #[test]
    fn leaves_what_it_does_not_know_to_chirpstack_api() {
        for json in [
            // a codec's object
            r#"{"deduplicationId":"x","object":{"a":1}}"#,
            // a field it has never heard of
            r#"{"deduplicationId":"x","fromTheFuture":1}"#,
            // a location
            r#"{"rxInfo":[{"location":{"latitude":1.0}}]}"#,
            // FSK
            r#"{"txInfo":{"modulation":{"fsk":{"datarate":50000}}}}"#,
            // not an event at all
            r#"[1,2]"#,
            r#"{"dr":"five"}"#,
        ] {
            assert!(read_up(json.as_bytes()).is_none(), "{json}");
        }
    }

    #[test]
    fn equal_to_chirpstack_api_for_every_up_fixture() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chirpstack/up");
        let mut n = 0;
        for f in std::fs::read_dir(dir).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let json = std::fs::read_to_string(&path).unwrap();
            let full: ev::UplinkEvent = serde_json::from_str(&json).unwrap();
            // taken or left, never different
            if let Some(fast) = read_up(json.as_bytes()) {
                assert_eq!(fast, full, "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 1, "no fixture was read by the fast path");
    }

    /// The invariant on odd inputs: taken only if chirpstack_api takes it too, and then
    /// equal.
    #[test]
    fn never_takes_what_chirpstack_api_refuses_nor_differs() {
        let mut taken = 0;
        for json in [
            r#"{"deduplicationId":null}"#,
            r#"{"dr":null,"fCnt":12.0}"#,
            r#"{"fCnt":12.5}"#,
            r#"{"fCnt":-1}"#,
            r#"{"fCnt":"12"}"#,
            r#"{"fPort":4294967296}"#,
            r#"{"data":null}"#,
            r#"{"data":"not base64!"}"#,
            r#"{"data":"AAE"}"#,
            r#"{"time":"2025-06-13T12:51:07Z"}"#,
            r#"{"time":"2025-06-13 12:51:07"}"#,
            r#"{"time":null}"#,
            r#"{"deviceInfo":{"deviceClassEnabled":2}}"#,
            r#"{"deviceInfo":{"deviceClassEnabled":"CLASS_Z"}}"#,
            r#"{"deviceInfo":null}"#,
            r#"{"rxInfo":[{"snr":"7.25","rssi":"-90"}]}"#,
            r#"{"rxInfo":null}"#,
            r#"{"rxInfo":[{"crcStatus":1,"metadata":{"a":"b"}}]}"#,
            r#"{"txInfo":{"modulation":{"lora":{"codeRate":"CR_4_6","preamble":8,"noCrc":true}}}}"#,
            r#"{"adr":null,"confirmed":true}"#,
            r#"{}"#,
            // a struct written as an array of its fields (found by fuzzing `[]`)
            "[\n]",
            r#"{"deviceInfo":[]}"#,
            r#"{"rxInfo":[[]]}"#,
            r#"{"txInfo":[868100000]}"#,
            r#"{"deviceName":"a [1]","rxInfo":[{"gatewayId":"[x]"}]}"#,
            // an enum number that is no value of the enum (fuzzing)
            r#"{"deviceInfo":{"deviceClassEnabled":7}}"#,
            r#"{"rxInfo":[{"crcStatus":-1}]}"#,
            // an integer written as a float (fuzzing)
            r#"{"fCnt":12.0}"#,
            r#"{"txInfo":{"modulation":{"lora":{"bandwidth":12.000}}}}"#,
            r#"{"rxInfo":[{"rssi":-90.0}]}"#,
            // a separator the time crate takes and chirpstack_api does not (fuzzing)
            r#"{"time":"2025-06-13[12:51:07.118204+00:00"}"#,
            r#"{"time":"2025-06-13t12:51:07Z"}"#,
            r#"{"time":"2025-06-13T12:51:60Z"}"#,
            r#"{"time":"2025-06-13T12:51:07.1234567891Z"}"#,
            r#"{"time":"2025-06-13T12:51:07+0000"}"#,
        ] {
            let full = serde_json::from_str::<ev::UplinkEvent>(json);
            match (read_up(json.as_bytes()), full) {
                (Some(fast), Ok(full)) => {
                    assert_eq!(fast, full, "{json}");
                    taken += 1;
                }
                (Some(_), Err(e)) => panic!("{json}: taken, but chirpstack_api says {e}"),
                (None, Ok(_)) => eprintln!("left to chirpstack_api: {json}"),
                (None, Err(_)) => {}
            }
        }
        assert!(taken >= 9, "only {taken} taken");
    }
}
