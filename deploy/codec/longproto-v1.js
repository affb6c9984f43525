// longproto wire format v1: a payload codec for ChirpStack v4 (device profile →
// Codec → "JavaScript functions") and for The Things Stack (uplink decoder, downlink
// encoder and decoder). The layout is docs/wire-format.md; every vector of
// device-node/vectors passes through this file under QuickJS and Node.js, and its output
// is the JSON of `longproto-bridge decode`.
//
// decodeUplink({bytes, fPort})   → {data: {codec, direction, fport, raw_hex, records}, errors, warnings}
// decodeDownlink({bytes, fPort}) → the same for command frames (fPort 20)
// encodeDownlink({data})         → {bytes, fPort: 20, errors, warnings}; data is one frame
//                                   {counter, command, args?} or {records: [frames…]}
//
// Plain ES5 without modules or BigInt, so that it runs unchanged wherever codecs run.

var LONGPROTO_TELEMETRY_FPORT = 10;
var LONGPROTO_COMMAND_FPORT = 20;

var LONGPROTO_FIX_AGE = ["<10s", "<1min", "<5min", "<30min", "<2h", "<12h", ">=12h", "none"];
var LONGPROTO_ACK_RESULT = ["executed", "already_executed", "unknown_command", "bad_arguments",
  "not_now", "stale", "failed"];
var LONGPROTO_EVENT = [null, "tamper", "crash", "low_battery", "geofence_exit", "geofence_enter",
  "unauthorised_movement", "battery_removed", "fall"];
var LONGPROTO_RESET_REASON = { 0: "power_on", 1: "watchdog", 2: "software", 3: "brown_out",
  4: "panic", 5: "pin", 255: "unknown" };
var LONGPROTO_MODE = ["normal", "active", "storage"];
var LONGPROTO_COMMAND = { 1: "lock", 2: "unlock", 3: "locate", 4: "set_interval", 5: "set_mode",
  6: "reboot" };

function longprotoError(offset, what) {
  var e = new Error("at byte " + offset + ": " + what);
  e.longproto = true;
  return e;
}

function longprotoHex(bytes, from, to) {
  var s = "";
  for (var i = from; i < to; i++) {
    s += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
  }
  return s;
}

function longprotoU16(bytes, i) {
  return bytes[i] * 256 + bytes[i + 1];
}

// `width` bits starting at bit `start` of a 12-byte status, bit 0 being the most
// significant bit of the first byte.
function longprotoBits(bytes, start, width) {
  var v = 0;
  for (var i = start; i < start + width; i++) {
    v = v * 2 + ((bytes[i >> 3] >> (7 - (i & 7))) & 1);
  }
  return v;
}

// The centre of a quantised coordinate's step, in 1e-7 degrees:
// floor((code · span + floor(max / 2)) / max) − half, exactly, in doubles (code · span
// alone would pass 2^53).
function longprotoDequantize(code, half, max) {
  var span = 2 * half;
  var q = Math.floor(span / max);
  var r = span - q * max;
  return code * q + Math.floor((code * r + Math.floor(max / 2)) / max) - half;
}

function longprotoStatus(bytes, offset) {
  var b = bytes.slice(offset, offset + 12);
  var soc = longprotoBits(b, 54, 7);
  if (soc > 100 && soc !== 127) {
    throw longprotoError(offset + 4, "soc_pct is out of range");
  }
  var speed = longprotoBits(b, 61, 8);
  var temp = longprotoBits(b, 69, 7);
  var odo = longprotoBits(b, 76, 20);
  var saturated = [];
  if (speed === 255) saturated.push("speed_kmh");
  if (temp === 0 || temp === 127) saturated.push("cabin_temp_c");
  if (odo === 1048575) saturated.push("odometer_km");
  var r = {
    kind: "status",
    latitude: longprotoDequantize(longprotoBits(b, 7, 23), 900000000, 8388607) / 10000000,
    longitude: longprotoDequantize(longprotoBits(b, 30, 24), 1800000000, 16777215) / 10000000,
    fix_age: LONGPROTO_FIX_AGE[longprotoBits(b, 1, 3)],
    soc_pct: soc === 127 ? null : soc,
    locked: longprotoBits(b, 4, 1) === 1,
    ignition: longprotoBits(b, 5, 1) === 1,
    charging: longprotoBits(b, 6, 1) === 1,
    speed_kmh: speed,
    cabin_temp_c: temp === 0 ? -40 : temp === 127 ? 85 : temp - 41,
    odometer_km: odo
  };
  if (saturated.length > 0) r.saturated = saturated;
  return r;
}

// The records of an uplink; throws at the first record that does not decode.
function longprotoRecords(bytes, fPort) {
  if (fPort !== null && fPort !== undefined && fPort !== LONGPROTO_TELEMETRY_FPORT) {
    if (fPort >= 11 && fPort <= 19) {
      throw longprotoError(0, "unknown format version " + (fPort - 9));
    }
    throw longprotoError(0, "fPort " + fPort + " carries no longproto payload");
  }
  var records = [];
  var pos = 0;
  while (pos < bytes.length) {
    var offset = pos;
    var rest = bytes.length - offset;
    var h = bytes[offset];
    if ((h & 0x80) === 0) {
      if (rest < 12) {
        throw longprotoError(offset, "truncated: needs 12 bytes, " + rest + " remain");
      }
      records.push(longprotoStatus(bytes, offset));
      pos += 12;
      continue;
    }
    var kind = (h >> 4) & 7;
    var len = h & 0x0f;
    if (len > 11) throw longprotoError(offset, "length is out of range");
    if (rest < 1 + len) {
      throw longprotoError(offset, "truncated: needs " + (1 + len) + " bytes, " + rest + " remain");
    }
    var at = offset + 1;
    var need = function (n) {
      if (len < n) throw longprotoError(offset, "length is out of range");
    };
    if (kind === 0) {
      need(4);
      var result = LONGPROTO_ACK_RESULT[bytes[at + 3]];
      if (result === undefined) throw longprotoError(at + 3, "result is out of range");
      records.push({ kind: "ack", counter: longprotoU16(bytes, at), opcode: bytes[at + 2],
        result: result });
    } else if (kind === 1) {
      need(5);
      records.push({ kind: "event", event: LONGPROTO_EVENT[bytes[at]] || "event_" + bytes[at],
        value: longprotoU16(bytes, at + 1), age_s: longprotoU16(bytes, at + 3) });
    } else if (kind === 2) {
      need(4);
      var reason = LONGPROTO_RESET_REASON[bytes[at + 3]];
      if (reason === undefined) throw longprotoError(at + 3, "reset_reason is out of range");
      records.push({ kind: "boot", firmware: [bytes[at], bytes[at + 1], bytes[at + 2]],
        reset_reason: reason });
    } else {
      records.push({ kind: "unknown", code: kind, hex: longprotoHex(bytes, at, at + len) });
    }
    pos += 1 + len;
  }
  return records;
}

// The command frames of a downlink (8 bytes each); throws at the first that does not decode.
function longprotoFrames(bytes) {
  var frames = [];
  var whole = bytes.length - (bytes.length % 8);
  for (var offset = 0; offset < whole; offset += 8) {
    var op = bytes[offset];
    var a = offset + 3;
    var f = { counter: longprotoU16(bytes, offset + 1) };
    if (op >= 0x80) {
      f.command = "raw";
      f.args = { opcode: op & 0x7f, data: longprotoHex(bytes, a, a + 5) };
    } else if (op === 1 || op === 3) {
      f.command = LONGPROTO_COMMAND[op];
    } else if (op === 2) {
      f.command = "unlock";
      f.args = { auto_relock_s: longprotoU16(bytes, a) };
    } else if (op === 4) {
      var interval = bytes[a] * 65536 + longprotoU16(bytes, a + 1);
      if (interval === 0) throw longprotoError(a, "interval_s is out of range");
      f.command = "set_interval";
      f.args = { interval_s: interval };
    } else if (op === 5) {
      var mode = LONGPROTO_MODE[bytes[a]];
      if (mode === undefined) throw longprotoError(a, "mode is out of range");
      f.command = "set_mode";
      f.args = { mode: mode, duration_s: longprotoU16(bytes, a + 1),
        interval_s: longprotoU16(bytes, a + 3) };
    } else if (op === 6) {
      f.command = "reboot";
      f.args = { delay_s: longprotoU16(bytes, a) };
    } else {
      throw longprotoError(offset, "unknown kind 0x" + longprotoHex([op], 0, 1));
    }
    frames.push(f);
  }
  if (whole < bytes.length) {
    throw longprotoError(whole, (bytes.length - whole) + " trailing bytes do not form a whole frame");
  }
  return frames;
}

function longprotoDecoded(input, direction, decode) {
  var bytes = input.bytes || [];
  var fPort = input.fPort === undefined ? null : input.fPort;
  try {
    var records = decode(bytes, fPort);
    return {
      data: { codec: "longproto-v1", direction: direction, fport: fPort,
        raw_hex: longprotoHex(bytes, 0, bytes.length), records: records },
      errors: [],
      warnings: []
    };
  } catch (e) {
    if (!e.longproto) throw e;
    return { errors: [e.message], warnings: [] };
  }
}

function decodeUplink(input) {
  return longprotoDecoded(input, "uplink", longprotoRecords);
}

function decodeDownlink(input) {
  if (input.fPort !== undefined && input.fPort !== null && input.fPort !== LONGPROTO_COMMAND_FPORT) {
    return { errors: ["fPort " + input.fPort + " carries no longproto commands (fPort 20 does)"],
      warnings: [] };
  }
  return longprotoDecoded(input, "downlink", longprotoFrames);
}

// --- encoding command frames -------------------------------------------------------

function longprotoWhole(where, v, max) {
  if (typeof v !== "number" || Math.floor(v) !== v) {
    throw new Error(where + ": expected a whole number, found " + JSON.stringify(v));
  }
  if (v < 0 || v > max) throw new Error(where + ": " + v + " is out of range 0..=" + max);
  return v;
}

function longprotoArg(args, name, max, fallback) {
  if (args[name] === undefined) {
    if (fallback === undefined) throw new Error("args: missing field `" + name + "`");
    return fallback;
  }
  return longprotoWhole("args." + name, args[name], max);
}

function longprotoFrame(f) {
  if (f === null || typeof f !== "object" || Array.isArray(f)) {
    throw new Error("expected a JSON object such as {\"command\":\"unlock\",\"counter\":1}");
  }
  if (f.counter === undefined) throw new Error("counter: missing");
  var counter = longprotoWhole("counter", f.counter, 65535);
  var args = f.args === undefined || f.args === null ? {} : f.args;
  if (typeof args !== "object" || Array.isArray(args)) {
    throw new Error("args: expected an object, found " + JSON.stringify(args));
  }
  var known = { lock: [], locate: [], unlock: ["auto_relock_s"], set_interval: ["interval_s"],
    set_mode: ["mode", "duration_s", "interval_s"], reboot: ["delay_s"], raw: ["opcode", "data"] };
  if (typeof f.command !== "string") {
    throw new Error(f.command === undefined ? "command: missing"
      : "command: expected a string, found " + JSON.stringify(f.command));
  }
  if (!Object.prototype.hasOwnProperty.call(known, f.command)) {
    throw new Error("command: unknown variant `" + f.command + "`, expected one of `lock`, "
      + "`unlock`, `locate`, `set_interval`, `set_mode`, `reboot`, `raw`");
  }
  for (var k in args) {
    if (known[f.command].indexOf(k) < 0) throw new Error("args: unknown field `" + k + "`");
  }
  var b = [0, counter >> 8, counter & 0xff, 0, 0, 0, 0, 0];
  var v;
  switch (f.command) {
    case "lock": b[0] = 1; break;
    case "locate": b[0] = 3; break;
    case "unlock":
      b[0] = 2;
      v = longprotoArg(args, "auto_relock_s", 65535, 0);
      b[3] = v >> 8; b[4] = v & 0xff;
      break;
    case "set_interval":
      b[0] = 4;
      v = longprotoArg(args, "interval_s", 16777215);
      if (v === 0) throw new Error("args: interval_s is out of range");
      b[3] = v >> 16; b[4] = (v >> 8) & 0xff; b[5] = v & 0xff;
      break;
    case "set_mode":
      b[0] = 5;
      if (args.mode === undefined) throw new Error("args: missing field `mode`");
      var mode = LONGPROTO_MODE.indexOf(args.mode);
      if (mode < 0) {
        throw new Error("args: unknown variant " + JSON.stringify(args.mode)
          + " of mode, expected `normal`, `active` or `storage`");
      }
      b[3] = mode;
      v = longprotoArg(args, "duration_s", 65535, 0);
      b[4] = v >> 8; b[5] = v & 0xff;
      v = longprotoArg(args, "interval_s", 65535, 0);
      b[6] = v >> 8; b[7] = v & 0xff;
      break;
    case "reboot":
      b[0] = 6;
      v = longprotoArg(args, "delay_s", 65535, 0);
      b[3] = v >> 8; b[4] = v & 0xff;
      break;
    case "raw":
      b[0] = 0x80 | longprotoArg(args, "opcode", 127);
      var data = args.data === undefined ? "0000000000" : args.data;
      // up to 5 bytes in hex, zero-padded
      if (typeof data !== "string" || !/^([0-9a-fA-F]{2}){0,5}$/.test(data)) {
        throw new Error("args.data: expected at most 5 bytes as hex, found " + JSON.stringify(data));
      }
      for (var i = 0; 2 * i < data.length; i++) b[3 + i] = parseInt(data.substr(2 * i, 2), 16);
      break;
  }
  return b;
}

function encodeDownlink(input) {
  var data = input.data;
  var many = data !== null && typeof data === "object" && Array.isArray(data.records);
  var frames = many ? data.records : [data];
  var bytes = [];
  for (var i = 0; i < frames.length; i++) {
    try {
      bytes = bytes.concat(longprotoFrame(frames[i]));
    } catch (e) {
      var where = many ? "records[" + i + "] " : "";
      return { errors: [where + e.message], warnings: [] };
    }
  }
  return { bytes: bytes, fPort: LONGPROTO_COMMAND_FPORT, errors: [], warnings: [] };
}
