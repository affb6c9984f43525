//! The last known state of each device, published retained on `{root}/{network}/{id}/state`.
use crate::device::DeviceId;
use serde_json::{Map, Value, json};

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
    pub fn merge_records(&mut self, records: &[Value]) {
        for r in records {
            let key = match (r.get("kind"), r.get("type"), r.get("channel")) {
                (Some(Value::String(k)), _, _) => k.clone(),
                (_, Some(Value::String(t)), Some(c)) => format!("{t}/{c}"),
                _ => continue,
            };
            let mut r = r.clone();
            if let Value::Object(m) = &mut r {
                m.remove("kind");
            }
            self.records.insert(key, r);
        }
    }

    /// Sets network facts, keeping the ones not mentioned.
    pub fn merge_network(&mut self, facts: &Map<String, Value>) {
        for (k, v) in facts {
            self.network.insert(k.clone(), v.clone());
        }
    }

    /// The retained JSON, as GET /v1/devices/{network}/{id} answers too.
    pub fn to_json(&self, device: &DeviceId) -> Value {
        json!({
            "device": device.to_string(),
            "network": device.network.name(),
            "id": device.id,
            "last_seen": self.last_seen,
            "records": self.records,
            "network_info": self.network,
            "pending_commands": self.pending_commands,
        })
    }
}
