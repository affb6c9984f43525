//! Telemetry decoding: never panics; what decodes re-encodes and decodes the same.
#![no_main]
use device_node::telemetry::{self, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&port, payload)) = data.split_first() else { return };
    let fport = (port != 0).then_some(port);
    if let Ok(records) = telemetry::decode_uplink(payload, fport) {
        let ok: Vec<Record> = records.filter_map(Result::ok).collect();
        // The buffer is the target's to size: arbitrary input decodes into more records
        // than any uplink on the air carries, and `encode_uplink` says how much it needs
        // (BufferTooSmall) instead of writing past the end.
        let mut out = vec![0u8; 256];
        let n = match telemetry::encode_uplink(&ok, &mut out) {
            Ok((n, _)) => n,
            Err(device_node::EncodeError::BufferTooSmall { needed }) => {
                out = vec![0u8; needed];
                telemetry::encode_uplink(&ok, &mut out).expect("fits the size it asked for").0
            }
            Err(e) => panic!("decoded records do not encode: {e:?}"),
        };
        let back: Vec<Record> = telemetry::decode_uplink(&out[..n], None)
            .expect("no port")
            .collect::<Result<_, _>>()
            .expect("re-encoded records decode");
        assert_eq!(back, ok);
    }
});
