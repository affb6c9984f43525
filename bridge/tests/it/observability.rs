//! `deploy/grafana` and `deploy/prometheus` against the bridge itself: every metric a
//! dashboard query or an alert rule names is one the running bridge exports, with the
//! labels it uses. (`promtool check rules` and `promtool test rules` run in the test
//! command.)
use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn deploy(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../deploy/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// The sample names the exposition can carry, with each family's label names:
/// `longproto_x_total` of a counter, `_bucket`/`_sum`/`_count` of a histogram (`le`).
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let labels: BTreeSet<String> = metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .filter_map(|l| l.split_once('{'))
            .flat_map(|(_, ls)| {
                ls.split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let samples: Vec<String> = match kind {
            "counter" => vec![format!("{name}_total"), format!("{name}_created")],
            "histogram" => ["_bucket", "_sum", "_count", "_created"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            _ => vec![name.to_owned()],
        };
        for s in samples {
            let mut l = labels.clone();
            if s.ends_with("_bucket") {
                l.insert("le".into());
            }
            out.insert(s, l);
        }
    }
    out
}

/// The `longproto_…` metrics a PromQL expression names, with the labels its selectors and
/// `by (…)` clauses use.
fn named(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("longproto_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = BTreeSet::new();
        if let Some(sel) = tail[end..].strip_prefix('{') {
            let sel = &sel[..sel.find('}').unwrap()];
            for m in sel.split(',') {
                let key: String = m
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !key.is_empty() {
                    labels.insert(key);
                }
            }
        }
        out.push((name, labels));
        rest = &tail[end..];
    }
    out
}

/// The labels of every `by (…)` in an expression.
fn grouped_by(expr: &str) -> BTreeSet<String> {
    expr.match_indices("by (")
        .flat_map(|(i, _)| {
            let inner = &expr[i + 4..];
            inner[..inner.find(')').unwrap()]
                .split(',')
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&deploy("grafana/longproto-bridge.json")).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("panel \"{}\"", p["title"].as_str().unwrap()),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    out
}

/// Each rule's `expr`, single-line or a `|` block.
fn rule_exprs() -> Vec<(String, String)> {
    let text = deploy("prometheus/longproto-alerts.yml");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("- alert: ") {
            alert = a.to_owned();
        } else if let Some(e) = t.strip_prefix("expr: ") {
            let expr = if e == "|" {
                let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
                lines[i + 1..]
                    .iter()
                    .take_while(|l| {
                        l.len() - l.trim_start().len() >= indent && !l.trim().is_empty()
                    })
                    .map(|l| l.trim())
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                e.to_owned()
            };
            out.push((format!("alert {alert}"), expr));
        }
    }
    out
}

#[tokio::test]
async fn dashboards_and_alerts_name_only_metrics_and_labels_the_bridge_exports() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-observability")).await;
    // labelled families show their label names once they have a sample: one of each
    let auth = format!("Bearer {SIGFOX_SECRET}");
    for (seq, data) in [(1, "096e24b5e600f6b803e03039"), (2, "0102")] {
        let body =
            serde_json::json!({"device": "00510099", "seqNumber": seq, "data": data, "ack": false});
        let (status, _) = sigfox_callback(
            bridge.http_addr(),
            "/v1/sigfox/uplink",
            &auth,
            body.to_string().as_bytes(),
        )
        .await;
        assert!(status < 300, "{status}");
    }
    create_command(
        &bridge,
        "70b3d57ed0000001",
        serde_json::json!({"command": "locate"}),
    )
    .await;
    let mqtt = publisher(&broker, "observability-pub").await;
    mqtt.publish(
        "application/1/device/70b3d57ed0000001/event/up",
        rumqttc::QoS::AtLeastOnce,
        false,
        "not json",
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !metrics_text(&bridge)
        .await
        .contains("longproto_malformed_messages_total{")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the bad event was not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let exported = exported(&metrics_text(&bridge).await);
    assert!(
        metrics_text(&bridge)
            .await
            .contains("\nlongproto_store_up 1\n"),
        "the store answers"
    );

    let exprs: Vec<_> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    assert!(exprs.len() > 20, "{} expressions", exprs.len());
    let mut wrong = Vec::new();
    for (whose, expr) in &exprs {
        let names = named(expr);
        if names.is_empty() && !expr.starts_with("up{") {
            wrong.push(format!("{whose}: names no longproto metric: {expr}"));
        }
        let mut known_labels = BTreeSet::from(["instance".to_owned(), "job".to_owned()]);
        for (name, labels) in names {
            match exported.get(&name) {
                None => wrong.push(format!("{whose}: {name} is not exported")),
                Some(has) => {
                    known_labels.extend(has.iter().cloned());
                    for l in labels
                        .iter()
                        .filter(|l| !["instance", "job"].contains(&l.as_str()))
                    {
                        if !has.contains(l) {
                            wrong.push(format!("{whose}: {name} has no label {l}"));
                        }
                    }
                }
            }
        }
        for l in grouped_by(expr) {
            if !known_labels.contains(&l) {
                wrong.push(format!(
                    "{whose}: groups by {l}, which none of its metrics has"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // the window panels and alert read the 90 ms bound, which must be a bucket
    let m = metrics_text(&bridge).await;
    assert!(
        m.contains("longproto_uplink_downlink_latency_seconds_bucket{le=\"0.09\"}"),
        "no 90 ms bucket"
    );
}
