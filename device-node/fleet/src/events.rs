//! ChirpStack v4's MQTT integration events, as ChirpStack publishes them (JSON
//! marshaler): the one place the simulator, the demo and the bridge's tests build them.
//! `../shared/fixtures/` and `bridge/tests/fixtures/` hold real ones to compare with.
use base64::Engine;
use serde_json::{Value, json};

/// The topic of an event: `application/{app}/device/{eui}/event/{event}`.
pub fn topic(application_id: &str, dev_eui: &str, event: &str) -> String {
    format!("application/{application_id}/device/{dev_eui}/event/{event}")
}

/// Who a device is, as every event's `deviceInfo` says.
#[derive(Debug, Clone)]
pub struct Device<'a> {
    /// The ChirpStack application id.
    pub application_id: &'a str,
    /// The device's name in ChirpStack.
    pub name: &'a str,
    /// The DevEUI, 16 hex digits.
    pub dev_eui: &'a str,
    /// `CLASS_A`, `CLASS_B` or `CLASS_C`.
    pub class: &'a str,
}

impl Device<'_> {
    /// The `deviceInfo` object.
    pub fn info(&self) -> Value {
        json!({"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "fleet",
            "applicationId": self.application_id, "applicationName": "vehicles",
            "deviceProfileId": "0d2e2b94-1d2f-4b21-9d3c-6c8f3a6f1b11",
            "deviceProfileName": "longproto vehicle", "deviceName": self.name,
            "devEui": self.dev_eui, "deviceClassEnabled": self.class, "tags": {}})
    }
}

/// An `up` event's radio side: what the gateway heard.
#[derive(Debug, Clone)]
pub struct Radio<'a> {
    /// The gateway id, 16 hex digits.
    pub gateway_id: &'a str,
    /// RSSI, dBm.
    pub rssi: i32,
    /// SNR, dB.
    pub snr: f32,
    /// Hz.
    pub frequency: u32,
    /// LoRa spreading factor (7..=12).
    pub spreading_factor: u32,
}

impl Default for Radio<'_> {
    fn default() -> Self {
        Radio {
            gateway_id: "0016c001f153a14c",
            rssi: -92,
            snr: 7.5,
            frequency: 868_100_000,
            spreading_factor: 7,
        }
    }
}

/// An `up` event: a deduplicated uplink.
#[derive(Debug, Clone)]
pub struct Up<'a> {
    /// Its deduplication id (ChirpStack: a UUID).
    pub deduplication_id: &'a str,
    /// RFC 3339.
    pub time: &'a str,
    /// The session's DevAddr, 8 hex digits.
    pub dev_addr: &'a str,
    /// The data rate (EU868: 12 − SF for DR0..=5).
    pub dr: u32,
    /// The frame counter.
    pub f_cnt: u32,
    /// The application port.
    pub f_port: u8,
    /// The decrypted application payload.
    pub data: &'a [u8],
    /// What the gateway heard.
    pub radio: Radio<'a>,
}

impl Up<'_> {
    /// The event's JSON, with the device's `deviceInfo` ([`Device::info`]).
    pub fn to_json(&self, device_info: Value) -> Value {
        let r = &self.radio;
        json!({
            "deduplicationId": self.deduplication_id, "time": self.time,
            "deviceInfo": device_info, "devAddr": self.dev_addr, "adr": true, "dr": self.dr,
            "fCnt": self.f_cnt, "fPort": self.f_port, "confirmed": false,
            "data": base64::engine::general_purpose::STANDARD.encode(self.data),
            "rxInfo": [{"gatewayId": r.gateway_id, "uplinkId": self.f_cnt, "rssi": r.rssi,
                "snr": r.snr, "channel": 0, "context": "AAAAAA==", "crcStatus": "CRC_OK"}],
            "txInfo": {"frequency": r.frequency, "modulation": {"lora": {"bandwidth": 125000,
                "spreadingFactor": r.spreading_factor, "codeRate": "CR_4_5"}}},
            "regionConfigId": "eu868"
        })
    }
}

/// A `join` event.
pub fn join(device_info: Value, deduplication_id: &str, time: &str, dev_addr: &str) -> Value {
    json!({"deduplicationId": deduplication_id, "time": time, "deviceInfo": device_info,
        "devAddr": dev_addr, "regionConfigId": "eu868"})
}

/// A `txack` event: the gateway sent the queue item.
pub fn txack(device_info: Value, queue_item_id: &str, time: &str) -> Value {
    json!({"downlinkId": 1, "time": time, "deviceInfo": device_info,
        "queueItemId": queue_item_id, "fCntDown": 1, "gatewayId": "0016c001f153a14c",
        "txInfo": {"frequency": 869525000, "power": 14}})
}

/// An `ack` event: the device acknowledged (or not) a confirmed queue item.
pub fn ack(
    device_info: Value,
    deduplication_id: &str,
    time: &str,
    queue_item_id: &str,
    acknowledged: bool,
) -> Value {
    json!({"deduplicationId": deduplication_id, "time": time, "deviceInfo": device_info,
        "queueItemId": queue_item_id, "acknowledged": acknowledged, "fCntDown": 1})
}

/// A `log` event about a queue item (e.g. `EXPIRED`, `DOWNLINK_PAYLOAD_SIZE`).
pub fn log(
    device_info: Value,
    time: &str,
    queue_item_id: &str,
    code: &str,
    description: &str,
) -> Value {
    json!({"time": time, "deviceInfo": device_info, "level": "ERROR", "code": code,
        "description": description, "context": {"queue_item_id": queue_item_id}})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event reads back with ChirpStack's own types, field for field.
    #[test]
    fn events_are_chirpstacks_json() {
        use chirpstack_api::integration as ev;
        let d = Device {
            application_id: "app",
            name: "dev-1",
            dev_eui: "70b3d57ed0000001",
            class: "CLASS_C",
        };
        let up = Up {
            deduplication_id: "d-1",
            time: "2024-06-10T15:04:05.123Z",
            dev_addr: "01a44c4c",
            dr: 5,
            f_cnt: 7,
            f_port: 10,
            data: &[1, 2, 3],
            radio: Radio::default(),
        };
        let e: ev::UplinkEvent = serde_json::from_value(up.to_json(d.info())).unwrap();
        assert_eq!((e.f_cnt, e.f_port, e.dr), (7, 10, 5));
        assert_eq!(e.data, vec![1, 2, 3]);
        assert_eq!(e.device_info.as_ref().unwrap().device_class_enabled, 2);
        assert_eq!(e.rx_info[0].rssi, -92);
        let a: ev::AckEvent =
            serde_json::from_value(ack(d.info(), "d-2", "2024-06-10T15:04:05Z", "q", true))
                .unwrap();
        assert!(a.acknowledged);
        let t: ev::TxAckEvent =
            serde_json::from_value(txack(d.info(), "q", "2024-06-10T15:04:05Z")).unwrap();
        assert_eq!(t.queue_item_id, "q");
        let l: ev::LogEvent =
            serde_json::from_value(log(d.info(), "2024-06-10T15:04:05Z", "q", "EXPIRED", "x"))
                .unwrap();
        assert_eq!(l.context["queue_item_id"], "q");
        let j: ev::JoinEvent =
            serde_json::from_value(join(d.info(), "d-3", "2024-06-10T15:04:05Z", "01a44c4c"))
                .unwrap();
        assert_eq!(j.dev_addr, "01a44c4c");
        assert_eq!(
            topic("app", d.dev_eui, "up"),
            "application/app/device/70b3d57ed0000001/event/up"
        );
    }
}
