//! The command line, run as a user runs it: the real binary, real files, exit codes.
use serde_json::Value;
use std::process::{Command, Output};

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .args(args)
        .env_remove("LONGPROTO__MQTT__SERVER")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn vectors(file: &str) -> Vec<Value> {
    let path = format!(
        "{}/../device-node/vectors/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn configfile_prints_a_config_that_check_config_accepts() {
    let out = bridge(&["configfile"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("[mqtt]") && text.contains("[codecs.device]"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, &text).unwrap();
    let check = bridge(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).starts_with("configuration is valid"));
}

#[test]
fn check_config_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mqtt]\nserver = \"tcp//x\"\nkeepalive = 3\n[http]\nbind = \"nowhere\"\n",
    )
    .unwrap();
    let out = bridge(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("3 problems in the configuration:"), "{err}");
    assert!(
        err.contains("mqtt.server: \"tcp//x\" is not a URL"),
        "{err}"
    );
    assert!(
        err.contains("mqtt.keepalive: unknown key; did you mean \"keepalive_s\"?"),
        "{err}"
    );
    assert!(
        err.contains("http.bind: \"nowhere\" is not an address"),
        "{err}"
    );

    std::fs::write(&path, "this is not toml").unwrap();
    let out = bridge(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not valid TOML"), "{}", stderr(&out));
}

#[test]
fn check_config_sees_environment_overrides() {
    let out = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .args(["check-config"])
        .env("LONGPROTO__MQTT__SERVER", "http://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mqtt.server: scheme \"http\" is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn decode_prints_every_vector_as_its_json() {
    for file in ["longproto-v1.json", "commands.json", "cayenne-lpp.json"] {
        for v in vectors(file) {
            let mut args = vec![
                "decode".to_string(),
                "--codec".into(),
                v["codec"].as_str().unwrap().into(),
            ];
            if let Some(p) = v["fport"].as_u64() {
                args.extend(["--fport".into(), p.to_string()]);
            }
            args.push(v["hex"].as_str().unwrap().into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = bridge(&args);
            assert!(out.status.success(), "{}: {}", v["name"], stderr(&out));
            let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(got["records"], v["json"], "{}", v["name"]);
            assert_eq!(got["raw_hex"], v["hex"], "{}", v["name"]);
        }
    }
}

#[test]
fn decode_failures_exit_1_with_the_reason() {
    let cases = [
        (
            vec!["decode", "096e24b5e6"],
            "at byte 0: truncated: needs 12 bytes, 5 remain",
        ),
        (
            vec!["decode", "--fport", "12", "096e24b5e600f6b803e03039"],
            "unknown format version 3",
        ),
        (vec!["decode", "zz"], "\"zz\" is not hex"),
        (
            vec!["decode", "--codec", "protobuf", "00"],
            "unknown codec \"protobuf\"",
        ),
        (
            vec!["decode", "--codec", "cayenne-lpp", "01ee00"],
            "at byte 1: unknown kind 0xee",
        ),
        (
            vec!["decode", "--fport", "20", "0700010000000000"],
            "at byte 0: unknown kind 0x07",
        ),
    ];
    for (args, want) in cases {
        let out = bridge(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn encode_command_prints_every_command_vector() {
    for v in vectors("commands.json") {
        let json = v["json"].to_string();
        let out = bridge(&["encode-command", &json]);
        assert!(out.status.success(), "{}: {}", v["name"], stderr(&out));
        assert_eq!(stdout(&out).trim(), v["hex"], "{}", v["name"]);
    }
    let out = bridge(&[
        "encode-command",
        r#"{"command":"set_interval","args":{"interval_s":0},"counter":1}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("args: interval_s is out of range"),
        "{}",
        stderr(&out)
    );
    let out = bridge(&["encode-command", "{"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));
}

#[test]
fn hash_token_prints_the_sha256_of_the_secret_on_standard_input() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // FIPS 180-2's two-block test message, and its digest
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    // a short secret is refused
    let mut child = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("16 characters"), "{}", stderr(&out));
}

#[test]
fn check_config_says_plain_api_tokens_are_deprecated_and_names_bad_operator_keys() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "[http]\napi_tokens = [\"0123456789abcdef0123\"]\n").unwrap();
    let out = bridge(&["check-config", "-c", plain.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("http.api_tokens (and http.api_tokens_file) are deprecated"),
        "{}",
        stderr(&out)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[operators.token]\nops = { secret_sha256 = \"abc\", scopes = [\"admin\"], devices = [\"mars/*\"] }\n\
         [operators.group]\n\"Depot\" = [\"lorawan/xyz\"]\n",
    )
    .unwrap();
    let out = bridge(&["check-config", "-c", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    for key in [
        "operators.token.ops.secret_sha256",
        "operators.token.ops.scopes[0]",
        "operators.token.ops.devices[0]",
        "operators.group.Depot",
        "operators.group.Depot[0]",
    ] {
        assert!(e.contains(&format!("{key}: ")), "{key} missing in: {e}");
    }
}
