//! Property tests: round trips for every representable value, and no panic for any
//! input, plus one test per decode error with its byte offset.
use device_node::cayenne;
use device_node::command::{self, Command, CommandFrame, Mode};
use device_node::error::{DecodeError, DecodeErrorKind};
use device_node::telemetry::{self, FixAge, Record, Saturated, Status};
use proptest::prelude::*;

fn decode_all(bytes: &[u8], fport: Option<u8>) -> Result<Vec<Record>, DecodeError> {
    telemetry::decode_uplink(bytes, fport)?.collect()
}

fn encode_all(records: &[Record]) -> Vec<u8> {
    let mut out = [0u8; 512];
    let (n, _) = telemetry::encode_uplink(records, &mut out).unwrap();
    out[..n].to_vec()
}

/// A status record's 12 bytes with valid fields (soc 0..=100 or 127).
fn status_bytes() -> impl Strategy<Value = [u8; 12]> {
    (any::<[u8; 12]>(), prop_oneof![0u32..=100, Just(127)]).prop_map(|(mut b, soc)| {
        let mut wide = [0u8; 16];
        wide[4..].copy_from_slice(&b);
        let mut v = u128::from_be_bytes(wide) & ((1u128 << 95) - 1); // leading 0 bit
        v = (v & !(0x7f << 35)) | ((soc as u128) << 35);
        b.copy_from_slice(&v.to_be_bytes()[4..]);
        b
    })
}

fn any_status() -> impl Strategy<Value = Status> {
    (
        (
            any::<i32>(),
            any::<i32>(),
            0usize..8,
            proptest::option::of(0u8..=255),
        ),
        (any::<[bool; 3]>(), any::<u16>(), any::<i16>(), any::<u32>()),
    )
        .prop_map(|((lat, lon, fix, soc), (flags, speed, temp, odo))| Status {
            latitude_e7: lat,
            longitude_e7: lon,
            fix_age: FixAge::from_secs(
                [
                    Some(1),
                    Some(20),
                    Some(100),
                    Some(600),
                    Some(3600),
                    Some(9000),
                    Some(99_999),
                    None,
                ][fix],
            ),
            soc_pct: soc,
            locked: flags[0],
            ignition: flags[1],
            charging: flags[2],
            speed_kmh: speed,
            cabin_temp_c: temp,
            odometer_km: odo,
            saturated: Saturated::empty(),
        })
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Lock),
        any::<u16>().prop_map(|auto_relock_s| Command::Unlock { auto_relock_s }),
        Just(Command::Locate),
        (1u32..=command::MAX_INTERVAL_S).prop_map(|interval_s| Command::SetInterval { interval_s }),
        (0usize..3, any::<u16>(), any::<u16>()).prop_map(|(m, duration_s, interval_s)| {
            Command::SetMode {
                mode: [Mode::Normal, Mode::Active, Mode::Storage][m],
                duration_s,
                interval_s,
            }
        }),
        any::<u16>().prop_map(|delay_s| Command::Reboot { delay_s }),
        (0u8..=127, any::<[u8; 5]>()).prop_map(|(opcode, data)| Command::Raw { opcode, data }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every valid status record decodes, and encodes back to the same 12 bytes.
    #[test]
    fn status_bytes_round_trip(b in status_bytes()) {
        let recs = decode_all(&b, None).unwrap();
        prop_assert_eq!(recs.len(), 1);
        prop_assert_eq!(encode_all(&recs), b.to_vec());
    }

    /// Any status, however out of range: encoding never wraps, decoding the result gives
    /// values within the wire's resolution of the (clamped) input, and the decoded record
    /// encodes to the same bytes again.
    #[test]
    fn status_values_round_trip(s in any_status()) {
        let mut out = [0u8; 12];
        let (_, sat) = Record::Status(s).encode(&mut out).unwrap();
        let Record::Status(d) = decode_all(&out, None).unwrap()[0] else { panic!() };
        let lat = (s.latitude_e7 as i64).clamp(-900_000_000, 900_000_000);
        let lon = (s.longitude_e7 as i64).clamp(-1_800_000_000, 1_800_000_000);
        // half a step: 180°/(2^23-1)/2 and 360°/(2^24-1)/2, in 1e-7 degrees
        prop_assert!((d.latitude_e7 as i64 - lat).abs() <= 108, "lat {} -> {}", lat, d.latitude_e7);
        prop_assert!((d.longitude_e7 as i64 - lon).abs() <= 108, "lon {} -> {}", lon, d.longitude_e7);
        prop_assert_eq!(d.soc_pct, s.soc_pct.map(|v| v.min(100)));
        prop_assert_eq!(sat.contains(Saturated::SOC), s.soc_pct.is_some_and(|v| v > 100));
        prop_assert_eq!(d.speed_kmh, s.speed_kmh.min(255));
        prop_assert_eq!(d.cabin_temp_c, s.cabin_temp_c.clamp(-40, 85));
        prop_assert_eq!(d.saturated.contains(Saturated::TEMPERATURE), !(-40..=85).contains(&s.cabin_temp_c));
        prop_assert_eq!(d.odometer_km, s.odometer_km.min((1 << 20) - 1));
        prop_assert_eq!((d.locked, d.ignition, d.charging, d.fix_age), (s.locked, s.ignition, s.charging, s.fix_age));
        let mut again = [0u8; 12];
        Record::Status(d).encode(&mut again).unwrap();
        prop_assert_eq!(again, out);
    }

    /// Every valid command frame round-trips exactly.
    #[test]
    fn command_frames_round_trip(counter in any::<u16>(), command in any_command()) {
        let f = CommandFrame { counter, command };
        let bytes = f.encode().unwrap();
        prop_assert_eq!(CommandFrame::decode(&bytes, 0).unwrap(), f);
    }

    /// Arbitrary bytes on any fPort: an error or records, never a panic; whatever decodes
    /// re-encodes to a prefix-compatible payload that decodes to the same records.
    #[test]
    fn arbitrary_uplinks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), fport in proptest::option::of(any::<u8>())) {
        if let Ok(records) = telemetry::decode_uplink(&bytes, fport) {
            let ok: Vec<Record> = records.filter_map(Result::ok).collect();
            let again = encode_all(&ok);
            prop_assert_eq!(decode_all(&again, None).unwrap(), ok);
        }
    }

    /// Arbitrary downlinks and CayenneLPP payloads: never a panic.
    #[test]
    fn arbitrary_downlinks_and_lpp_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for f in command::decode_downlink(&bytes).flatten() {
            prop_assert_eq!(CommandFrame::decode(&f.encode().unwrap(), 0).unwrap(), f);
        }
        let lpp: Vec<_> = cayenne::decode(&bytes).filter_map(Result::ok).collect();
        let mut out = [0u8; 128];
        let n = cayenne::encode(&lpp, &mut out).unwrap();
        let back: Vec<_> = cayenne::decode(&out[..n]).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back, lpp);
    }
}

fn err(bytes: &[u8], fport: Option<u8>) -> DecodeError {
    decode_all(bytes, fport).unwrap_err()
}

#[test]
fn errors_name_the_byte() {
    let status = hex::decode("096e24b5e600f6b803e03039").unwrap();

    let mut short = status.clone();
    short.truncate(7);
    assert_eq!(
        err(&short, None),
        DecodeError {
            offset: 0,
            kind: DecodeErrorKind::Truncated {
                needed: 12,
                available: 7
            }
        }
    );

    let mut two = status.clone();
    two.extend_from_slice(&[0x80 | 4, 0, 0]); // an ack header (len 4) with 2 body bytes
    assert_eq!(
        err(&two, Some(10)),
        DecodeError {
            offset: 12,
            kind: DecodeErrorKind::Truncated {
                needed: 5,
                available: 3
            }
        }
    );

    assert_eq!(
        err(&status, Some(12)).kind,
        DecodeErrorKind::UnknownVersion { version: 3 }
    );
    assert_eq!(
        err(&status, Some(1)).kind,
        DecodeErrorKind::UnexpectedPort { fport: 1 }
    );
    assert_eq!(
        err(&status, Some(20)).kind,
        DecodeErrorKind::UnexpectedPort { fport: 20 }
    );

    // state of charge 101: bits 54..60 of the record, i.e. in byte 4 onwards
    let mut bad_soc = [0u8; 12];
    let v: u128 = 101u128 << 35;
    bad_soc.copy_from_slice(&v.to_be_bytes()[4..]);
    assert_eq!(
        err(&bad_soc, None),
        DecodeError {
            offset: 4,
            kind: DecodeErrorKind::ValueOutOfRange { field: "soc_pct" }
        }
    );

    // a tagged record cannot be longer than 11 bytes
    assert_eq!(
        err(&[0x8c; 13], None).kind,
        DecodeErrorKind::ValueOutOfRange { field: "length" }
    );
    // an ack needs 4 body bytes
    assert_eq!(
        err(&[0x83, 0, 1, 2], None).kind,
        DecodeErrorKind::ValueOutOfRange { field: "length" }
    );
    // an ack result this version does not know
    assert_eq!(
        err(&[0x84, 0, 1, 2, 9], None),
        DecodeError {
            offset: 4,
            kind: DecodeErrorKind::ValueOutOfRange { field: "result" }
        }
    );

    let errors: Vec<_> =
        command::decode_downlink(&[1, 0, 1, 0, 0, 0, 0, 0, 0x07, 0, 2, 0, 0, 0, 0, 0]).collect();
    assert_eq!(
        errors[1],
        Err(DecodeError {
            offset: 8,
            kind: DecodeErrorKind::UnknownKind { kind: 7 }
        })
    );
    let errors: Vec<_> = command::decode_downlink(&[1, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3]).collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[1],
        Err(DecodeError {
            offset: 8,
            kind: DecodeErrorKind::TrailingBytes { count: 3 }
        })
    );
    let errors: Vec<_> = command::decode_downlink(&[4, 0, 1, 0, 0, 0, 0, 0]).collect();
    assert_eq!(
        errors[0],
        Err(DecodeError {
            offset: 3,
            kind: DecodeErrorKind::ValueOutOfRange {
                field: "interval_s"
            }
        })
    );
    let errors: Vec<_> = command::decode_downlink(&[5, 0, 1, 9, 0, 0, 0, 0]).collect();
    assert_eq!(
        errors[0],
        Err(DecodeError {
            offset: 3,
            kind: DecodeErrorKind::ValueOutOfRange { field: "mode" }
        })
    );

    let lpp: Vec<_> = cayenne::decode(&[1, 0x67, 0, 10, 2, 0xee, 0]).collect();
    assert_eq!(
        lpp[1],
        Err(DecodeError {
            offset: 5,
            kind: DecodeErrorKind::UnknownKind { kind: 0xee }
        })
    );
    let lpp: Vec<_> = cayenne::decode(&[1, 0x88, 0, 10]).collect();
    assert_eq!(
        lpp[0],
        Err(DecodeError {
            offset: 0,
            kind: DecodeErrorKind::Truncated {
                needed: 11,
                available: 4
            }
        })
    );

    assert_eq!(
        err(&short, None).to_string(),
        "at byte 0: truncated: needs 12 bytes, 7 remain"
    );
}

#[test]
fn newer_fields_appended_to_a_known_kind_are_ignored() {
    // an ack with two more body bytes than v1 knows (length 6)
    let recs = decode_all(&[0x86, 0, 7, 2, 0, 0xaa, 0xbb, 0x84, 0, 8, 1, 0], Some(10)).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(matches!(recs[0], Record::Ack(a) if a.counter == 7));
    assert!(matches!(recs[1], Record::Ack(a) if a.counter == 8));
}

#[test]
fn commands_never_change_to_fit() {
    let f = CommandFrame {
        counter: 1,
        command: Command::SetInterval {
            interval_s: 1 << 24,
        },
    };
    assert!(f.encode().is_err());
    let f = CommandFrame {
        counter: 1,
        command: Command::SetInterval { interval_s: 0 },
    };
    assert!(f.encode().is_err());
    let f = CommandFrame {
        counter: 1,
        command: Command::Raw {
            opcode: 128,
            data: [0; 5],
        },
    };
    assert!(f.encode().is_err());
}

#[test]
fn encode_reports_a_small_buffer() {
    let mut out = [0u8; 14];
    let r = Record::Ack(telemetry::Ack {
        counter: 1,
        opcode: 1,
        result: telemetry::AckResult::Executed,
    });
    let status = decode_all(&hex::decode("096e24b5e600f6b803e03039").unwrap(), None).unwrap()[0];
    assert_eq!(
        telemetry::encode_uplink(&[status, r], &mut out),
        Err(device_node::EncodeError::BufferTooSmall { needed: 17 })
    );
    // `needed` is what all the records take, not only the one that did not fit: a
    // buffer of that size takes them
    let three = [status, r, r];
    let Err(device_node::EncodeError::BufferTooSmall { needed }) =
        telemetry::encode_uplink(&three, &mut out)
    else {
        panic!("14 bytes do not take 22")
    };
    assert_eq!(needed, 22);
    let mut exact = vec![0u8; needed];
    assert_eq!(telemetry::encode_uplink(&three, &mut exact).unwrap().0, 22);
}
