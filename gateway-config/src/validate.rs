//! Semantic checks of a typed [`Settings`], reporting every problem with its key path.
use crate::CODEC_NAMES;
use crate::settings::Settings;
use std::fmt;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key path such as `mqtt.server`, or a file name for a file that does not
    /// parse.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl Problems {
    /// Adds a problem.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a problem at `path` is already known.
    pub fn mentions(&self, path: &str) -> bool {
        self.0.iter().any(|p| p.path == path)
    }
}

const MQTT_SCHEMES: &str = "expected mqtt://, mqtts://, tcp:// or ssl://";

impl Settings {
    /// Checks values that parse but make no sense, and returns every problem found.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::default();
        self.validate_mqtt(&mut p);
        self.validate_chirpstack(&mut p);
        self.validate_rest(&mut p);
        p
    }

    fn validate_mqtt(&self, p: &mut Problems) {
        let m = &self.mqtt;
        match url::Url::parse(&m.server) {
            Ok(u) => {
                if !matches!(u.scheme(), "mqtt" | "mqtts" | "tcp" | "ssl") {
                    p.push(
                        "mqtt.server",
                        format!("scheme \"{}\" is not supported; {MQTT_SCHEMES}", u.scheme()),
                    );
                } else if u.host_str().is_none_or(str::is_empty) {
                    p.push("mqtt.server", format!("\"{}\" has no host", m.server));
                }
            }
            Err(_) => p.push(
                "mqtt.server",
                format!("\"{}\" is not a URL; {MQTT_SCHEMES}", m.server),
            ),
        }
        if m.client_id.trim().is_empty() {
            p.push(
                "mqtt.client_id",
                "must not be empty: the broker keeps the session under it",
            );
        }
        if !m.password.is_empty() && !m.password_file.is_empty() {
            p.push(
                "mqtt.password_file",
                "give either password or password_file, not both",
            );
        }
        if m.tls_cert.is_empty() != m.tls_key.is_empty() {
            p.push(
                "mqtt.tls_key",
                "tls_cert and tls_key go together: give both or neither",
            );
        }
        let tls = m.server.starts_with("mqtts://") || m.server.starts_with("ssl://");
        for (key, value) in [("ca_cert", &m.ca_cert), ("tls_cert", &m.tls_cert)] {
            if !value.is_empty() && !tls {
                p.push(
                    format!("mqtt.{key}"),
                    "is set but mqtt.server is not mqtts:// or ssl://, so TLS is not used",
                );
            }
        }
        if m.keepalive_s < 5 {
            p.push(
                "mqtt.keepalive_s",
                format!("{} is out of range 5..=65535", m.keepalive_s),
            );
        }
        check_topic_root(&m.topic_root, p);
        if !(50..=60_000).contains(&m.reconnect_max_ms) {
            p.push(
                "mqtt.reconnect_max_ms",
                format!("{} is out of range 50..=60000", m.reconnect_max_ms),
            );
        }
        if m.state_min_interval_ms > 60_000 {
            p.push(
                "mqtt.state_min_interval_ms",
                format!("{} is out of range 0..=60000", m.state_min_interval_ms),
            );
        }
        if m.max_inflight == 0 {
            p.push("mqtt.max_inflight", "must be at least 1");
        }
        if !(1024..=16 << 20).contains(&m.max_message_bytes) {
            p.push(
                "mqtt.max_message_bytes",
                format!("{} is out of range 1024..=16777216", m.max_message_bytes),
            );
        }
    }

    fn validate_chirpstack(&self, p: &mut Problems) {
        let c = &self.chirpstack;
        check_template(
            "chirpstack.event_topic",
            &c.event_topic,
            &["application_id", "dev_eui", "event"],
            &["dev_eui", "event"],
            p,
        );
        check_template(
            "chirpstack.command_topic",
            &c.command_topic,
            &["application_id", "dev_eui", "command"],
            &["dev_eui", "command"],
            p,
        );
        if !(5..=86_400).contains(&c.handover_timeout_s) {
            p.push(
                "chirpstack.handover_timeout_s",
                format!("{} is out of range 5..=86400", c.handover_timeout_s),
            );
        }
        if !(1..=10_000).contains(&c.downlink_budget_ms) {
            p.push(
                "chirpstack.downlink_budget_ms",
                format!("{} is out of range 1..=10000", c.downlink_budget_ms),
            );
        }
    }

    fn validate_cellular(&self, p: &mut Problems) {
        let c = &self.cellular;
        if !c.bind.is_empty() && c.bind.parse::<std::net::SocketAddr>().is_err() {
            p.push(
                "cellular.bind",
                format!(
                    "\"{}\" is not an address and port such as 0.0.0.0:8091 (or empty: no listener)",
                    c.bind
                ),
            );
        }
        if !c.bind.is_empty() && c.keys_file.is_empty() {
            p.push(
                "cellular.keys_file",
                "the cellular listener needs the devices' keys: every request would get 401",
            );
        }
        for (key, v) in [
            ("cellular.max_wait_s", c.max_wait_s),
            ("cellular.delivery_timeout_s", c.delivery_timeout_s),
            ("cellular.request_timeout_s", c.request_timeout_s),
        ] {
            if !(1..=3600).contains(&v) {
                p.push(key, format!("{v} is out of range 1..=3600"));
            }
        }
        if c.tcp_keepalive_s > 7200 {
            p.push(
                "cellular.tcp_keepalive_s",
                format!("{} is out of range 0..=7200", c.tcp_keepalive_s),
            );
        }
        if !(1..=1_000_000).contains(&c.max_connections) {
            p.push(
                "cellular.max_connections",
                format!("{} is out of range 1..=1000000", c.max_connections),
            );
        }
        if c.tls_cert.is_empty() != c.tls_key.is_empty() {
            p.push(
                "cellular.tls_key",
                "give both tls_cert and tls_key, or neither",
            );
        }
    }

    fn validate_operators(&self, p: &mut Problems) {
        let o = &self.operators;
        check_tokens("operators.token", &o.token, p);
        for (name, devices) in &o.group {
            let path = format!("operators.group.{name}");
            if !valid_name(name) {
                p.push(&path, NAME_RULE);
            }
            for (i, d) in devices.iter().enumerate() {
                if let Err(e) = check_device(d) {
                    p.push(format!("{path}[{i}]"), e);
                }
            }
        }
        let tag = &self.chirpstack.group_tag;
        if tag.len() > 64 || tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.push(
                "chirpstack.group_tag",
                "a tag key of at most 64 characters without white space",
            );
        }
    }

    fn validate_sms(&self, p: &mut Problems) {
        let s = &self.sms;
        if s.server.is_empty() {
            return;
        }
        let ok = s
            .server
            .strip_prefix("smpp://")
            .or_else(|| s.server.strip_prefix("smpps://"))
            .and_then(|rest| rest.rsplit_once(':'))
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        if !ok {
            p.push(
                "sms.server",
                format!(
                    "\"{}\" is not smpp://host:port or smpps://host:port (or empty: no SMS)",
                    s.server
                ),
            );
        }
        if s.system_id.is_empty() || s.system_id.len() > 15 {
            p.push(
                "sms.system_id",
                "give the account's system_id (1 to 15 characters)",
            );
        }
        if !s.password.is_empty() && !s.password_file.is_empty() {
            p.push(
                "sms.password_file",
                "give either password or password_file, not both",
            );
        }
        if self.cellular.keys_file.is_empty() {
            p.push(
                "cellular.keys_file",
                "SMS needs the devices' keys and numbers: give cellular.keys_file",
            );
        }
        for (key, v, lo, hi) in [
            ("sms.submits_per_s", s.submits_per_s, 1, 10_000),
            ("sms.window", s.window, 1, 1000),
            ("sms.enquire_link_s", s.enquire_link_s, 5, 3600),
            ("sms.response_timeout_s", s.response_timeout_s, 1, 300),
            ("sms.sms_after_s", s.sms_after_s, 1, 86_400),
            ("sms.receipt_timeout_s", s.receipt_timeout_s, 10, 604_800),
        ] {
            if !(lo..=hi).contains(&v) {
                p.push(key, format!("{v} is out of range {lo}..={hi}"));
            }
        }
    }

    fn validate_rest(&self, p: &mut Problems) {
        let s = &self.sigfox;
        if !s.secret.is_empty() && !s.secret_file.is_empty() {
            p.push(
                "sigfox.secret_file",
                "give either secret or secret_file, not both",
            );
        }
        let max = crate::sigfox::MAX_DOWNLINKS_PER_DAY;
        if s.daily_downlinks > max {
            p.push(
                "sigfox.daily_downlinks",
                format!(
                    "{} is out of range 0..={max}: Sigfox allows at most {max} a day",
                    s.daily_downlinks
                ),
            );
        }

        self.validate_cellular(p);
        self.validate_sms(p);
        self.validate_operators(p);

        let h = &self.http;
        if h.bind.parse::<std::net::SocketAddr>().is_err() {
            p.push(
                "http.bind",
                format!(
                    "\"{}\" is not an address and port such as 127.0.0.1:8090",
                    h.bind
                ),
            );
        }
        for (i, t) in h.api_tokens.iter().enumerate() {
            if t.len() < 16 || t.chars().any(char::is_whitespace) {
                p.push(
                    format!("http.api_tokens[{i}]"),
                    "a token needs 16 characters or more and no white space",
                );
            }
        }
        if !(256..=1 << 20).contains(&h.body_limit_bytes) {
            p.push(
                "http.body_limit_bytes",
                format!("{} is out of range 256..=1048576", h.body_limit_bytes),
            );
        }

        for (key, v) in [
            ("http.header_timeout_s", h.header_timeout_s),
            ("http.idle_timeout_s", h.idle_timeout_s),
        ] {
            if !(1..=3600).contains(&v) {
                p.push(key, format!("{v} is out of range 1..=3600"));
            }
        }
        if !(1..=1_000_000).contains(&h.max_connections) {
            p.push(
                "http.max_connections",
                format!("{} is out of range 1..=1000000", h.max_connections),
            );
        }

        let url = &self.storage.url;
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                p.push(
                    "storage.url",
                    "sqlite:// needs a path, e.g. sqlite:///var/lib/longproto/bridge.db",
                );
            }
        } else if let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if host.is_empty() || host.starts_with('/') {
                p.push(
                    "storage.url",
                    "postgres:// needs a host and a database, e.g. postgres://longproto@db.example.net/longproto",
                );
            }
        } else {
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            let what = if scheme.is_empty() {
                "the URL has no scheme".to_owned()
            } else {
                format!("the scheme \"{scheme}\" is not supported")
            };
            p.push(
                "storage.url",
                format!("{what}; expected sqlite:///absolute/path.db, sqlite://relative/path.db or postgres://user@host/database"),
            );
        }

        let c = &self.commands;
        if c.default_ttl_s == 0 {
            p.push("commands.default_ttl_s", "must be at least 1 second");
        }
        if c.max_ttl_s < c.default_ttl_s {
            p.push(
                "commands.max_ttl_s",
                format!(
                    "{} is below commands.default_ttl_s ({})",
                    c.max_ttl_s, c.default_ttl_s
                ),
            );
        }
        if !(1..=10).contains(&c.max_attempts) {
            p.push(
                "commands.max_attempts",
                format!("{} is out of range 1..=10", c.max_attempts),
            );
        }

        self.validate_codecs(p);

        if let Err(e) = check_log_filter(&self.logging.level) {
            p.push("logging.level", e);
        }
    }

    fn validate_codecs(&self, p: &mut Problems) {
        let codecs = &self.codecs;
        check_codec("codecs.default", &codecs.default, p);
        let tables = [
            ("device", &codecs.device),
            ("device_profile", &codecs.device_profile),
            ("application", &codecs.application),
            ("sigfox_device_type", &codecs.sigfox_device_type),
        ];
        for (table, map) in tables {
            for (key, codec) in map {
                let path = format!("codecs.{table}.\"{key}\"");
                check_codec(&path, codec, p);
                if table == "device" {
                    let hex = !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit());
                    if !hex || !(key.len() == 16 || key.len() <= 8) {
                        p.push(
                            path,
                            "a device is its DevEUI (16 hex digits) or Sigfox id (up to 8 hex digits)",
                        );
                    }
                }
            }
        }
    }
}

fn check_codec(path: &str, name: &str, p: &mut Problems) {
    if !CODEC_NAMES.contains(&name) {
        p.push(
            path,
            format!(
                "unknown codec \"{name}\"; expected one of {}",
                CODEC_NAMES.join(", ")
            ),
        );
    }
}

fn check_topic_root(root: &str, p: &mut Problems) {
    let why = if root.is_empty() {
        Some("must not be empty")
    } else if root.contains(['#', '+']) {
        Some("must not contain the wildcards # or +")
    } else if root.starts_with('/') || root.ends_with('/') {
        Some("must not start or end with /")
    } else if root.split('/').any(str::is_empty) {
        Some("must not contain an empty level (//)")
    } else {
        None
    };
    if let Some(why) = why {
        p.push("mqtt.topic_root", format!("\"{root}\" {why}"));
    }
}

/// Checks a ChirpStack topic template: only `{{known}}` variables, each required one
/// present, each at most once, each a whole topic level, and no MQTT wildcards.
fn check_template(path: &str, t: &str, known: &[&str], required: &[&str], p: &mut Problems) {
    if t.contains(['#', '+']) {
        p.push(
            path,
            format!("\"{t}\" must not contain the wildcards # or +"),
        );
        return;
    }
    let mut seen = Vec::new();
    for level in t.split('/') {
        if let Some(inner) = level.strip_prefix("{{").and_then(|l| l.strip_suffix("}}")) {
            let name = inner.trim();
            if !known.contains(&name) {
                p.push(
                    path,
                    format!(
                        "unknown variable {{{{{name}}}}}; expected {}",
                        braces(known)
                    ),
                );
                return;
            }
            if seen.contains(&name) {
                p.push(path, format!("variable {{{{{name}}}}} appears twice"));
                return;
            }
            seen.push(name);
        } else if level.contains("{{") || level.contains("}}") {
            p.push(
                path,
                format!("\"{level}\": a variable must be a whole topic level"),
            );
            return;
        }
    }
    let missing: Vec<_> = required
        .iter()
        .filter(|r| !seen.contains(r))
        .copied()
        .collect();
    if !missing.is_empty() {
        p.push(path, format!("\"{t}\" lacks {}", braces(&missing)));
    }
}

fn braces(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{{{n}}}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A light check of RUST_LOG syntax: comma-separated `level` or `target=level`.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // RUST_LOG would take a bare word as a target at trace level; here a bare word
        // must be a level, so that a typo such as "verbose" is not silently accepted.
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "\"{directive}\": \"{level}\" is not a level; expected one of {}",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

const NAME_RULE: &str =
    "a name is 1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit";

/// A token or group name: `[a-z0-9][a-z0-9._-]{0,63}`, safe in logs, labels and topics.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

const NETWORKS: [&str; 3] = ["lorawan", "sigfox", "cellular"];

/// A device written `{network}/{id}` (1 to 32 hex digits).
fn check_device(d: &str) -> Result<(), String> {
    let (network, id) = d
        .split_once('/')
        .ok_or_else(|| format!("\"{d}\" is not a device such as lorawan/70b3d57ed0000001"))?;
    if !NETWORKS.contains(&network) {
        return Err(format!(
            "\"{network}\" is not a network; expected lorawan, sigfox or cellular"
        ));
    }
    if !(1..=32).contains(&id.len()) || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("\"{id}\" is not a device id (1 to 32 hex digits)"));
    }
    Ok(())
}

/// A token's device selector: `group:NAME`, `NETWORK/*`, `NETWORK/HEXPREFIX*` or a device.
fn check_selector(sel: &str) -> Result<(), String> {
    if let Some(group) = sel.strip_prefix("group:") {
        return if valid_name(group) {
            Ok(())
        } else {
            Err(format!("group \"{group}\": {NAME_RULE}"))
        };
    }
    match sel.strip_suffix('*') {
        Some(prefix) => match prefix.strip_suffix('/') {
            Some(network) if NETWORKS.contains(&network) => Ok(()),
            _ => check_device(&format!("{prefix}0")).map_err(|_| {
                format!(
                    "\"{sel}\" is not a selector: group:NAME, a network (lorawan/*), an id \
                     prefix (sigfox/0051*) or a device"
                )
            }),
        },
        None => check_device(sel),
    }
}

/// Checks named tokens (from the configuration or a tokens file) under `prefix`.
pub fn check_tokens(
    prefix: &str,
    tokens: &std::collections::BTreeMap<String, crate::TokenSettings>,
    p: &mut Problems,
) {
    for (name, t) in tokens {
        let path = format!("{prefix}.{name}");
        if !valid_name(name) {
            p.push(&path, NAME_RULE);
        }
        if t.secret_sha256.len() != 64 || !t.secret_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            p.push(
                format!("{path}.secret_sha256"),
                "expected the 64 hex digits of the secret's SHA-256 (longproto-bridge hash-token)",
            );
        }
        for (i, s) in t.scopes.iter().enumerate() {
            if !crate::TOKEN_SCOPES.contains(&s.as_str()) {
                p.push(
                    format!("{path}.scopes[{i}]"),
                    format!("\"{s}\" is not a scope; expected read or command"),
                );
            }
        }
        for (i, d) in t.devices.iter().enumerate() {
            if let Err(e) = check_selector(d) {
                p.push(format!("{path}.devices[{i}]"), e);
            }
        }
    }
}

/// Reads an `operators.tokens_file`: a `[token]` table of named tokens, checked.
pub fn parse_tokens_file(
    text: &str,
) -> Result<std::collections::BTreeMap<String, crate::TokenSettings>, Problems> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        token: std::collections::BTreeMap<String, crate::TokenSettings>,
    }
    let mut p = Problems::default();
    match toml::from_str::<File>(text) {
        Ok(f) => {
            check_tokens("token", &f.token, &mut p);
            if p.is_empty() { Ok(f.token) } else { Err(p) }
        }
        Err(e) => {
            p.push("token", e.to_string().trim_end().to_owned());
            Err(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Settings::default().validate(), Problems::default());
    }

    #[test]
    fn template_checks() {
        let mut p = Problems::default();
        check_template(
            "t",
            "a/{{dev_eui}}/{{event}}",
            &["dev_eui", "event"],
            &["dev_eui", "event"],
            &mut p,
        );
        assert!(p.is_empty(), "{p}");
        check_template(
            "t",
            "a/{{dev_eui}}",
            &["dev_eui", "event"],
            &["dev_eui", "event"],
            &mut p,
        );
        check_template(
            "t",
            "a/{{devEui}}/{{event}}",
            &["dev_eui", "event"],
            &["dev_eui"],
            &mut p,
        );
        check_template(
            "t",
            "a/x{{dev_eui}}/{{event}}",
            &["dev_eui", "event"],
            &["dev_eui"],
            &mut p,
        );
        check_template(
            "t",
            "a/+/{{event}}",
            &["dev_eui", "event"],
            &["dev_eui"],
            &mut p,
        );
        assert_eq!(p.0.len(), 4, "{p}");
        assert!(p.0[0].message.contains("lacks {{event}}"), "{p}");
        assert!(
            p.0[1].message.contains("unknown variable {{devEui}}"),
            "{p}"
        );
    }

    #[test]
    fn log_filters() {
        assert!(check_log_filter("info").is_ok());
        assert!(check_log_filter("info,longproto_bridge=debug").is_ok());
        assert!(check_log_filter("longproto_bridge").is_err());
        assert!(check_log_filter("info,rumqttc=loud").is_err());
        assert!(check_log_filter("x=y=z").is_err());
    }
}
