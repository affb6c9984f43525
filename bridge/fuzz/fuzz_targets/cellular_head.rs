//! The cellular listener's request heads, as anyone on the internet may send them: never
//! a panic; a head that reads names a hex device id and a body within the limit, and is
//! read the same with more bytes behind it (a pipelined next request).
#![no_main]
use libfuzzer_sys::fuzz_target;
use longproto_bridge::device::{DeviceId, Network};
use longproto_bridge::http::cellular::parse_head;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((device, body_len, head_len))) = parse_head(data) {
        assert!(head_len <= data.len() && head_len <= 1024);
        assert!(body_len <= 4096);
        let mut more = data.to_vec();
        more.extend_from_slice(b"POST /c/1 HTTP/1.1\r\n\r\n");
        assert_eq!(parse_head(&more), Ok(Some((device.clone(), body_len, head_len))));
        let _ = DeviceId::new(Network::Cellular, &device);
    }
});
