//! The JavaScript codec for ChirpStack and The Things Stack (`deploy/codec/longproto-v1.js`)
//! under QuickJS (rquickjs, called as ChirpStack calls a codec: a fresh runtime and context
//! per payload, the input in the global `chirpstack_input`) and under Node.js: every
//! vector both ways, the same JSON as `longproto-bridge decode`, and the same verdict as
//! the bridge's decoder on payloads it has never seen.
use longproto_bridge::cli;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

fn codec() -> String {
    let path = format!(
        "{}/../deploy/codec/longproto-v1.js",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).expect("deploy/codec/longproto-v1.js")
}

/// One call of `function` (decodeUplink, decodeDownlink, encodeDownlink) in QuickJS.
fn quickjs(codec: &str, function: &str, input: &Value) -> Value {
    let rt = rquickjs::Runtime::new().expect("a QuickJS runtime");
    let ctx = rquickjs::Context::full(&rt).expect("a QuickJS context");
    ctx.with(|ctx| {
        let js_input: rquickjs::Value = ctx
            .json_parse(input.to_string())
            .expect("the input is JSON");
        ctx.globals().set("chirpstack_input", js_input).unwrap();
        let script = format!("{codec}\n\nJSON.stringify({function}(chirpstack_input))");
        let mut options = rquickjs::context::EvalOptions::default();
        options.strict = false;
        let out: String = ctx
            .eval_with_options(script, options)
            .unwrap_or_else(|e| panic!("{function}({input:?}) threw in QuickJS: {e}"));
        serde_json::from_str(&out).unwrap()
    })
}

/// Many calls in one Node.js process: `[{function, input}]` → `[output]`.
fn node(codec: &str, calls: &[(&str, Value)]) -> Vec<Value> {
    let harness = r#"
const vm = require("vm");
const fs = require("fs");
const [codec, calls] = JSON.parse(fs.readFileSync(0, "utf8"));
const sandbox = {};
vm.createContext(sandbox);
vm.runInContext(codec, sandbox);
const out = calls.map(([f, input]) => {
  sandbox.__input = input;
  return JSON.parse(vm.runInContext("JSON.stringify(" + f + "(__input))", sandbox));
});
process.stdout.write(JSON.stringify(out));
"#;
    let mut child = Command::new("node")
        .arg("-e")
        .arg(harness)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (the test command installs Node.js)");
    let calls: Vec<Value> = calls.iter().map(|(f, i)| json!([f, i])).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!([codec, calls]).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Numbers as f64, so that JavaScript's `-90` and Rust's `-90.0` compare equal.
fn numeric(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numeric).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), numeric(v))).collect()),
        other => other.clone(),
    }
}

/// What the bridge says of a payload: `Ok(decode JSON)` or `Err(the decoder's message)`.
fn bridge(fport: Option<u8>, bytes: &[u8]) -> Result<Value, String> {
    cli::decode("longproto-v1", fport, &hex::encode(bytes))
        .map(|s| serde_json::from_str(&s).unwrap())
        .map_err(|e| {
            e.strip_prefix("longproto-v1 payload does not decode: ")
                .unwrap_or(&e)
                .to_owned()
        })
}

/// What the codec says: `Ok(data)` or `Err(its one error)`.
fn verdict(out: &Value) -> Result<Value, String> {
    match out["errors"].as_array().map(Vec::as_slice) {
        Some([]) => Ok(out["data"].clone()),
        Some([e]) => Err(e.as_str().unwrap().to_owned()),
        _ => panic!("errors must be an array of at most one message: {out}"),
    }
}

fn vectors(file: &str) -> Vec<Value> {
    crate::common::vectors(file)
}

fn bytes_of(hex: &str) -> Vec<u8> {
    hex::decode(hex).unwrap()
}

/// Every call the vectors make, with what it must give.
fn vector_calls() -> Vec<(&'static str, Value, Value)> {
    let mut calls = Vec::new();
    for v in vectors("longproto-v1.json") {
        let fport = v["fport"].as_u64().map(|p| p as u8);
        let bytes = bytes_of(v["hex"].as_str().unwrap());
        let want = bridge(fport, &bytes).expect("a vector decodes");
        assert_eq!(
            numeric(&want["records"]),
            numeric(&v["json"]),
            "{}",
            v["name"]
        );
        let input = json!({"bytes": bytes, "fPort": v["fport"]});
        calls.push((
            "decodeUplink",
            input,
            json!({"data": want, "errors": [], "warnings": []}),
        ));
    }
    for v in vectors("commands.json") {
        let bytes = bytes_of(v["hex"].as_str().unwrap());
        let want = bridge(Some(20), &bytes).expect("a vector decodes");
        assert_eq!(
            numeric(&want["records"]),
            numeric(&v["json"]),
            "{}",
            v["name"]
        );
        calls.push((
            "decodeDownlink",
            json!({"bytes": bytes, "fPort": 20}),
            json!({"data": want, "errors": [], "warnings": []}),
        ));
        let encoded = json!({"bytes": bytes, "fPort": 20, "errors": [], "warnings": []});
        calls.push((
            "encodeDownlink",
            json!({"data": {"records": v["json"]}}),
            encoded.clone(),
        ));
        if let [one] = v["json"].as_array().unwrap().as_slice() {
            calls.push(("encodeDownlink", json!({"data": one}), encoded));
        }
    }
    calls
}

#[test]
fn every_vector_passes_both_ways_under_quickjs_and_node_as_the_bridge_decodes_it() {
    let codec = codec();
    let calls = vector_calls();
    assert!(calls.len() > 40, "{} calls", calls.len());
    let from_node = node(
        &codec,
        &calls
            .iter()
            .map(|(f, i, _)| (*f, i.clone()))
            .collect::<Vec<_>>(),
    );
    for ((function, input, want), from_node) in calls.iter().zip(from_node) {
        let from_quickjs = quickjs(&codec, function, input);
        assert_eq!(
            numeric(&from_quickjs),
            numeric(want),
            "QuickJS {function}({input})"
        );
        assert_eq!(
            numeric(&from_node),
            numeric(want),
            "Node {function}({input})"
        );
    }
}

/// xorshift64*: payloads that are reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Payloads near the format: records and frames of every kind with random fields, some
/// of them then cut short or with one byte overwritten.
fn payloads(n: usize) -> Vec<(Option<u8>, Vec<u8>)> {
    let mut rng = Rng(0x1057_0de1_c0de_c0de);
    let ports = [
        None,
        Some(10),
        Some(10),
        Some(20),
        Some(20),
        Some(12),
        Some(3),
    ];
    (0..n)
        .map(|_| {
            let fport = ports[rng.below(ports.len() as u64) as usize];
            let mut b = Vec::new();
            for _ in 0..rng.below(4) {
                if fport == Some(20) {
                    let ops = [1, 2, 3, 4, 5, 6, 0x80, 0xff, 0, 7];
                    b.push(ops[rng.below(ops.len() as u64) as usize]);
                    b.extend((0..7).map(|_| rng.next() as u8));
                    if b[b.len() - 5] > 2 && rng.below(2) == 0 {
                        let at = b.len() - 5;
                        b[at] = rng.below(3) as u8; // a valid set_mode mode, mostly
                    }
                    continue;
                }
                match rng.below(5) {
                    0 => {
                        let mut r: Vec<u8> = (0..12).map(|_| rng.next() as u8).collect();
                        r[0] &= 0x7f;
                        if rng.below(5) != 0 {
                            // soc_pct (bits 54..=60) valid or unknown
                            let soc = if rng.below(8) == 0 {
                                127
                            } else {
                                rng.below(101)
                            };
                            let v = u128::from_be_bytes({
                                let mut w = [0u8; 16];
                                w[4..].copy_from_slice(&r);
                                w
                            });
                            let v = (v & !(0x7f << 35)) | ((soc as u128) << 35);
                            r.copy_from_slice(&v.to_be_bytes()[4..]);
                        }
                        b.extend(r);
                    }
                    k => {
                        let (head, len) =
                            [(0x84, 4), (0x95, 5), (0xa4, 4), (0xb3, 3)][k as usize - 1];
                        b.push(head);
                        b.extend((0..len).map(|_| rng.next() as u8));
                        if head == 0x84 {
                            let at = b.len() - 1;
                            b[at] %= 8; // results 0..=6 valid, 7 not
                        }
                        if head == 0xa4 && rng.below(2) == 0 {
                            let at = b.len() - 1;
                            b[at] = [0, 1, 2, 3, 4, 5, 255][rng.below(7) as usize];
                        }
                    }
                }
            }
            match rng.below(6) {
                0 if !b.is_empty() => {
                    let cut = rng.below(b.len() as u64) as usize;
                    b.truncate(cut);
                }
                1 if !b.is_empty() => {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] = rng.next() as u8;
                }
                _ => {}
            }
            (fport, b)
        })
        .collect()
}

#[test]
fn on_payloads_it_has_never_seen_the_codec_agrees_with_the_bridge_record_for_record_and_error_for_error()
 {
    let codec = codec();
    let cases = payloads(600);
    let calls: Vec<(&str, Value)> = cases
        .iter()
        .map(|(fport, bytes)| {
            let function = if *fport == Some(20) {
                "decodeDownlink"
            } else {
                "decodeUplink"
            };
            (function, json!({"bytes": bytes, "fPort": fport}))
        })
        .collect();
    let from_node = node(&codec, &calls);
    let (mut ok, mut refused) = (0, 0);
    for (((fport, bytes), (function, input)), from_node) in cases.iter().zip(&calls).zip(from_node)
    {
        let raw = bridge(*fport, bytes);
        let want = raw.as_ref().map(numeric).map_err(Clone::clone);
        let from_quickjs = quickjs(&codec, function, input);
        let what = format!("{function} fPort {fport:?} {}", hex::encode(bytes));
        assert_eq!(verdict(&numeric(&from_quickjs)), want, "QuickJS {what}");
        assert_eq!(verdict(&numeric(&from_node)), want, "Node {what}");
        if want.is_ok() {
            ok += 1;
            // and what decodes as commands encodes back as the bridge encodes it (the
            // same bytes, but for reserved argument bytes, which decoding ignores)
            if *fport == Some(20) {
                let frames = raw.unwrap()["records"].clone();
                let again = quickjs(
                    &codec,
                    "encodeDownlink",
                    &json!({"data": {"records": frames}}),
                );
                let by_bridge = cli::encode_command(&frames.to_string()).unwrap();
                assert_eq!(again["bytes"], json!(bytes_of(&by_bridge)), "{what}");
            }
        } else {
            refused += 1;
        }
    }
    // both kinds of verdict are exercised
    assert!(ok > 100 && refused > 100, "{ok} decoded, {refused} refused");
}

#[test]
fn frames_the_bridge_refuses_the_codec_refuses_naming_the_field() {
    let codec = codec();
    let bad = [
        (json!({"command": "lock"}), "counter"),
        (json!({"counter": 70000, "command": "lock"}), "counter"),
        (json!({"counter": 1.5, "command": "lock"}), "counter"),
        (json!({"counter": 1, "command": "fly"}), "command"),
        (json!({"counter": 1}), "command"),
        (
            json!({"counter": 1, "command": "set_interval", "args": {"interval_s": 0}}),
            "interval_s",
        ),
        (
            json!({"counter": 1, "command": "set_interval", "args": {"interval_s": 16777216}}),
            "interval_s",
        ),
        (
            json!({"counter": 1, "command": "set_interval"}),
            "interval_s",
        ),
        (
            json!({"counter": 1, "command": "set_mode", "args": {"mode": "fast"}}),
            "mode",
        ),
        (
            json!({"counter": 1, "command": "unlock", "args": {"auto_relock": 30}}),
            "auto_relock",
        ),
        (
            json!({"counter": 1, "command": "unlock", "args": {"auto_relock_s": -1}}),
            "auto_relock_s",
        ),
        (
            json!({"counter": 1, "command": "raw", "args": {"opcode": 128}}),
            "opcode",
        ),
        (
            json!({"counter": 1, "command": "raw", "args": {"opcode": 1, "data": "012"}}),
            "data",
        ),
        (json!([1, 2]), "object"),
    ];
    for (frame, field) in bad {
        assert!(
            cli::encode_command(&frame.to_string()).is_err() || frame.is_array(),
            "the bridge takes {frame}"
        );
        for out in [
            quickjs(&codec, "encodeDownlink", &json!({"data": frame})),
            node(&codec, &[("encodeDownlink", json!({"data": frame}))]).remove(0),
        ] {
            let errors = out["errors"].as_array().unwrap();
            assert!(
                errors.len() == 1 && errors[0].as_str().unwrap().contains(field),
                "{frame}: {out}"
            );
            assert!(out.get("bytes").is_none(), "{frame}: {out}");
        }
    }
    // in a list, the error says which frame
    let out = quickjs(
        &codec,
        "encodeDownlink",
        &json!({"data": {"records": [{"counter": 1, "command": "lock"}, {"counter": 2}]}}),
    );
    assert_eq!(out["errors"][0], "records[1] command: missing");
}

/// The Things Stack's device repository entry (`deploy/codec/longproto-v1-codec.yaml`):
/// every LoRaWAN vector as an example, with the output the codec gives (JSON is YAML).
/// Written again with `LONGPROTO_BLESS=1`.
#[test]
fn the_things_stack_codec_entry_lists_every_lorawan_vector_with_the_codecs_output() {
    let codec = codec();
    let example = |name: &Value, input: Value, output: Value| {
        format!(
            "    - description: {}\n      input: {}\n      output: {}\n",
            name, input, output
        )
    };
    let (mut up, mut down_enc, mut down_dec) = (String::new(), String::new(), String::new());
    for v in vectors("longproto-v1.json") {
        let Some(fport) = v["fport"].as_u64() else {
            continue; // a Sigfox payload: no fPort, not for a LoRaWAN server
        };
        let input = json!({"fPort": fport, "bytes": bytes_of(v["hex"].as_str().unwrap())});
        let out = quickjs(&codec, "decodeUplink", &input);
        up += &example(&v["name"], input, out);
    }
    for v in vectors("commands.json") {
        let bytes = bytes_of(v["hex"].as_str().unwrap());
        let input = json!({"data": {"records": v["json"]}});
        let out = quickjs(&codec, "encodeDownlink", &input);
        down_enc += &example(&v["name"], input, out);
        let input = json!({"fPort": 20, "bytes": bytes});
        let out = quickjs(&codec, "decodeDownlink", &input);
        down_dec += &example(&v["name"], input, out);
    }
    let text = format!(
        "# The Things Stack device repository codec entry for longproto-v1 (vendor/<you>/…):\n\
         # the functions are in longproto-v1.js; the examples are device-node/vectors with the\n\
         # codec's own output. Generated by bridge/tests/it/codec_js.rs (LONGPROTO_BLESS=1).\n\
         uplinkDecoder:\n  fileName: longproto-v1.js\n  examples:\n{up}\
         downlinkEncoder:\n  fileName: longproto-v1.js\n  examples:\n{down_enc}\
         downlinkDecoder:\n  fileName: longproto-v1.js\n  examples:\n{down_dec}"
    );
    let path = format!(
        "{}/../deploy/codec/longproto-v1-codec.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("LONGPROTO_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).unwrap_or_default() == text,
        "{path} differs from the vectors and the codec's output; write it again with \
         LONGPROTO_BLESS=1 cargo nextest run -p longproto-bridge codec_js"
    );
}
