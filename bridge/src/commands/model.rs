//! Commands and their states.
use crate::clock::rfc3339;
use crate::device::DeviceId;
use serde_json::{Value, json};
use std::fmt;

/// Where a command is in its life.
///
/// `queued → scheduled → sent → delivered → executed | rejected`, or it ends `expired`,
/// `cancelled` or `failed` (with a reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Stored, waiting for a receive window.
    Queued,
    /// Handed to the network for a receive window.
    Scheduled,
    /// The network transmitted it.
    Sent,
    /// The device's radio acknowledged it.
    Delivered,
    /// The device reported it executed.
    Executed,
    /// The device reported it did not execute it.
    Rejected,
    /// Its time to live ran out before it could be transmitted or retried.
    Expired,
    /// Cancelled through the API before it was handed to the network.
    Cancelled,
    /// It cannot be delivered (attempts used up, refused by the network).
    Failed,
}

impl CommandState {
    /// Every state.
    pub const ALL: [CommandState; 9] = [
        CommandState::Queued,
        CommandState::Scheduled,
        CommandState::Sent,
        CommandState::Delivered,
        CommandState::Executed,
        CommandState::Rejected,
        CommandState::Expired,
        CommandState::Cancelled,
        CommandState::Failed,
    ];

    /// The name in JSON and in the store.
    pub const fn name(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Scheduled => "scheduled",
            CommandState::Sent => "sent",
            CommandState::Delivered => "delivered",
            CommandState::Executed => "executed",
            CommandState::Rejected => "rejected",
            CommandState::Expired => "expired",
            CommandState::Cancelled => "cancelled",
            CommandState::Failed => "failed",
        }
    }

    /// The state of a name.
    pub fn from_name(s: &str) -> Option<Self> {
        CommandState::ALL.into_iter().find(|c| c.name() == s)
    }

    /// No further change.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            CommandState::Executed
                | CommandState::Rejected
                | CommandState::Expired
                | CommandState::Cancelled
                | CommandState::Failed
        )
    }

    /// Still on its way to the device (counted in a device's `pending_commands`).
    pub const fn is_pending(self) -> bool {
        matches!(
            self,
            CommandState::Queued | CommandState::Scheduled | CommandState::Sent
        )
    }
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Its id (a UUID, or the client's idempotency key).
    pub id: String,
    /// The device.
    pub device: DeviceId,
    /// What it asks.
    pub command: device_node::Command,
    /// The device's command counter it carries.
    pub counter: u16,
    /// Ask for a confirmed downlink (LoRaWAN).
    pub confirmed: bool,
    /// Its state.
    pub state: CommandState,
    /// Transmissions so far.
    pub attempts: u32,
    /// When it was created, ms since the epoch.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
    /// The downlink that carries it (ChirpStack's queue item id).
    pub network_ref: Option<String>,
    /// Why it is in its state, for the final ones.
    pub reason: Option<String>,
    /// Who asked for it (`None`: created before origins were recorded).
    pub origin: Option<Origin>,
    /// The batch it belongs to: one command of a command to a group.
    pub batch_id: Option<String>,
}

/// Who asked for a command, or changed it: an API token (by its name, never its secret),
/// or a request on MQTT, with the `requested_by` it gave. The broker's ACL decides who
/// may publish command requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An HTTP request with this token.
    Token(String),
    /// An MQTT command request, with its optional `requested_by`.
    Mqtt(Option<String>),
}

impl Origin {
    /// As stored: `token:NAME`, `mqtt`, `mqtt:REQUESTED_BY`.
    pub fn to_stored(&self) -> String {
        match self {
            Origin::Token(name) => format!("token:{name}"),
            Origin::Mqtt(None) => "mqtt".into(),
            Origin::Mqtt(Some(who)) => format!("mqtt:{who}"),
        }
    }

    /// Reads the stored form.
    pub fn from_stored(s: &str) -> Option<Origin> {
        if let Some(name) = s.strip_prefix("token:") {
            return Some(Origin::Token(name.to_owned()));
        }
        match s.strip_prefix("mqtt") {
            Some("") => Some(Origin::Mqtt(None)),
            Some(rest) => rest
                .strip_prefix(':')
                .map(|who| Origin::Mqtt(Some(who.to_owned()))),
            None => None,
        }
    }

    /// Its JSON: `{"via": "http", "token": NAME}` or `{"via": "mqtt", "requested_by"?: …}`.
    pub fn to_json(&self) -> Value {
        match self {
            Origin::Token(name) => json!({"via": "http", "token": name}),
            Origin::Mqtt(None) => json!({"via": "mqtt"}),
            Origin::Mqtt(Some(who)) => json!({"via": "mqtt", "requested_by": who}),
        }
    }

    /// The label it is counted under in `/metrics`: the token's name, or `mqtt` (a
    /// `requested_by` is free text and makes no series).
    pub fn label(&self) -> &str {
        match self {
            Origin::Token(name) => name,
            Origin::Mqtt(_) => "mqtt",
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The new state.
    pub state: CommandState,
    /// When, ms since the epoch.
    pub at: i64,
    /// Why.
    pub reason: Option<String>,
    /// The transmission attempt it belongs to.
    pub attempt: Option<u32>,
    /// Who made this change through the API or MQTT: the creation, a cancellation.
    pub origin: Option<Origin>,
}

impl HistoryEntry {
    /// The JSON of a command event: `{command_id, state, at, reason?, attempt?}`.
    pub fn event_json(&self, command_id: &str) -> Value {
        let mut v =
            json!({"command_id": command_id, "state": self.state.name(), "at": rfc3339(self.at)});
        if let Some(r) = &self.reason {
            v["reason"] = json!(r);
        }
        if let Some(a) = self.attempt {
            v["attempt"] = json!(a);
        }
        if let Some(o) = &self.origin {
            v["origin"] = o.to_json();
        }
        v
    }
}

impl Command {
    /// The frame the device receives.
    pub fn frame(&self) -> device_node::CommandFrame {
        device_node::CommandFrame {
            counter: self.counter,
            command: self.command,
        }
    }

    /// The API's JSON of the command.
    pub fn to_json(&self) -> Value {
        let body = serde_json::to_value(self.command).unwrap_or(Value::Null);
        let mut v = json!({
            "id": self.id,
            "device": self.device.to_string(),
            "network": self.device.network.name(),
            "device_id": self.device.id,
            "command": body.get("command").cloned().unwrap_or(Value::Null),
            "args": body.get("args").cloned().unwrap_or(json!({})),
            "counter": self.counter,
            "confirmed": self.confirmed,
            "state": self.state.name(),
            "attempts": self.attempts,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
        });
        if let Some(r) = &self.reason {
            v["reason"] = json!(r);
        }
        if let Some(o) = &self.origin {
            v["origin"] = o.to_json();
        }
        if let Some(b) = &self.batch_id {
            v["batch_id"] = json!(b);
        }
        v
    }
}
