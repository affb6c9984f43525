#!/usr/bin/env python3
"""Writes device-node/vectors/*.json from an independent reference encoder of
docs/wire-format.md (this file), so the Rust implementation is checked against a second
reading of the specification, not against itself.

    python3 tools/wire_vectors.py          # rewrite the vector files
    python3 tools/wire_vectors.py --check  # exit 1 if they differ from what is committed
"""
import json
import struct
import pathlib
import sys

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "device-node" / "vectors"

LAT_MAX, LON_MAX = (1 << 23) - 1, (1 << 24) - 1
FIX = ["<10s", "<1min", "<5min", "<30min", "<2h", "<12h", ">=12h", "none"]


def quantize(e7, half, mx):
    v = max(-half, min(half, e7)) + half
    span = 2 * half
    return (v * mx + span // 2) // span


def dequantize(code, half, mx):
    span = 2 * half
    return (code * span + mx // 2) // mx - half


def status(lat, lon, fix="<10s", soc=80, locked=True, ignition=False, charging=False,
           speed=0, temp=20, odo=0):
    """Encodes a status record from natural values; returns (hex, decoded json)."""
    lat_e7, lon_e7 = round(lat * 1e7), round(lon * 1e7)
    lat_c = quantize(lat_e7, 900_000_000, LAT_MAX)
    lon_c = quantize(lon_e7, 1_800_000_000, LON_MAX)
    sat = []
    soc_c = 127 if soc is None else min(soc, 100)
    speed_c = min(speed, 255)
    if speed_c == 255:
        sat.append("speed_kmh")
    if temp < -40:
        temp_c = 0
    elif temp > 85:
        temp_c = 127
    else:
        temp_c = temp + 41
    if temp_c in (0, 127):
        sat.append("cabin_temp_c")
    odo_c = min(odo, (1 << 20) - 1)
    if odo_c == (1 << 20) - 1:
        sat.append("odometer_km")
    fields = [(1, 0), (3, FIX.index(fix)), (1, int(locked)), (1, int(ignition)),
              (1, int(charging)), (23, lat_c), (24, lon_c), (7, soc_c), (8, speed_c),
              (7, temp_c), (20, odo_c)]
    v = 0
    for width, value in fields:
        assert 0 <= value < (1 << width)
        v = (v << width) | value
    rec = {
        "kind": "status",
        "latitude": dequantize(lat_c, 900_000_000, LAT_MAX) / 1e7,
        "longitude": dequantize(lon_c, 1_800_000_000, LON_MAX) / 1e7,
        "fix_age": fix,
        "soc_pct": None if soc is None else soc_c,
        "locked": locked,
        "ignition": ignition,
        "charging": charging,
        "speed_kmh": speed_c,
        "cabin_temp_c": -40 if temp_c == 0 else 85 if temp_c == 127 else temp_c - 41,
        "odometer_km": odo_c,
    }
    # the order of Saturated::NAMES
    order = ["speed_kmh", "cabin_temp_c", "odometer_km"]
    if sat:
        rec["saturated"] = [n for n in order if n in sat]
    return v.to_bytes(12, "big").hex(), rec


def tagged(kind, body):
    assert len(body) <= 11
    return bytes([0x80 | kind << 4 | len(body)]) + bytes(body)


RESULTS = ["executed", "already_executed", "unknown_command", "bad_arguments", "not_now",
           "stale", "failed"]
EVENTS = {1: "tamper", 2: "crash", 3: "low_battery", 4: "geofence_exit", 5: "geofence_enter",
          6: "unauthorised_movement", 7: "battery_removed", 8: "fall"}
RESETS = {0: "power_on", 1: "watchdog", 2: "software", 3: "brown_out", 4: "panic", 5: "pin",
          255: "unknown"}


def ack(counter, opcode, result):
    raw = tagged(0, [counter >> 8, counter & 255, opcode, RESULTS.index(result)])
    return raw.hex(), {"kind": "ack", "counter": counter, "opcode": opcode, "result": result}


def event(code, value, age):
    raw = tagged(1, [code, value >> 8, value & 255, age >> 8, age & 255])
    name = EVENTS.get(code, f"event_{code}")
    return raw.hex(), {"kind": "event", "event": name, "value": value, "age_s": age}


def boot(fw, reason):
    raw = tagged(2, list(fw) + [reason])
    return raw.hex(), {"kind": "boot", "firmware": list(fw), "reset_reason": RESETS[reason]}


def unknown(kind, body):
    return tagged(kind, body).hex(), {"kind": "unknown", "code": kind, "hex": bytes(body).hex()}


def payload(*records):
    return "".join(h for h, _ in records), [j for _, j in records]


def telemetry_vectors():
    v = []

    def add(name, fport, recs):
        hx, js = recs
        v.append({"name": name, "codec": "longproto-v1", "fport": fport, "hex": hx, "json": js})

    add("status_parked_lisbon_sigfox", None,
        payload(status(38.7223, -9.1393, soc=87, temp=21, odo=12345)))
    add("status_riding_berlin", 10,
        payload(status(52.52, 13.405, fix="<10s", soc=54, locked=False, ignition=True,
                       speed=23, temp=18, odo=40211)))
    add("status_charging_no_fix_unknown_soc", 10,
        payload(status(0, 0, fix="none", soc=None, charging=True, temp=-5, odo=7)))
    add("status_old_fix_southern_hemisphere", None,
        payload(status(-33.8688, 151.2093, fix=">=12h", soc=3, temp=35, odo=999_999)))
    add("status_each_fix_age_lt5min", 10, payload(status(45.0, 7.0, fix="<5min")))
    add("status_limits_low", 10,
        payload(status(-90, -180, fix="<1min", soc=0, locked=False, temp=-40, odo=0)))
    add("status_limits_high", 10,
        payload(status(90, 180, fix="<30min", soc=100, speed=254, temp=85, odo=1_000_000)))
    add("status_saturated_speed_cold_odometer", 10,
        payload(status(60.1699, 24.9384, fix="<2h", speed=300, temp=-55, odo=2_000_000)))
    add("status_saturated_hot", None, payload(status(25.2048, 55.2708, fix="<12h", temp=95)))
    add("ack_executed", None, payload(ack(42, 0x02, "executed")))
    add("ack_each_result", 10, payload(*[ack(1000 + i, 0x01, r) for i, r in enumerate(RESULTS)]))
    add("ack_counter_wrap", 10, payload(ack(65535, 0x03, "already_executed"), ack(0, 0x04, "executed")))
    add("event_crash", None, payload(event(2, 35, 4)))
    add("event_every_known", 10, payload(*[event(c, c * 10, c) for c in sorted(EVENTS)]))
    add("event_unknown_code_kept", 10, payload(event(42, 65535, 65535)))
    add("boot_after_reboot_command", None, payload(boot((1, 4, 2), 2)))
    add("boot_each_reason", 10, payload(*[boot((0, 1, 0), r) for r in sorted(RESETS)]))
    add("lorawan_status_ack_event", 10,
        payload(status(48.8566, 2.3522, soc=61, locked=False, ignition=True, speed=12, odo=5120),
                ack(7, 0x02, "executed"), event(5, 3, 0)))
    add("unknown_kind_skipped_then_ack", 10,
        payload(unknown(5, [1, 2, 3]), ack(9, 0x01, "not_now")))
    add("unknown_kind_empty_and_full", None,
        payload(unknown(3, []), unknown(7, list(range(11)))))
    add("empty_payload", 10, ("", []))
    return v


COMMANDS = {"lock": 1, "unlock": 2, "locate": 3, "set_interval": 4, "set_mode": 5, "reboot": 6}
MODES = ["normal", "active", "storage"]


def frame(counter, command, args=None):
    args = args or {}
    if command == "raw":
        op = 0x80 | args["opcode"]
        a = bytes.fromhex(args["data"]).ljust(5, b"\0")
    else:
        op = COMMANDS[command]
        if command == "unlock":
            a = args["auto_relock_s"].to_bytes(2, "big")
        elif command == "set_interval":
            a = args["interval_s"].to_bytes(3, "big")
        elif command == "set_mode":
            a = bytes([MODES.index(args["mode"])]) + args["duration_s"].to_bytes(2, "big") \
                + args["interval_s"].to_bytes(2, "big")
        elif command == "reboot":
            a = args["delay_s"].to_bytes(2, "big")
        else:
            a = b""
    raw = bytes([op]) + counter.to_bytes(2, "big") + a.ljust(5, b"\0")
    assert len(raw) == 8
    js = {"counter": counter, "command": command}
    if args:
        js["args"] = args
    return raw.hex(), js


def command_vectors():
    v = []

    def add(name, frames, fport=20):
        hx, js = payload(*frames)
        v.append({"name": name, "codec": "longproto-v1", "fport": fport, "hex": hx, "json": js})

    add("lock", [frame(1, "lock")])
    add("unlock_with_auto_relock", [frame(42, "unlock", {"auto_relock_s": 30})])
    add("unlock_no_relock", [frame(43, "unlock", {"auto_relock_s": 0})])
    add("locate", [frame(2, "locate")])
    add("set_interval_hour", [frame(3, "set_interval", {"interval_s": 3600})])
    add("set_interval_max", [frame(4, "set_interval", {"interval_s": (1 << 24) - 1})])
    add("set_mode_active_15s_for_5min",
        [frame(5, "set_mode", {"mode": "active", "duration_s": 300, "interval_s": 15})])
    add("set_mode_storage", [frame(6, "set_mode", {"mode": "storage", "duration_s": 0, "interval_s": 0})])
    add("reboot_in_5s", [frame(7, "reboot", {"delay_s": 5})])
    add("raw_vendor", [frame(8, "raw", {"opcode": 0x11, "data": "0102030405"})])
    add("raw_vendor_max_opcode", [frame(9, "raw", {"opcode": 127, "data": "ffffffffff"})])
    add("counter_zero_and_max", [frame(65535, "lock"), frame(0, "unlock", {"auto_relock_s": 65535})])
    add("coalesced_unlock_then_locate",
        [frame(10, "unlock", {"auto_relock_s": 60}), frame(11, "locate"),
         frame(12, "set_mode", {"mode": "active", "duration_s": 180, "interval_s": 15})])
    return v


def cayenne_vectors():
    v = []

    def add(name, hx, js, fport=1):
        v.append({"name": name, "codec": "cayenne-lpp", "fport": fport, "hex": hx, "json": js})

    # The three examples of the published CayenneLPP specification.
    add("spec_two_temperatures", "03670110056700ff",
        [{"channel": 3, "type": "temperature", "value": 27.2},
         {"channel": 5, "type": "temperature", "value": 25.5}])
    add("spec_accelerometer", "067104d2fb2e0000",
        [{"channel": 6, "type": "accelerometer", "value": {"x": 1.234, "y": -1.234, "z": 0.0}}])
    add("spec_gps", "018806765ff2960a0003e8",
        [{"channel": 1, "type": "gps",
          "value": {"latitude": 42.3519, "longitude": -87.9094, "altitude": 10.0}}])
    # One of each other type, values chosen here.
    add("humidity_and_barometer", "0168610273277f",
        [{"channel": 1, "type": "humidity", "value": 48.5},
         {"channel": 2, "type": "barometer", "value": 1011.1}])
    add("digital_analog", "0300010401000502012c0603ff38",
        [{"channel": 3, "type": "digital_input", "value": 1},
         {"channel": 4, "type": "digital_output", "value": 0},
         {"channel": 5, "type": "analog_input", "value": 3.0},
         {"channel": 6, "type": "analog_output", "value": -2.0}])
    add("voltage_current_percentage", "0774015e0875012c0978570a8e01",
        [{"channel": 7, "type": "voltage", "value": 3.5},
         {"channel": 8, "type": "current", "value": 0.3},
         {"channel": 9, "type": "percentage", "value": 87},
         {"channel": 10, "type": "switch", "value": 1}])
    add("illuminance_presence_altitude", "0165012c0266010379fff6",
        [{"channel": 1, "type": "illuminance", "value": 300},
         {"channel": 2, "type": "presence", "value": 1},
         {"channel": 3, "type": "altitude", "value": -10}])
    add("generic_frequency_unixtime", "016400000064027600000032038567890abc",
        [{"channel": 1, "type": "generic_sensor", "value": 100},
         {"channel": 2, "type": "frequency", "value": 50},
         {"channel": 3, "type": "unix_time", "value": 1737034428}])
    add("concentration_power_direction", "017d01900280000a0384010e",
        [{"channel": 1, "type": "concentration", "value": 400},
         {"channel": 2, "type": "power", "value": 10},
         {"channel": 3, "type": "direction", "value": 270}])
    add("distance_energy", "0182000004d20283000003e8",
        [{"channel": 1, "type": "distance", "value": 1.234},
         {"channel": 2, "type": "energy", "value": 1.0}])
    add("gyrometer_colour", "018600640000ff9c0287ff8000",
        [{"channel": 1, "type": "gyrometer", "value": {"x": 1.0, "y": 0.0, "z": -1.0}},
         {"channel": 2, "type": "colour", "value": {"r": 255, "g": 128, "b": 0}}])
    add("negative_temperature", "016bff9c".replace("6b", "67"),
        [{"channel": 1, "type": "temperature", "value": -10.0}])
    return v


def mac4(key, domain, device, data):
    """The first 4 bytes of AES-CMAC(key, domain | len(id) | id | data)."""
    c = cmac.CMAC(algorithms.AES(key))
    ident = device.encode("ascii")
    c.update(domain + bytes([len(ident)]) + ident + data)
    return c.finalize()[:4]


def sealed_vectors():
    """Sealed command frames and cellular polls (docs/wire-format.md, "Sealed frames")."""
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    other = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    frames, polls = [], []

    def add_frame(name, device, k, fr):
        raw = bytes.fromhex(fr[0])
        frames.append({"name": name, "device": device, "key": k.hex(), "frame": raw.hex(),
                       "sealed": (raw + mac4(k, b"F", device, raw)).hex()})

    add_frame("unlock_42", "cafe0001", key, frame(42, "unlock", {"auto_relock_s": 30}))
    add_frame("lock_1_other_key", "cafe0001", other, frame(1, "lock"))
    add_frame("locate_2_long_id", "0123456789abcdef0123456789abcdef", key, frame(2, "locate"))
    add_frame("raw_counter_max", "1", key, frame(65535, "raw", {"opcode": 0x11, "data": "0102030405"}))

    def add_poll(name, device, k, counter, wait_s, received, records_hex):
        flags = 0x01 | (0x80 if received is not None else 0)
        signed = bytes([flags]) + counter.to_bytes(4, "big") + wait_s.to_bytes(2, "big") \
            + (received or 0).to_bytes(2, "big") + bytes.fromhex(records_hex)
        polls.append({"name": name, "device": device, "key": k.hex(), "counter": counter,
                      "wait_s": wait_s, "received": received, "records": records_hex,
                      "body": (signed + mac4(k, b"R", device, signed)).hex()})

    add_poll("first_poll_no_records", "cafe0001", key, 1, 240, None, "")
    add_poll("ack_of_unlock_42", "cafe0001", key, 2, 240, 42, ack(42, 2, "executed")[0])
    add_poll("status_then_wait_60", "cafe0001", other, 70000, 60, None,
             status(38.7222944, -9.1393059, odo=12345, soc=87, temp=21)[0])
    add_poll("counter_max_no_wait", "0123456789abcdef0123456789abcdef", key, 0xFFFFFFFF, 0, 65535, "")
    return {"frames": frames, "polls": polls}


def sms_vectors():
    """Binary SMS user data (docs/wire-format.md, "SMS"): the user data header written
    from TS 23.040 itself (9.2.3.24: UDHL, then IEI 0x05 "application port addressing
    scheme, 16 bit address", IEDL 4, destination then originator port, big-endian)."""
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    out = []

    def ts23040_udh(dest, src):
        ie = bytes([0x05, 4]) + struct.pack(">HH", dest, src)
        return bytes([len(ie)]) + ie

    def sealed(device, counter, command, args=None):
        raw = bytes.fromhex(frame(counter, command, args)[0])
        return raw + mac4(key, b"F", device, raw)

    def add(name, device, kind, dest, src, payload, **extra):
        ud = ts23040_udh(dest, src) + payload
        assert len(ud) <= 140, name
        out.append({"name": name, "device": device, "key": key.hex(), "kind": kind,
                    "dest_port": dest, "src_port": src, "user_data": ud.hex(), **extra})

    dev = "ce11000000000c01"
    one = sealed(dev, 7, "unlock", {"auto_relock_s": 30})
    add("frames_one_unlock", dev, "frames", 49999, 49999, bytes([0x01]) + one,
        counters=[7])
    eleven = b"".join(sealed(dev, c, "locate") for c in range(100, 111))
    add("frames_eleven_fill_133", dev, "frames", 49999, 0, bytes([0x01]) + eleven,
        counters=list(range(100, 111)))
    at = 1_796_000_000
    w = bytes([0x02]) + struct.pack(">I", at)
    add("wake_up", dev, "wake", 49999, 49999, w + mac4(key, b"W", dev, w), at_s=at)
    signed = bytes([0x82]) + struct.pack(">IHH", 12, 0, 7) + bytes.fromhex(ack(7, 2, "executed")[0])
    add("request_ack_of_7", dev, "request", 49999, 49999, signed + mac4(key, b"R", dev, signed),
        counter=12, received=7, records=ack(7, 2, "executed")[0])
    return out


def main():
    files = {
        "sms.json": sms_vectors(),
        "sealed.json": sealed_vectors(),
        "longproto-v1.json": telemetry_vectors(),
        "commands.json": command_vectors(),
        "cayenne-lpp.json": cayenne_vectors(),
    }
    check = "--check" in sys.argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, vectors in files.items():
        text = json.dumps(vectors, indent=2) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("vectors differ from tools/wire_vectors.py: " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
