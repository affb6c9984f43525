//! The fast reader of ChirpStack's JSON `up` event takes only what `chirpstack_api`'s own
//! reader takes, and reads it the same (the property test's rule, on any bytes).
#![no_main]
use chirpstack_api::integration::UplinkEvent;
use libfuzzer_sys::fuzz_target;
use longproto_bridge::networks::chirpstack::uplink_json::read_up;

fuzz_target!(|data: &[u8]| {
    if let Some(fast) = read_up(data) {
        let reference: UplinkEvent =
            serde_json::from_slice(data).expect("the fast reader took what chirpstack_api refuses");
        assert_eq!(fast, reference, "the two readers disagree");
    }
});
