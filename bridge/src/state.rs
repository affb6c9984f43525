//! The last known state of each device, published retained on `{root}/{network}/{id}/state`.
use crate::device::DeviceId;
use serde_json::{Map, Value};

/// What the bridge knows of one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    /// When the bridge last heard from it (RFC 3339).
    pub last_seen: Option<String>,
    /// The last record of each kind (`status`, `ack`, `event`, `boot`; CayenneLPP items
    /// by `type/channel`), merged over uplinks.
    pub records: Map<String, Value>,
    /// Facts from the network: ChirpStack's application and profile, DevAddr, battery
    /// and link margin, device class; Sigfox's device type.
    pub network: Map<String, Value>,
    /// Commands not yet in a final state.
    pub pending_commands: u64,
}

impl DeviceState {
    /// Merges decoded records: each replaces the last one of its kind.
    pub fn merge_records(&mut self, records: Vec<Value>) {
        for mut r in records {
            let Value::Object(m) = &mut r else { continue };
            let key = match m.shift_remove("kind") {
                Some(Value::String(k)) => k,
                _ => match (m.get("type"), m.get("channel")) {
                    (Some(Value::String(t)), Some(c)) => format!("{t}/{c}"),
                    _ => continue,
                },
            };
            self.records.insert(key, r);
        }
    }

    /// Sets network facts, keeping the ones not mentioned.
    pub fn merge_network(&mut self, facts: Map<String, Value>) {
        for (k, v) in facts {
            self.network.insert(k, v);
        }
    }

    /// The retained JSON, as GET /v1/devices/{network}/{id} answers too.
    pub fn to_json(&self, device: &DeviceId) -> Value {
        serde_json::to_value(self.view(device)).unwrap_or(Value::Null)
    }

    /// The same JSON as bytes, serialised from the state in place (no copy of its maps).
    pub fn to_bytes(&self, device: &DeviceId) -> Vec<u8> {
        serde_json::to_vec(&self.view(device)).unwrap_or_default()
    }

    fn view<'a>(&'a self, device: &'a DeviceId) -> StateOut<'a> {
        StateOut {
            device,
            network: device.network.name(),
            id: &device.id,
            last_seen: &self.last_seen,
            records: &self.records,
            network_info: &self.network,
            pending_commands: self.pending_commands,
        }
    }
}

/// The retained state's JSON shape, borrowed from a [`DeviceState`].
#[derive(serde::Serialize)]
struct StateOut<'a> {
    #[serde(serialize_with = "display")]
    device: &'a DeviceId,
    network: &'a str,
    id: &'a str,
    last_seen: &'a Option<String>,
    records: &'a Map<String, Value>,
    network_info: &'a Map<String, Value>,
    pending_commands: u64,
}

fn display<S: serde::Serializer>(d: &&DeviceId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}
