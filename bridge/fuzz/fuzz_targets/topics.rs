//! Topic parsing: ChirpStack event topics against the configured template, and the
//! bridge's own command topic. Never a panic; a level that matches is one level.
#![no_main]
use libfuzzer_sys::fuzz_target;
use longproto_bridge::networks::chirpstack::TopicTemplate;
use longproto_bridge::commands::mqtt_api::command_topic_device;

fuzz_target!(|data: &[u8]| {
    let Ok(topic) = std::str::from_utf8(data) else { return };
    let template =
        TopicTemplate::parse("application/{{application_id}}/device/{{dev_eui}}/event/{{event}}");
    if let Some(vars) = template.capture(topic) {
        assert!(vars.values().all(|v| !v.contains('/')));
    }
    if let Some(Ok(device)) = command_topic_device("longproto/v1", topic) {
        assert_eq!(device.id, device.id.to_ascii_lowercase());
    }
});
