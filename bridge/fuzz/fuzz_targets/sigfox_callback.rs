//! Sigfox DATA callback bodies, JSON or form-encoded, read and checked as the uplink
//! route does: a refusal answers a 4xx, never a panic (a `time` past i64 once was one).
#![no_main]
use libfuzzer_sys::fuzz_target;
use longproto_bridge::http::error::HttpError;
use longproto_bridge::networks::sigfox::read_uplink_callback;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    if let Err(e) = read_uplink_callback(body, mode & 1 == 1) {
        let status = HttpError::from(e.clone()).status();
        assert!(status.is_client_error(), "{status} {e}");
    }
});
