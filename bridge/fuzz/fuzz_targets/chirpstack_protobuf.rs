//! ChirpStack Protobuf events of every type: never a panic, including an `up` with any
//! time (one RFC 3339 cannot write is null in meta).
#![no_main]
use gateway_config::Marshaler;
use libfuzzer_sys::fuzz_target;
use longproto_bridge::networks::chirpstack::{Event, parse_event, uplink_from_event};
use longproto_bridge::device::{DeviceId, Network};

const EVENTS: [&str; 7] = ["up", "join", "status", "ack", "txack", "log", "location"];

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else { return };
    let event = EVENTS[which as usize % EVENTS.len()];
    if let Ok(Event::Up(up)) = parse_event(event, payload, Marshaler::Protobuf) {
        let device = DeviceId::new(Network::Lorawan, "70b3d57ed0051a2b").unwrap();
        let _ = uplink_from_event(&up, device, std::time::Instant::now());
    }
});
