//! The commented default configuration, rendered from the settings' own declarations.
use crate::settings::Settings;
use std::fmt::Write;

/// The full default configuration as TOML, every key with its documentation. Parsing it
/// back gives exactly `Settings::default()`.
pub fn render_default() -> String {
    let defaults = toml::Table::try_from(Settings::default()).unwrap_or_default();
    let mut out = String::new();
    out.push_str(
        "# longproto-bridge configuration.\n\
         #\n\
         # Every key is optional: an empty file is a valid configuration, and the values\n\
         # below are the defaults. Files given with -c are merged in order, then\n\
         # LONGPROTO__SECTION__KEY environment variables override single keys,\n\
         # e.g. LONGPROTO__MQTT__SERVER=mqtts://broker.example:8883.\n",
    );
    for info in Settings::SECTIONS {
        let Some(toml::Value::Table(section)) = defaults.get(info.key) else {
            continue;
        };
        out.push('\n');
        comment(&mut out, info.doc);
        let _ = writeln!(out, "[{}]", info.key);
        for (field, doc) in info
            .fields
            .iter()
            .filter(|f| !info.open_tables.contains(&f.0))
        {
            comment(&mut out, doc);
            if let Some(value) = section.get(*field) {
                let _ = writeln!(out, "{field} = {value}");
            }
        }
        for (field, doc) in info
            .fields
            .iter()
            .filter(|f| info.open_tables.contains(&f.0))
        {
            out.push('\n');
            comment(&mut out, doc);
            let _ = writeln!(out, "[{}.{field}]", info.key);
        }
    }
    out
}

fn comment(out: &mut String, doc: &[&str]) {
    for line in doc {
        let line = line.strip_prefix(' ').unwrap_or(line);
        let _ = writeln!(out, "#{}{line}", if line.is_empty() { "" } else { " " });
    }
}
