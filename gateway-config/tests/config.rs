//! Loading, validation and rendering through the public API, with real files.
use gateway_config::{Marshaler, Problems, Settings, Sources, load, render_default};
use std::collections::HashMap;
use std::io::Write;
use tempfile::NamedTempFile;

fn file(text: &str) -> NamedTempFile {
    let mut f = NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_text(text: &str) -> Result<Settings, Problems> {
    load_with_env(&[text], &[])
}

fn load_with_env(texts: &[&str], env: &[(&str, &str)]) -> Result<Settings, Problems> {
    let files: Vec<_> = texts.iter().map(|t| file(t)).collect();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(&Sources {
        files: files.iter().map(|f| f.path().to_owned()).collect(),
        env: Some(env),
    })
}

fn problems(text: &str) -> Vec<String> {
    load_text(text)
        .unwrap_err()
        .0
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(load_text("").unwrap(), Settings::default());
    assert_eq!(
        load(&Sources {
            files: vec![],
            env: Some(HashMap::new())
        })
        .unwrap(),
        Settings::default()
    );
}

#[test]
fn rendered_default_parses_back_to_the_defaults() {
    let text = render_default();
    assert_eq!(
        toml::from_str::<Settings>(&text).unwrap(),
        Settings::default()
    );
    assert_eq!(load_text(&text).unwrap(), Settings::default());
    // every field is documented in the rendered file
    for section in Settings::SECTIONS {
        assert!(text.contains(&format!("[{}]", section.key)));
        for (field, doc) in section.fields {
            assert!(!doc.is_empty(), "{}.{field} has no doc", section.key);
        }
    }
    assert!(text.contains("# Broker URL"), "{text}");
}

#[test]
fn contract_example_is_valid() {
    let s = load_text(
        r#"
[mqtt]
server = "tcp://127.0.0.1:1883"
client_id = "longproto-bridge"
topic_root = "longproto/v1"
[chirpstack]
event_topic = "application/{{application_id}}/device/{{dev_eui}}/event/{{event}}"
command_topic = "application/{{application_id}}/device/{{dev_eui}}/command/{{command}}"
marshaler = "json"
[sigfox]
daily_downlinks = 2
[http]
bind = "0.0.0.0:8090"
api_tokens = ["0123456789abcdef0123"]
[codecs.device]
"70b3d57ed0051a2b" = "cayenne-lpp"
[commands]
default_ttl_s = 600
"#,
    )
    .unwrap();
    assert_eq!(s.chirpstack.marshaler, Marshaler::Json);
    assert_eq!(s.sigfox.daily_downlinks, 2);
    assert_eq!(s.codecs.device["70b3d57ed0051a2b"], "cayenne-lpp");
    assert_eq!(s.commands.default_ttl_s, 600);
}

#[test]
fn not_toml_names_the_file_and_the_place() {
    let f = file("[mqtt\nserver = 1");
    let err = load(&Sources {
        files: vec![f.path().to_owned()],
        env: Some(HashMap::new()),
    })
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].path, f.path().display().to_string());
    assert!(err.0[0].message.starts_with("not valid TOML"), "{err}");
    assert!(err.0[0].message.contains("line 1"), "{err}");
}

#[test]
fn missing_file_is_a_problem_not_a_panic() {
    let err = load(&Sources::files(["/nonexistent/longproto.toml"])).unwrap_err();
    assert!(err.0[0].message.starts_with("cannot read"), "{err}");
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    let p = problems("[mqtt]\nsever = \"tcp://x\"\n[chirpstak]\n[http]\nfoo_bar_baz = 1\n");
    assert_eq!(
        p,
        vec![
            "chirpstak: unknown section; did you mean \"chirpstack\"?",
            "http.foo_bar_baz: unknown key; expected one of bind, api_tokens, api_tokens_file, body_limit_bytes, header_timeout_s, idle_timeout_s, max_connections",
            "mqtt.sever: unknown key; did you mean \"server\"?",
        ]
    );
}

#[test]
fn wrong_types_are_all_reported_with_their_path() {
    let p = problems(
        "[mqtt]\nkeepalive_s = \"soon\"\nclean_session = 3\n[chirpstack]\nmarshaler = \"xml\"\n[http]\napi_tokens = \"x\"\n[metrics]\nenabled = \"yes\"\n",
    );
    assert_eq!(p.len(), 5, "{p:#?}");
    assert!(p.iter().any(|l| l.starts_with("mqtt.keepalive_s: invalid type: string \"soon\", expected u16")), "{p:#?}");
    assert!(
        p.iter()
            .any(|l| l.starts_with("mqtt.clean_session: invalid type")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("chirpstack.marshaler: unknown variant `xml`")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("http.api_tokens: invalid type")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("metrics.enabled: invalid type")),
        "{p:#?}"
    );
}

#[test]
fn a_section_that_is_not_a_table() {
    assert_eq!(
        problems("mqtt = 5\n"),
        vec!["mqtt: expected a table [mqtt], found a number"]
    );
}

#[test]
fn out_of_range_and_nonsense_values() {
    let p = problems(
        r#"
[mqtt]
server = "tcp//x"
keepalive_s = 2
topic_root = "a/#"
[chirpstack]
event_topic = "application/{{application_id}}/device/{{devEui}}/event/{{event}}"
[sigfox]
daily_downlinks = 9
[http]
bind = "localhost"
api_tokens = ["short"]
body_limit_bytes = 10
[storage]
url = "mysql://x"
[commands]
max_attempts = 0
[codecs]
default = "protobuf"
[codecs.device]
"XYZ" = "raw"
[logging]
level = "loud"
"#,
    );
    let want = [
        "mqtt.server: \"tcp//x\" is not a URL; expected mqtt://, mqtts://, tcp:// or ssl://",
        "mqtt.keepalive_s: 2 is out of range 5..=65535",
        "mqtt.topic_root: \"a/#\" must not contain the wildcards # or +",
        "chirpstack.event_topic: unknown variable {{devEui}}",
        "sigfox.daily_downlinks: 9 is out of range 0..=4",
        "http.bind: \"localhost\" is not an address and port",
        "http.api_tokens[0]: a token needs 16 characters",
        "http.body_limit_bytes: 10 is out of range",
        "storage.url: the scheme \"mysql\" is not supported",
        "commands.max_attempts: 0 is out of range 1..=10",
        "codecs.default: unknown codec \"protobuf\"",
        "codecs.device.\"XYZ\": a device is its DevEUI",
        "logging.level: \"loud\"",
    ];
    assert_eq!(p.len(), want.len(), "{p:#?}");
    for w in want {
        assert!(
            p.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in {p:#?}"
        );
    }
}

#[test]
fn files_merge_in_order_then_environment_wins() {
    let s = load_with_env(
        &[
            "[mqtt]\nserver = \"tcp://a:1883\"\nclient_id = \"first\"\n",
            "[mqtt]\nclient_id = \"second\"\n",
        ],
        &[
            ("LONGPROTO__MQTT__SERVER", "mqtts://broker.example:8883"),
            (
                "LONGPROTO__HTTP__API_TOKENS",
                "0123456789abcdef,fedcba9876543210",
            ),
            ("LONGPROTO__COMMANDS__MAX_ATTEMPTS", "5"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(s.mqtt.server, "mqtts://broker.example:8883");
    assert_eq!(s.mqtt.client_id, "second");
    assert_eq!(s.http.api_tokens, ["0123456789abcdef", "fedcba9876543210"]);
    assert_eq!(s.commands.max_attempts, 5);
}

#[test]
fn environment_problems_name_the_key() {
    let err = load_with_env(
        &[""],
        &[
            ("LONGPROTO__MQTT__KEEPALIVE_S", "often"),
            ("LONGPROTO__MQTT__SERVERR", "x"),
        ],
    )
    .unwrap_err();
    let p: Vec<String> = err.0.iter().map(|p| p.to_string()).collect();
    assert!(
        p.iter()
            .any(|l| l.starts_with("mqtt.keepalive_s: invalid type")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l == "mqtt.serverr: unknown key; did you mean \"server\"?"),
        "{p:#?}"
    );
}

#[test]
fn secrets_come_from_files() {
    let pw = file("s3cret\n");
    let tokens = file("# operators\n0123456789abcdef0123\n\nabcdefabcdefabcdef\n");
    let s = load_text(&format!(
        "[mqtt]\npassword_file = \"{}\"\n[http]\napi_tokens_file = \"{}\"\n[sigfox]\nsecret_file = \"/nonexistent/secret\"\n",
        pw.path().display(),
        tokens.path().display()
    ))
    .unwrap_err();
    assert_eq!(s.0.len(), 1, "{s}");
    assert!(
        s.0[0]
            .to_string()
            .starts_with("sigfox.secret_file: cannot read \"/nonexistent/secret\"")
    );

    let s = load_text(&format!(
        "[mqtt]\npassword_file = \"{}\"\n[http]\napi_tokens_file = \"{}\"\n",
        pw.path().display(),
        tokens.path().display()
    ))
    .unwrap();
    assert_eq!(s.mqtt.password, "s3cret");
    assert_eq!(
        s.http.api_tokens,
        ["0123456789abcdef0123", "abcdefabcdefabcdef"]
    );
}

#[test]
fn a_secret_file_that_never_ends_is_refused_not_read_for_ever() {
    let e = load_text("[sigfox]\nsecret_file = \"/dev/zero\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("sigfox.secret_file: cannot read \"/dev/zero\": longer than 1048576 bytes"),
        "{e}"
    );
}

#[test]
fn problems_display_lists_each_one() {
    let err = load_text("[mqtt]\nkeepalive_s = 1\nclient_id = \"\"\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("2 problems in the configuration:\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  mqtt.client_id: must not be empty"),
        "{text}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Any text at all: a clean result or a list of problems, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "[\\[\\]a-z_=\"0-9. \\n{}#/:-]{0,120}") {
        let _ = load_text(&text);
    }

    /// Any value of any type under any known key: never a panic.
    #[test]
    fn arbitrary_values_never_panic(
        section in proptest::sample::select(vec!["mqtt", "chirpstack", "sigfox", "http", "storage", "commands", "codecs", "logging", "metrics"]),
        key in proptest::sample::select(vec!["server", "keepalive_s", "marshaler", "daily_downlinks", "bind", "url", "default_ttl_s", "default", "level", "enabled", "device", "api_tokens"]),
        value in proptest::sample::select(vec!["1", "-1", "99999999999", "\"x\"", "true", "[1, \"a\"]", "{a = 1}", "1.5", "\"\""]),
    ) {
        let _ = load_text(&format!("[{section}]\n{key} = {value}\n"));
    }
}
