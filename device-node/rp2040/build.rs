//! Places `memory.x` for the linker and bakes the LoRaWAN keys in when they are given in
//! the environment (LONGPROTO_DEV_EUI, LONGPROTO_JOIN_EUI, LONGPROTO_APP_KEY, hex as the
//! network server shows them). Without them the firmware reads the flash key block.
use std::{env, fs, path::PathBuf};

const KEYS: [(&str, usize); 3] = [
    ("LONGPROTO_DEV_EUI", 8),
    ("LONGPROTO_JOIN_EUI", 8),
    ("LONGPROTO_APP_KEY", 16),
];

fn parse_hex(name: &str, value: &str, len: usize) -> Vec<u8> {
    let clean: String = value
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' '))
        .collect();
    if clean.len() != len * 2 || !clean.chars().all(|c| c.is_ascii_hexdigit()) {
        panic!(
            "{name} must be {len} bytes of hex ({} hex digits), got {:?}",
            len * 2,
            value
        );
    }
    (0..len)
        .map(|i| u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let given: Vec<(&str, usize, Option<String>)> = KEYS
        .iter()
        .map(|&(name, len)| {
            println!("cargo:rerun-if-env-changed={name}");
            (name, len, env::var(name).ok().filter(|v| !v.is_empty()))
        })
        .collect();
    let code = if given.iter().all(|(_, _, v)| v.is_none()) {
        "pub const BUILD_KEYS: Option<Keys> = None;\n".to_string()
    } else {
        let mut parts = Vec::new();
        for (name, len, value) in &given {
            let Some(value) = value else {
                panic!(
                    "{name} is missing: give all three of LONGPROTO_DEV_EUI, LONGPROTO_JOIN_EUI and LONGPROTO_APP_KEY, or none"
                );
            };
            parts.push(format!("{:?}", parse_hex(name, value, *len)));
        }
        format!(
            "pub const BUILD_KEYS: Option<Keys> = Some(Keys {{ dev_eui: {}, join_eui: {}, app_key: {} }});\n",
            parts[0], parts[1], parts[2]
        )
    };
    fs::write(out.join("build_keys.rs"), code).unwrap();
}
