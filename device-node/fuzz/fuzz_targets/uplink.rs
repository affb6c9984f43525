//! Telemetry decoding: never panics; what decodes re-encodes and decodes the same.
#![no_main]
use device_node::telemetry::{self, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&port, payload)) = data.split_first() else { return };
    let fport = (port != 0).then_some(port);
    if let Ok(records) = telemetry::decode_uplink(payload, fport) {
        let ok: Vec<Record> = records.filter_map(Result::ok).collect();
        let mut out = [0u8; 1024];
        let (n, _) = telemetry::encode_uplink(&ok, &mut out).expect("fits");
        let back: Vec<Record> = telemetry::decode_uplink(&out[..n], None)
            .expect("no port")
            .collect::<Result<_, _>>()
            .expect("re-encoded records decode");
        assert_eq!(back, ok);
    }
});
