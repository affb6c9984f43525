//! The last known state of each device, published retained on `{root}/{network}/{id}/state`.
use crate::device::DeviceId;
use crate::pipeline::codec::{Record, StateKey};
use indexmap::IndexMap;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

/// What the bridge knows of one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    /// When the bridge last heard from it (RFC 3339).
    pub last_seen: Option<String>,
    /// The last record of each kind (`status`, `ack`, `event`, `boot`; CayenneLPP items
    /// by `type/channel`), merged over uplinks, in the order first seen.
    pub records: IndexMap<StateKey, Record>,
    /// Facts from the network: ChirpStack's application and profile, DevAddr, battery
    /// and link margin, device class; Sigfox's device type.
    pub network: Map<String, Value>,
    /// Commands not yet in a final state.
    pub pending_commands: u64,
}

impl DeviceState {
    /// Merges decoded records: each replaces the last one of its kind.
    pub fn merge_records(&mut self, records: &[Record]) {
        for r in records {
            self.records.insert(r.state_key(), *r);
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
            records: RecordsOut(&self.records),
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
    records: RecordsOut<'a>,
    network_info: &'a Map<String, Value>,
    pending_commands: u64,
}

/// The records as a JSON object: key → the record without its `kind`.
struct RecordsOut<'a>(&'a IndexMap<StateKey, Record>);

impl serde::Serialize for RecordsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, r) in self.0 {
            map.serialize_entry(k, &r.in_state())?;
        }
        map.end()
    }
}

fn display<S: serde::Serializer>(d: &&DeviceId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::codec::Codec;

    /// The state's records as the bridge used to keep them: each record's JSON, `kind`
    /// taken out as the key, CayenneLPP items under `type/channel`.
    fn merged_as_json(records: &[Value]) -> Map<String, Value> {
        let mut out = Map::new();
        for r in records {
            let mut m = r.as_object().unwrap().clone();
            let key = match m.shift_remove("kind") {
                Some(Value::String(k)) => k,
                _ => format!("{}/{}", m["type"].as_str().unwrap(), m["channel"]),
            };
            out.insert(key, Value::Object(m));
        }
        out
    }

    #[test]
    fn typed_records_write_the_json_of_the_vectors_and_merge_as_json_did() {
        for (file, codec) in [
            ("longproto-v1.json", Codec::LongprotoV1),
            ("cayenne-lpp.json", Codec::CayenneLpp),
        ] {
            let path = format!(
                "{}/../device-node/vectors/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let vectors: Vec<Value> =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let device = DeviceId::parse("sigfox", "1a2b3c").unwrap();
            let (mut state, mut all) = (DeviceState::default(), Vec::new());
            let mut merged = 0;
            for v in vectors {
                let bytes = hex::decode(v["hex"].as_str().unwrap()).unwrap();
                let fport = v["fport"].as_u64().map(|p| p as u8);
                let Ok(records) = codec.decode_records(&bytes, fport) else {
                    continue;
                };
                assert_eq!(serde_json::to_value(&records).unwrap(), v["json"]);
                state.merge_records(&records);
                all.extend(records.iter().map(Record::to_json));
                merged += records.len();
            }
            assert!(merged > 5, "{file}: {merged} records");
            // same keys, same order, same JSON
            assert_eq!(
                serde_json::to_string(&state.to_json(&device)["records"]).unwrap(),
                serde_json::to_string(&merged_as_json(&all)).unwrap(),
                "{file}"
            );
        }
    }
}
