//! Decode and encode cost per record kind, against two baselines measured in the same
//! run: copying the bytes (the floor) and parsing the same record from JSON with
//! serde_json (what a self-describing format would cost).
//!
//! cargo bench -p device-node --bench codec
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use device_node::cayenne;
use device_node::command::{self, CommandFrame};
use device_node::telemetry::{self, Record};
use std::hint::black_box;

const STATUS: &str = "096e24b5e600f6b803e03039";
const ACK: &str = "84002a0200";
const EVENT: &str = "950200230004";
const BOOT: &str = "a401040202";
const MIXED: &str = "058af84a06b0d1e863d014008400070200950500030000";
const UNLOCK: &str = "02002a001e000000";
const LPP: &str = "03670110056700ff018806765ff2960a0003e8";

fn decode_one(bytes: &[u8]) -> Option<Record> {
    telemetry::decode_uplink(bytes, None).ok()?.next()?.ok()
}

fn bench(c: &mut Criterion) {
    let status = hex::decode(STATUS).unwrap();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_copy_12_bytes", |b| {
        b.iter(|| {
            let mut out = [0u8; 12];
            out.copy_from_slice(black_box(&status));
            black_box(out)
        })
    });
    for (name, hex) in [
        ("status", STATUS),
        ("ack", ACK),
        ("event", EVENT),
        ("boot", BOOT),
    ] {
        let bytes = hex::decode(hex).unwrap();
        assert!(decode_one(&bytes).is_some(), "{name}");
        g.bench_function(name, |b| b.iter(|| decode_one(black_box(&bytes))));
    }
    let mixed = hex::decode(MIXED).unwrap();
    g.bench_function("status_ack_event_payload", |b| {
        b.iter(|| {
            telemetry::decode_uplink(black_box(&mixed), Some(10))
                .unwrap()
                .filter(Result::is_ok)
                .count()
        })
    });
    let json = serde_json::to_string(&decode_one(&status).unwrap()).unwrap();
    g.bench_function("baseline_serde_json_status", |b| {
        b.iter(|| serde_json::from_str::<Record>(black_box(&json)).unwrap())
    });
    let unlock = hex::decode(UNLOCK).unwrap();
    g.bench_function("command_frame", |b| {
        b.iter(|| {
            command::decode_downlink(black_box(&unlock))
                .next()
                .unwrap()
                .unwrap()
        })
    });
    let lpp = hex::decode(LPP).unwrap();
    g.bench_function("cayenne_3_items", |b| {
        b.iter(|| {
            cayenne::decode(black_box(&lpp))
                .filter(Result::is_ok)
                .count()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for (name, hex) in [
        ("status", STATUS),
        ("ack", ACK),
        ("event", EVENT),
        ("boot", BOOT),
    ] {
        let rec = decode_one(&hex::decode(hex).unwrap()).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut out = [0u8; 12];
                black_box(&rec).encode(&mut out).unwrap();
                out
            })
        });
    }
    let frame: CommandFrame = command::decode_downlink(&unlock).next().unwrap().unwrap();
    g.bench_function("command_frame", |b| {
        b.iter(|| black_box(&frame).encode().unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
