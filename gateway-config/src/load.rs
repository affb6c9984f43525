//! Loading: TOML files merged in order, then `LONGPROTO__SECTION__KEY` environment
//! overrides, then secret files, then validation. Every problem is reported at once.
use crate::settings::{SectionInfo, Settings};
use crate::validate::Problems;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// Prefix of environment overrides: `LONGPROTO__MQTT__SERVER` sets `mqtt.server`.
pub const ENV_PREFIX: &str = "LONGPROTO";

/// Where a configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// TOML files, merged in order (a later file's keys win).
    pub files: Vec<PathBuf>,
    /// Environment variables to read overrides from; `None` reads the process
    /// environment.
    pub env: Option<HashMap<String, String>>,
}

/// Why a configuration could not be loaded: every problem found.
pub type LoadError = Problems;

impl Sources {
    /// The process environment and these files.
    pub fn files(files: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        Sources {
            files: files.into_iter().map(Into::into).collect(),
            env: None,
        }
    }
}

/// Loads, checks and returns the configuration, with secrets read from their files.
pub fn load(sources: &Sources) -> Result<Settings, LoadError> {
    let mut problems = Problems::default();
    let mut builder = config::Config::builder();
    for file in &sources.files {
        let name = file.display().to_string();
        match std::fs::read_to_string(file) {
            Err(e) => problems.push(name, format!("cannot read: {e}")),
            Ok(text) => match text.parse::<toml::Table>() {
                Err(e) => problems.push(
                    name,
                    format!("not valid TOML: {}", one_line(&e.to_string())),
                ),
                Ok(_) => {
                    builder =
                        builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
                }
            },
        }
    }
    let env = config::Environment::with_prefix(ENV_PREFIX)
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("http.api_tokens")
        .source(sources.env.clone());
    builder = builder.add_source(env);

    let merged: Value = match builder.build().and_then(|c| c.try_deserialize()) {
        Ok(v) => v,
        Err(e) => {
            problems.push("environment", one_line(&e.to_string()));
            return Err(problems);
        }
    };
    let tree = match merged {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            problems.push(
                "configuration",
                format!("expected a table, found {}", kind(&other)),
            );
            return Err(problems);
        }
    };

    let tree = check_keys_and_types(tree, &mut problems);
    let mut settings: Settings = match serde_json::from_value(Value::Object(tree)) {
        Ok(s) => s,
        Err(e) => {
            // Not expected after the per-field checks; reported rather than unwrapped.
            problems.push("configuration", e.to_string());
            return Err(problems);
        }
    };
    for p in settings.validate().0 {
        if !problems.mentions(&p.path) {
            problems.0.push(p);
        }
    }
    read_secret_files(&mut settings, &mut problems);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// Reports unknown keys (with the nearest known key) and values of the wrong type, and
/// returns the tree without them, so the remaining checks still run.
fn check_keys_and_types(tree: Map<String, Value>, problems: &mut Problems) -> Map<String, Value> {
    let mut clean = Map::new();
    let section_keys: Vec<&str> = Settings::SECTIONS.iter().map(|s| s.key).collect();
    // config's merged map has no stable order: sort, so reports are reproducible
    let mut tree: Vec<_> = tree.into_iter().collect();
    tree.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in tree {
        let Some(info) = Settings::SECTIONS.iter().find(|s| s.key == key) else {
            problems.push(key.clone(), unknown("section", &key, &section_keys));
            continue;
        };
        let Value::Object(fields) = value else {
            problems.push(
                key,
                format!("expected a table [{}], found {}", info.key, kind(&value)),
            );
            continue;
        };
        clean.insert(key, Value::Object(check_section(info, fields, problems)));
    }
    clean
}

fn check_section(
    info: &SectionInfo,
    fields: Map<String, Value>,
    problems: &mut Problems,
) -> Map<String, Value> {
    let known: Vec<&str> = info.fields.iter().map(|f| f.0).collect();
    let mut clean = Map::new();
    let mut fields: Vec<_> = fields.into_iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    for (field, value) in fields {
        let path = format!("{}.{field}", info.key);
        if !known.contains(&field.as_str()) {
            problems.push(path, unknown("key", &field, &known));
            continue;
        }
        // Deserialise the section with this one field set: an error is this field's.
        let mut alone = Map::new();
        alone.insert(field.clone(), value.clone());
        if let Err(e) = deserialize_section(info.key, Value::Object(alone)) {
            problems.push(path, type_message(&e.to_string(), &value));
            continue;
        }
        clean.insert(field, value);
    }
    clean
}

fn deserialize_section(key: &str, value: Value) -> Result<(), serde_json::Error> {
    let mut top = Map::new();
    top.insert(key.to_owned(), value);
    serde_json::from_value::<Settings>(Value::Object(top)).map(|_| ())
}

fn type_message(serde: &str, value: &Value) -> String {
    let serde = serde.split(" at line ").next().unwrap_or(serde);
    format!("{serde} (found {})", short(value))
}

fn unknown(what: &str, key: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, k)) => format!("unknown {what}; did you mean \"{k}\"?"),
        None => format!("unknown {what}; expected one of {}", known.join(", ")),
    }
}

/// The largest secret file read: a secret, or a list of tokens, is far smaller; a path
/// such as /dev/zero must end in an error, not in reading for ever.
const MAX_SECRET_FILE: u64 = 1 << 20;

fn read_small(file: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(std::io::Error::other(format!(
            "longer than {MAX_SECRET_FILE} bytes; not a secret file"
        )));
    }
    Ok(text)
}

fn read_secret_files(s: &mut Settings, problems: &mut Problems) {
    let mut read = |path: &str, file: &str| -> Option<String> {
        match read_small(file) {
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
            Err(e) => {
                problems.push(path, format!("cannot read \"{file}\": {e}"));
                None
            }
        }
    };
    if !s.mqtt.password_file.is_empty() && s.mqtt.password.is_empty() {
        if let Some(v) = read("mqtt.password_file", &s.mqtt.password_file) {
            s.mqtt.password = v;
        }
    }
    if !s.sigfox.secret_file.is_empty() && s.sigfox.secret.is_empty() {
        if let Some(v) = read("sigfox.secret_file", &s.sigfox.secret_file) {
            s.sigfox.secret = v;
        }
    }
    if !s.http.api_tokens_file.is_empty() {
        if let Some(v) = read("http.api_tokens_file", &s.http.api_tokens_file) {
            let tokens = v
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'));
            s.http.api_tokens.extend(tokens.map(str::to_owned));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
