//! Sigfox DATA callback bodies, JSON or form-encoded, read and checked as the uplink
//! route does: a refusal is a 4xx, never a panic (a `time` past i64 once was one).
#![no_main]
use libfuzzer_sys::fuzz_target;
use longproto_bridge::sigfox::read_uplink_callback;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    if let Err((status, why)) = read_uplink_callback(body, mode & 1 == 1) {
        assert!((400..500).contains(&status), "{status} {why}");
    }
});
