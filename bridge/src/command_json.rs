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
