//! ChirpStack JSON events of every type, as the adapter reads them: never a panic, and an
//! `up` that reads becomes pipeline input (meta, time) without one either.
#![no_main]
use gateway_config::Marshaler;
use libfuzzer_sys::fuzz_target;
use longproto_bridge::networks::chirpstack::{Event, parse_event, uplink_from_event};
use longproto_bridge::device::{DeviceId, Network};

const EVENTS: [&str; 8] = ["up", "join", "status", "ack", "txack", "log", "location", "integration"];

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else { return };
    let event = EVENTS[which as usize % EVENTS.len()];
    if let Ok(Event::Up(up)) = parse_event(event, payload, Marshaler::Json) {
        let device = DeviceId::new(Network::Lorawan, "70b3d57ed0051a2b").unwrap();
        let _ = uplink_from_event(&up, device, std::time::Instant::now());
    }
});
