//! Command request bodies (HTTP and MQTT) and command frames in JSON: never a panic; a
//! command that reads encodes into a frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use longproto_bridge::commands::json::{parse_command, parse_frame, read_body};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = read_body(data) else { return };
    if let Some(body) = value.as_object() {
        if let Ok(command) = parse_command(body) {
            device_node::CommandFrame { counter: 1, command }
                .encode()
                .expect("a command that parsed encodes");
        }
    }
    if let Ok(frame) = parse_frame(&value) {
        frame.encode().expect("a frame that parsed encodes");
    }
});
