//! Configuration loading from any file: a list of problems or settings that pass the
//! checks, never a panic.
#![no_main]
use gateway_config::{Sources, load};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, data).unwrap();
    let sources = Sources {
        files: vec![file],
        env: Some(HashMap::new()),
    };
    if let Ok(settings) = load(&sources) {
        assert!(settings.validate().is_empty());
    }
});
