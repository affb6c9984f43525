//! Commands in their JSON form: the request body of the API and of MQTT.
use device_node::{Command, CommandFrame};
use serde_json::{Map, Value};

/// Reads a command from the JSON request form `{"command": "...", "args": {...}}`.
/// `args` may be left out when every argument has a default (`{"command":"unlock"}`).
pub fn parse_command(body: &Map<String, Value>) -> Result<Command, String> {
    let name = match body.get("command") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("command: expected a string, found {other}")),
        None => return Err("command: missing".into()),
    };
    let mut obj = Map::new();
    obj.insert("command".into(), Value::String(name.into()));
    match body.get("args") {
        Some(Value::Null) | None if !matches!(name, "lock" | "locate") => {
            obj.insert("args".into(), Value::Object(Map::new()));
        }
        Some(Value::Object(m)) if m.is_empty() && matches!(name, "lock" | "locate") => {}
        Some(args) => {
            obj.insert("args".into(), args.clone());
        }
        None => {}
    }
    let command: Command = serde_json::from_value(Value::Object(obj)).map_err(|e| {
        let e = e.to_string();
        if e.starts_with("unknown variant") {
            format!("command: {e}")
        } else {
            format!("args: {e}")
        }
    })?;
    // Check the arguments against the wire format now, not when a window opens.
    CommandFrame {
        counter: 0,
        command,
    }
    .encode()
    .map_err(|e| format!("args: {e}"))?;
    Ok(command)
}

/// Reads a request body as JSON, refusing an object that names a key twice: with the
/// last one winning, `{"command":"unlock","command":"lock"}` would create a lock that the
/// sender's own tools may show as an unlock.
pub fn read_body(bytes: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = <Unique as serde::Deserialize>::deserialize(&mut de)
        .map_err(|e| format!("not JSON: {e}"))?;
    de.end().map_err(|e| format!("not JSON: {e}"))?;
    Ok(value.0)
}

/// A JSON value whose objects have no key twice.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key \"{}\" appears twice",
                    crate::device::excerpt(&key)
                )));
            }
            let Unique(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Reads a command frame: the request form plus `counter`.
pub fn parse_frame(value: &Value) -> Result<CommandFrame, String> {
    let Value::Object(body) = value else {
        return Err("expected a JSON object such as {\"command\":\"unlock\",\"counter\":1}".into());
    };
    let counter = match body.get("counter") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .ok_or_else(|| format!("counter: {n} is out of range 0..=65535"))?,
        Some(other) => return Err(format!("counter: expected a number, found {other}")),
        None => return Err("counter: missing".into()),
    };
    Ok(CommandFrame {
        counter,
        command: parse_command(body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(v: Value) -> Result<CommandFrame, String> {
        parse_frame(&v)
    }

    #[test]
    fn a_key_named_twice_is_refused_anywhere_in_the_body() {
        let e = read_body(br#"{"command":"unlock","command":"lock"}"#).unwrap_err();
        assert!(e.contains("\"command\" appears twice"), "{e}");
        let e = read_body(br#"{"command":"unlock","args":{"auto_relock_s":1,"auto_relock_s":2}}"#)
            .unwrap_err();
        assert!(e.contains("auto_relock_s"), "{e}");
        let v =
            read_body(br#"{"command":"unlock","args":{"auto_relock_s":30},"ttl_s":1.5}"#).unwrap();
        assert_eq!(
            v,
            serde_json::from_str::<Value>(
                r#"{"command":"unlock","args":{"auto_relock_s":30},"ttl_s":1.5}"#
            )
            .unwrap()
        );
        assert!(read_body(b"{} x").is_err());
    }

    #[test]
    fn args_may_be_left_out_when_defaulted() {
        let f = frame(json!({"command": "unlock", "counter": 3})).unwrap();
        assert_eq!(f.command, Command::Unlock { auto_relock_s: 0 });
        let f = frame(json!({"command": "lock", "counter": 3, "args": {}})).unwrap();
        assert_eq!(f.command, Command::Lock);
        let f = frame(json!({"command": "reboot", "counter": 3, "ttl_s": 60, "id": "x"})).unwrap();
        assert_eq!(f.command, Command::Reboot { delay_s: 0 });
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            frame(json!({"command": "unlock"})).unwrap_err(),
            "counter: missing"
        );
        assert_eq!(
            frame(json!({"counter": 70000, "command": "lock"})).unwrap_err(),
            "counter: 70000 is out of range 0..=65535"
        );
        assert!(
            frame(json!({"counter": 1, "command": "fly"}))
                .unwrap_err()
                .starts_with("command: unknown variant `fly`")
        );
        assert!(
            frame(json!({"counter": 1, "command": "set_interval"}))
                .unwrap_err()
                .starts_with("args: missing field `interval_s`")
        );
        assert!(
            frame(json!({"counter": 1, "command": "set_interval", "args": {"interval_s": 0}}))
                .unwrap_err()
                .starts_with("args: interval_s is out of range")
        );
        assert!(
            frame(json!({"counter": 1, "command": "unlock", "args": {"auto_relock": 5}}))
                .unwrap_err()
                .starts_with("args: unknown field `auto_relock`")
        );
        assert!(
            frame(json!({"counter": 1, "command": "raw", "args": {"opcode": 1, "data": "xyz"}}))
                .unwrap_err()
                .starts_with("args:")
        );
        assert!(frame(json!([1])).is_err());
    }
}
