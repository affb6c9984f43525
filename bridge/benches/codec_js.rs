//! The JavaScript codec (`deploy/codec/longproto-v1.js`) against the bridge's own decoder,
//! in the same run, on the same uplinks (the LoRaWAN vectors of device-node/vectors,
//! round-robin):
//! - Rust: `Codec::decode_uplink` and the decode JSON, as the bridge builds it;
//! - QuickJS as ChirpStack calls a codec: a fresh runtime and context per uplink, the
//!   codec evaluated, `decodeUplink(chirpstack_input)` called, the result read back;
//! - the same with a codec that does nothing: the engine's share of that;
//! - QuickJS with one context kept (the codec evaluated once): what the context costs;
//! - Node.js: the codec in one V8 context, called in a loop (timed inside Node).
//!
//! cargo bench -p longproto-bridge --bench codec_js
//! (`LONGPROTO_BENCH_SECS=10` runs each case longer)
use longproto_bridge::pipeline::codec::Codec;
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn secs() -> f64 {
    std::env::var("LONGPROTO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

fn codec() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/codec/longproto-v1.js"
    ))
    .unwrap()
}

fn uplinks() -> Vec<(u8, Vec<u8>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../device-node/vectors/longproto-v1.json"
    );
    let vectors: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    vectors
        .iter()
        .filter_map(|v| {
            Some((
                v["fport"].as_u64()? as u8,
                hex::decode(v["hex"].as_str().unwrap()).unwrap(),
            ))
        })
        .collect()
}

/// Decodes per second of `one(i)` over `secs()` seconds.
fn rate(mut one: impl FnMut(usize)) -> f64 {
    for i in 0..100 {
        one(i);
    }
    let until = Instant::now() + Duration::from_secs_f64(secs());
    let start = Instant::now();
    let mut n = 0;
    while Instant::now() < until {
        for _ in 0..50 {
            one(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn rust(uplinks: &[(u8, Vec<u8>)], i: usize) -> String {
    let (fport, bytes) = &uplinks[i % uplinks.len()];
    let records = Codec::LongprotoV1
        .decode_uplink(bytes, Some(*fport))
        .unwrap();
    json!({"codec": "longproto-v1", "direction": "uplink", "fport": fport,
           "raw_hex": hex::encode(bytes), "records": records})
    .to_string()
}

fn quickjs_fresh(codec: &str, uplinks: &[(u8, Vec<u8>)], i: usize) -> String {
    let (fport, bytes) = &uplinks[i % uplinks.len()];
    let rt = rquickjs::Runtime::new().unwrap();
    let ctx = rquickjs::Context::full(&rt).unwrap();
    ctx.with(|ctx| {
        let input = rquickjs::Object::new(ctx.clone()).unwrap();
        input.set("bytes", bytes.clone()).unwrap();
        input.set("fPort", *fport).unwrap();
        ctx.globals().set("chirpstack_input", input).unwrap();
        let mut options = rquickjs::context::EvalOptions::default();
        options.strict = false;
        let script = format!("{codec}\n\nJSON.stringify(decodeUplink(chirpstack_input))");
        ctx.eval_with_options::<String, _>(script, options).unwrap()
    })
}

fn main() {
    let codec = codec();
    let uplinks = uplinks();
    println!(
        "the JavaScript codec: {} LoRaWAN uplinks round-robin, {} s per case",
        uplinks.len(),
        secs()
    );
    // the same answer from each, first
    let want: Value = serde_json::from_str(&rust(&uplinks, 0)).unwrap();
    let got: Value = serde_json::from_str(&quickjs_fresh(&codec, &uplinks, 0)).unwrap();
    assert_eq!(got["data"]["raw_hex"], want["raw_hex"]);

    let rust_rate = rate(|i| {
        black_box(rust(&uplinks, i));
    });
    let fresh_rate = rate(|i| {
        black_box(quickjs_fresh(&codec, &uplinks, i));
    });
    // the engine's own share: a fresh context running a codec that does nothing
    let trivial = "function decodeUplink(input) { return {data: {n: input.bytes.length}}; }";
    let trivial_rate = rate(|i| {
        black_box(quickjs_fresh(trivial, &uplinks, i));
    });
    let rt = rquickjs::Runtime::new().unwrap();
    let ctx = rquickjs::Context::full(&rt).unwrap();
    ctx.with(|ctx| {
        let _: () = ctx.eval(codec.as_str()).unwrap();
    });
    let warm_rate = rate(|i| {
        let (fport, bytes) = &uplinks[i % uplinks.len()];
        ctx.with(|ctx| {
            let input = rquickjs::Object::new(ctx.clone()).unwrap();
            input.set("bytes", bytes.clone()).unwrap();
            input.set("fPort", *fport).unwrap();
            ctx.globals().set("chirpstack_input", input).unwrap();
            let out: String = ctx
                .eval("JSON.stringify(decodeUplink(chirpstack_input))")
                .unwrap();
            black_box(out);
        })
    });
    let node_rate = node(&codec, &uplinks);

    println!("| case | decodes/s | ÷ Rust |");
    println!("|---|---:|---:|");
    for (case, r) in [
        ("Rust decoder + decode JSON (baseline)", rust_rate),
        (
            "QuickJS, fresh context per uplink (as ChirpStack)",
            fresh_rate,
        ),
        (
            "QuickJS, fresh context, a codec that does nothing",
            trivial_rate,
        ),
        ("QuickJS, one context kept", warm_rate),
        ("Node.js (V8), one context", node_rate),
    ] {
        println!("| {case} | {r:.0} | {:.4} |", r / rust_rate);
    }
    println!(
        "per uplink: Rust {:.2} µs, QuickJS fresh {:.1} µs, QuickJS kept {:.2} µs, Node {:.2} µs",
        1e6 / rust_rate,
        1e6 / fresh_rate,
        1e6 / warm_rate,
        1e6 / node_rate
    );
}

/// Decodes per second in Node.js, timed inside Node after a warm-up.
fn node(codec: &str, uplinks: &[(u8, Vec<u8>)]) -> f64 {
    let inputs: Vec<Value> = uplinks
        .iter()
        .map(|(p, b)| json!({"fPort": p, "bytes": b}))
        .collect();
    let harness = r#"
const vm = require("vm");
const [codec, inputs, secs] = JSON.parse(require("fs").readFileSync(0, "utf8"));
const sandbox = { inputs };
vm.createContext(sandbox);
vm.runInContext(codec + `
function __run(n) {
  var out = 0;
  for (var i = 0; i < n; i++) out += JSON.stringify(decodeUplink(inputs[i % inputs.length])).length;
  return out;
}`, sandbox);
sandbox.__run(20000);
const start = process.hrtime.bigint();
let n = 0;
while (Number(process.hrtime.bigint() - start) / 1e9 < secs) { sandbox.__run(1000); n += 1000; }
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
process.stdout.write(String(n / elapsed));
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("node")
        .arg("-e")
        .arg(harness)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!([codec, inputs, secs()]).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
