//! `operators.tokens_file`, read again whenever it changes: a list of problems or tokens
//! that load, never a panic.
#![no_main]
use gateway_config::{HttpSettings, OperatorSettings, parse_tokens_file};
use libfuzzer_sys::fuzz_target;
use longproto_bridge::operators::Operators;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tokens) = parse_tokens_file(text) {
        let settings = OperatorSettings {
            token: tokens,
            ..Default::default()
        };
        let ops = Operators::new(&HttpSettings::default(), &settings, None)
            .expect("tokens that pass the checks load");
        let _ = ops.authenticate(text);
    }
});
