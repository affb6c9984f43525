//! CayenneLPP decoding: never panics; valid items round-trip.
#![no_main]
use device_node::cayenne;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let items: Vec<_> = cayenne::decode(data).filter_map(Result::ok).collect();
    let mut out = vec![0u8; data.len() + 16];
    let n = cayenne::encode(&items, &mut out).expect("fits");
    let back: Vec<_> = cayenne::decode(&out[..n]).collect::<Result<_, _>>().expect("decodes");
    assert_eq!(back, items);
});
