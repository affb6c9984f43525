//! Every vector in `vectors/*.json`: its hex decodes to its json, and its json encodes
//! back to its hex. The vectors come from an independent reference encoder
//! (tools/wire_vectors.py), so this checks one reading of the spec against another.
use device_node::cayenne::{self, LppRecord};
use device_node::command::{self, CommandFrame};
use device_node::telemetry::{self, Record};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Vector {
    name: String,
    codec: String,
    fport: Option<u8>,
    hex: String,
    json: Value,
}

fn vectors(file: &str) -> Vec<Vector> {
    let path = format!("{}/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Vec<Vector> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(v.len() >= 10, "{path} has only {} vectors", v.len());
    v
}

#[test]
fn telemetry_vectors_round_trip() {
    for v in vectors("longproto-v1.json") {
        assert_eq!(v.codec, "longproto-v1", "{}", v.name);
        let bytes = hex::decode(&v.hex).unwrap();
        let decoded: Vec<Record> = telemetry::decode_uplink(&bytes, v.fport)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            v.json,
            "{}: decode",
            v.name
        );

        let records: Vec<Record> = serde_json::from_value(v.json.clone()).unwrap();
        let mut out = [0u8; 256];
        let (n, _) = telemetry::encode_uplink(&records, &mut out).unwrap();
        assert_eq!(hex::encode(&out[..n]), v.hex, "{}: encode", v.name);
        if v.fport.is_none() {
            for r in &records {
                assert!(
                    r.encoded_len() <= 12,
                    "{}: a Sigfox record over 12 bytes",
                    v.name
                );
            }
        }
    }
}

#[test]
fn command_vectors_round_trip() {
    for v in vectors("commands.json") {
        assert_eq!(v.fport, Some(command::COMMAND_FPORT), "{}", v.name);
        let bytes = hex::decode(&v.hex).unwrap();
        assert_eq!(bytes.len() % 8, 0, "{}: frames are 8 bytes", v.name);
        let decoded: Vec<CommandFrame> = command::decode_downlink(&bytes)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            v.json,
            "{}: decode",
            v.name
        );

        let frames: Vec<CommandFrame> = serde_json::from_value(v.json.clone()).unwrap();
        let hex: String = frames
            .iter()
            .map(|f| hex::encode(f.encode().unwrap()))
            .collect();
        assert_eq!(hex, v.hex, "{}: encode", v.name);
    }
}

#[test]
fn cayenne_vectors_round_trip() {
    for v in vectors("cayenne-lpp.json") {
        let bytes = hex::decode(&v.hex).unwrap();
        let decoded: Vec<LppRecord> = cayenne::decode(&bytes)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            v.json,
            "{}: decode",
            v.name
        );

        let records: Vec<LppRecord> = serde_json::from_value(v.json.clone()).unwrap();
        let mut out = [0u8; 256];
        let n = cayenne::encode(&records, &mut out).unwrap();
        assert_eq!(hex::encode(&out[..n]), v.hex, "{}: encode", v.name);
    }
}

#[test]
fn every_cayenne_type_is_named_as_its_json_writes_it() {
    let mut types = 0;
    for type_id in 0..=255u8 {
        let Some(size) = cayenne::LppValue::size_of(type_id) else {
            continue;
        };
        let mut item = vec![7, type_id];
        item.resize(2 + size, 0);
        let record = cayenne::decode(&item).next().unwrap().unwrap();
        assert_eq!(record.value.type_id(), type_id);
        assert_eq!(
            serde_json::to_value(record).unwrap()["type"],
            record.value.name(),
            "type {type_id}"
        );
        types += 1;
    }
    assert_eq!(types, 26, "every type of the table");
}

/// Sealed frames and cellular polls (vectors/sealed.json), their MACs computed by
/// `tools/wire_vectors.py` with Python's `cryptography`.
mod sealed {
    use device_node::cellular::{Client, open_poll};
    use device_node::node::{Executor, Node, NodeState, Schedule};
    use device_node::seal::{DeviceKey, open_frame, seal_frame};
    use device_node::telemetry::AckResult;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Frame {
        name: String,
        device: String,
        key: String,
        frame: String,
        sealed: String,
    }

    #[derive(Deserialize)]
    struct Poll {
        name: String,
        device: String,
        key: String,
        counter: u32,
        wait_s: u16,
        received: Option<u16>,
        records: String,
        body: String,
    }

    #[derive(Deserialize)]
    struct File {
        frames: Vec<Frame>,
        polls: Vec<Poll>,
    }

    fn file() -> File {
        let path = format!("{}/vectors/sealed.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn key(hex_key: &str) -> DeviceKey {
        DeviceKey::new(hex::decode(hex_key).unwrap().try_into().unwrap())
    }

    #[test]
    fn frames_seal_and_open_as_the_reference_computes() {
        let f = file();
        assert!(f.frames.len() >= 4);
        for v in f.frames {
            let frame: [u8; 8] = hex::decode(&v.frame).unwrap().try_into().unwrap();
            let sealed = seal_frame(&key(&v.key), v.device.as_bytes(), &frame);
            assert_eq!(hex::encode(sealed), v.sealed, "{}", v.name);
            assert_eq!(
                open_frame(&key(&v.key), v.device.as_bytes(), &sealed),
                Some(frame)
            );
        }
    }

    struct Yes;
    impl Executor for Yes {
        fn execute(&mut self, _: &device_node::Command) -> AckResult {
            AckResult::Executed
        }
    }

    #[test]
    fn polls_are_written_and_read_as_the_reference_computes() {
        let f = file();
        assert!(f.polls.len() >= 4);
        for v in f.polls {
            let records = hex::decode(&v.records).unwrap();
            let mut client = Client::new(key(&v.key), &v.device, v.counter);
            if let Some(received) = v.received {
                // the client acknowledges the last frame it took: give it one
                let frame = [0x03, (received >> 8) as u8, received as u8, 0, 0, 0, 0, 0];
                let sealed = seal_frame(&key(&v.key), v.device.as_bytes(), &frame);
                let mut node = Node::new(Schedule::default(), NodeState::default());
                assert_eq!(client.answer(&sealed, &mut node, 0, &mut Yes).frames, 1);
            }
            let mut out = [0u8; 128];
            let n = client.body(v.wait_s, &records, &mut out).unwrap();
            assert_eq!(hex::encode(&out[..n]), v.body, "{}", v.name);
            let body = hex::decode(&v.body).unwrap();
            let poll = open_poll(&key(&v.key), v.device.as_bytes(), &body).unwrap();
            assert_eq!(
                (poll.counter, poll.wait_s, poll.received, poll.records),
                (v.counter, v.wait_s, v.received, &records[..]),
                "{}",
                v.name
            );
        }
    }
}

/// Binary SMS user data (vectors/sms.json), the header written by `tools/wire_vectors.py`
/// from TS 23.040's own layout.
mod sms {
    use device_node::cellular::Client;
    use device_node::node::{Executor, Node, NodeState, Schedule};
    use device_node::seal::{DeviceKey, SEALED_FRAME_LEN, seal_frame};
    use device_node::sms::{
        Mt, frames_payload, open_mo, parse_mt, split_user_data, udh, wake_payload,
    };
    use device_node::telemetry::AckResult;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Sms {
        name: String,
        device: String,
        key: String,
        kind: String,
        dest_port: u16,
        src_port: u16,
        user_data: String,
        counters: Option<Vec<u16>>,
        at_s: Option<u32>,
        counter: Option<u32>,
        received: Option<u16>,
        records: Option<String>,
    }

    struct Yes(u32);
    impl Executor for Yes {
        fn execute(&mut self, _: &device_node::Command) -> AckResult {
            self.0 += 1;
            AckResult::Executed
        }
    }

    #[test]
    fn user_data_is_written_and_read_as_ts_23_040_lays_it_out() {
        let path = format!("{}/vectors/sms.json", env!("CARGO_MANIFEST_DIR"));
        let all: Vec<Sms> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(all.len() >= 4);
        for v in all {
            let key = DeviceKey::new(hex::decode(&v.key).unwrap().try_into().unwrap());
            let id = v.device.as_bytes();
            let ud = hex::decode(&v.user_data).unwrap();
            let (ports, payload) = split_user_data(&ud).unwrap();
            assert_eq!(
                (ports.dest, ports.src),
                (v.dest_port, v.src_port),
                "{}",
                v.name
            );
            assert_eq!(ud[..7], udh(v.dest_port, v.src_port), "{}", v.name);
            match v.kind.as_str() {
                "frames" => {
                    let Ok(Mt::Frames(sealed)) = parse_mt(&key, id, payload) else {
                        panic!("{}: not frames", v.name)
                    };
                    let mut again = Vec::new();
                    for (c, s) in v
                        .counters
                        .unwrap()
                        .iter()
                        .zip(sealed.chunks(SEALED_FRAME_LEN))
                    {
                        assert_eq!(u16::from_be_bytes([s[1], s[2]]), *c);
                        again.extend(seal_frame(&key, id, s[..8].try_into().unwrap()));
                    }
                    let mut out = [0u8; 133];
                    let n = frames_payload(&again, &mut out).unwrap();
                    assert_eq!(&out[..n], payload, "{}", v.name);
                    let mut node = Node::new(Schedule::default(), NodeState::default());
                    let mut exec = Yes(0);
                    let mut client = Client::new(key.clone(), &v.device, 1);
                    let a = client.answer(sealed, &mut node, 0, &mut exec);
                    assert_eq!((a.frames, a.refused), (sealed.len() / 12, 0), "{}", v.name);
                }
                "wake" => {
                    let at = v.at_s.unwrap();
                    assert_eq!(parse_mt(&key, id, payload), Ok(Mt::Wake { at_s: at }));
                    assert_eq!(wake_payload(&key, id, at)[..], payload[..], "{}", v.name);
                }
                "request" => {
                    let mo = open_mo(&key, id, payload).unwrap();
                    assert_eq!(mo.counter, v.counter.unwrap());
                    assert_eq!(mo.received, v.received);
                    assert_eq!(hex::encode(mo.records), v.records.clone().unwrap());
                }
                other => panic!("{}: kind {other}", v.name),
            }
        }
    }
}
