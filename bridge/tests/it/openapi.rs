//! `GET /v1/openapi.json` held to the code: every route the server's source declares is in
//! the document and every operation of the document is a route; a walk through the running
//! bridge calls every operation, with good and bad requests, and each answer's status is
//! one the document lists for it and its body validates against the documented schema
//! (JSON Schema 2020-12, by the `jsonschema` crate).
use crate::common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn document() -> Value {
    serde_json::from_str(longproto_bridge::http::openapi::DOCUMENT).expect("the document is JSON")
}

/// `{x}` path parameters written as `{}`, so that axum's names and the document's compare.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The (method, path) of every `.route(...)` in the HTTP layer's source, tests left out.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = format!("{}/src/http", env!("CARGO_MANIFEST_DIR"));
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (at, _) in code.match_indices(".route(") {
            let rest = &code[at + 7..];
            let open = rest.find('"').unwrap();
            let close = open + 1 + rest[open + 1..].find('"').unwrap();
            let route = &rest[open + 1..close];
            // the handler expression runs to the bracket that closes `.route(`
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let handlers = &rest[close..end];
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    out.insert((method.to_owned(), shape(route)));
                }
            }
        }
    }
    out
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert((method.to_owned(), shape(path)));
            }
        }
    }
    out
}

#[test]
fn every_route_of_the_server_is_in_the_document_and_back() {
    let in_source = routes_in_source();
    assert!(in_source.len() >= 10, "{in_source:?}");
    let documented = operations(&document());
    let undocumented: Vec<_> = in_source.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&in_source).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "routes not in openapi.json: {undocumented:?}; operations in it that the server lacks: {missing:?}"
    );
}

/// The document's path template of a concrete path (`/v1/commands/abc` → `/v1/commands/{command_id}`).
fn template<'d>(doc: &'d Value, path: &str) -> &'d str {
    let path = path.split('?').next().unwrap();
    let parts: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == parts.len()
                && ts
                    .iter()
                    .zip(&parts)
                    .all(|(t, p)| t.starts_with('{') || t == p)
        })
        // a literal segment wins over a parameter
        .max_by_key(|t| t.split('/').filter(|s| !s.starts_with('{')).count())
        .unwrap_or_else(|| panic!("{path} matches no path of the document"))
}

/// Checks one answer against the document; returns the operation it exercised.
fn check(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> (String, String) {
    let t = template(doc, path);
    let op = &doc["paths"][t][method.to_lowercase()];
    assert!(op.is_object(), "{method} {t} is not in the document");
    let documented = &op["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path} answered {status}, which the document does not list: {}",
        String::from_utf8_lossy(body)
    );
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    match documented.get("content") {
        None => assert!(body.is_empty(), "{method} {path} {status} has a body"),
        Some(content) => {
            let (media, _) = content.as_object().unwrap().iter().next().unwrap();
            assert!(
                content_type.starts_with(media.as_str()),
                "{method} {path} {status}: content-type {content_type}, documented {media}"
            );
            if media == "application/json" {
                let instance: Value = serde_json::from_slice(body).expect("a JSON body");
                let pointer = format!(
                    "#/paths/{}/{}/responses/{status}/content/application~1json/schema",
                    // a JSON pointer in a URI fragment: `~` and `/` escaped, braces encoded
                    t.replace('~', "~0")
                        .replace('/', "~1")
                        .replace('{', "%7B")
                        .replace('}', "%7D"),
                    method.to_lowercase()
                );
                let mut schema = doc.clone();
                schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
                schema["$ref"] = json!(pointer);
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .expect("the schema compiles");
                let errors: Vec<String> = validator
                    .iter_errors(&instance)
                    .map(|e| format!("{} at {}", e, e.instance_path))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{method} {path} {status}: {instance} does not match the schema: {errors:?}"
                );
            }
        }
    }
    (method.to_lowercase(), shape(t))
}

/// A request of the walk: method, path, authorization, content type, body, and the
/// status it must get.
type Step<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    u16,
);

#[tokio::test]
async fn a_walk_through_every_operation_answers_as_the_document_says() {
    let doc = document();
    let broker = Mosquitto::start();
    let mut config = settings(&broker, "bridge-openapi");
    // a named token that may only read, and only Sigfox devices
    let reader_secret = "reader-secret-0123456789";
    config.operators.token.insert(
        "reader".into(),
        gateway_config::TokenSettings {
            secret_sha256: longproto_bridge::operators::hash_secret(reader_secret),
            scopes: vec!["read".into()],
            devices: vec!["sigfox/*".into()],
        },
    );
    let bridge = start_bridge(&broker, config).await;
    let reader = format!("Bearer {reader_secret}");
    let addr = bridge.http_addr();
    let bearer = format!("Bearer {TOKEN}");
    let sigfox = format!("Bearer {SIGFOX_SECRET}");
    let lora = "/v1/devices/lorawan/70b3d57ed0000001";
    let unlock = json!({"id": "walk-1", "command": "unlock", "args": {"auto_relock_s": 30}});
    let big = json!({"command": "lock", "id": "x".repeat(20_000)});
    let uplink = |seq: u32, ack: bool| json!({"device": "0051aa01", "seqNumber": seq, "data": "096e24b5e600f6b803e03039", "ack": ack});
    let walk: Vec<Step> = vec![
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("application/json"), unlock.to_string().into_bytes(), 202),
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("application/json"), unlock.to_string().into_bytes(), 202),
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("application/json"), json!({"id": "walk-1", "command": "lock"}).to_string().into_bytes(), 409),
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("application/json"), br#"{"command":"fly"}"#.to_vec(), 400),
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("application/json"), b"{not json".to_vec(), 400),
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("text/plain"), b"unlock".to_vec(), 415),
        ("POST", format!("{lora}/commands"), Some(&bearer), Some("application/json"), big.to_string().into_bytes(), 413),
        ("POST", format!("{lora}/commands"), None, Some("application/json"), unlock.to_string().into_bytes(), 401),
        ("POST", "/v1/devices/lorawan/xyz/commands".into(), Some(&bearer), Some("application/json"), unlock.to_string().into_bytes(), 400),
        ("GET", format!("{lora}/commands"), Some(&bearer), None, vec![], 200),
        ("GET", format!("{lora}/commands?state=queued&limit=5"), Some(&bearer), None, vec![], 200),
        ("GET", format!("{lora}/commands?state=nope"), Some(&bearer), None, vec![], 400),
        ("GET", format!("{lora}/commands?limit=0"), Some(&bearer), None, vec![], 400),
        ("GET", format!("{lora}/commands"), Some("Bearer wrong"), None, vec![], 401),
        ("GET", "/v1/devices/lorawan/70b3d57ed00000ff".into(), Some(&bearer), None, vec![], 404),
        ("GET", "/v1/devices/mars/0001".into(), Some(&bearer), None, vec![], 400),
        ("GET", "/v1/devices/lorawan/0001".into(), None, None, vec![], 401),
        ("GET", "/v1/commands/walk-1".into(), Some(&bearer), None, vec![], 200),
        ("GET", "/v1/commands/no-such-command".into(), Some(&bearer), None, vec![], 404),
        ("GET", "/v1/commands/walk-1".into(), None, None, vec![], 401),
        ("DELETE", "/v1/commands/walk-1".into(), Some(&bearer), None, vec![], 200),
        ("DELETE", "/v1/commands/walk-1".into(), Some(&bearer), None, vec![], 409),
        ("DELETE", "/v1/commands/no-such-command".into(), Some(&bearer), None, vec![], 404),
        ("DELETE", "/v1/commands/walk-1".into(), None, None, vec![], 401),
        ("POST", "/v1/sigfox/uplink".into(), Some(&sigfox), Some("application/json"), uplink(1, false).to_string().into_bytes(), 204),
        ("GET", "/v1/devices/sigfox/0051aa01".into(), Some(&bearer), None, vec![], 200),
        ("POST", "/v1/devices/sigfox/0051aa01/commands".into(), Some(&bearer), Some("application/json"), br#"{"command":"locate"}"#.to_vec(), 202),
        ("POST", "/v1/sigfox/uplink".into(), Some(&sigfox), Some("application/json"), uplink(2, true).to_string().into_bytes(), 200),
        ("POST", "/v1/sigfox/uplink".into(), Some(&sigfox), Some("application/x-www-form-urlencoded"), b"device=0051aa01&seqNumber=3&data=096e24b5e600f6b803e03039&ack=false".to_vec(), 204),
        ("POST", "/v1/sigfox/uplink".into(), Some(&sigfox), Some("application/json"), br#"{"seqNumber":4}"#.to_vec(), 400),
        ("POST", "/v1/sigfox/uplink".into(), Some("Bearer wrong"), Some("application/json"), uplink(5, false).to_string().into_bytes(), 401),
        ("POST", "/v1/sigfox/ack".into(), Some(&sigfox), Some("application/json"), json!({"device": "0051aa01", "infoCode": 0, "downlinkAck": true, "infoMessage": "Acked"}).to_string().into_bytes(), 204),
        ("POST", "/v1/sigfox/ack".into(), Some(&sigfox), Some("application/json"), b"[1]".to_vec(), 400),
        ("POST", "/v1/sigfox/ack".into(), None, Some("application/json"), b"{}".to_vec(), 401),
        // scopes: a device the token may not see is unknown; one it sees but may not command is 403
        ("POST", format!("{lora}/commands"), Some(&reader), Some("application/json"), br#"{"command":"lock"}"#.to_vec(), 404),
        ("POST", "/v1/devices/sigfox/0051aa01/commands".into(), Some(&reader), Some("application/json"), br#"{"command":"lock"}"#.to_vec(), 403),
        ("GET", "/v1/devices/sigfox/0051aa01/commands".into(), Some(&reader), None, vec![], 200),
        ("GET", "/v1/commands/walk-1".into(), Some(&reader), None, vec![], 404),
        // groups
        ("PUT", "/v1/groups/depot/devices/lorawan/70b3d57ed0000001".into(), Some(&bearer), None, vec![], 204),
        ("PUT", "/v1/groups/depot/devices/sigfox/0051aa01".into(), Some(&bearer), None, vec![], 204),
        ("PUT", "/v1/groups/Depot%20One/devices/sigfox/0051aa01".into(), Some(&bearer), None, vec![], 400),
        ("PUT", "/v1/groups/depot/devices/sigfox/0051aa01".into(), Some(&reader), None, vec![], 403),
        ("PUT", "/v1/groups/depot/devices/lorawan/70b3d57ed0000001".into(), Some(&reader), None, vec![], 404),
        ("GET", "/v1/groups/depot".into(), Some(&bearer), None, vec![], 200),
        ("GET", "/v1/groups/depot".into(), Some(&reader), None, vec![], 200),
        ("GET", "/v1/groups/nobody".into(), Some(&bearer), None, vec![], 404),
        ("GET", "/v1/groups/depot".into(), None, None, vec![], 401),
        // batches
        ("POST", "/v1/batches".into(), Some(&bearer), Some("application/json"), json!({"group": "depot", "command": "locate", "id": "walk-batch"}).to_string().into_bytes(), 202),
        ("POST", "/v1/batches".into(), Some(&bearer), Some("application/json"), json!({"group": "depot", "command": "locate", "id": "walk-batch"}).to_string().into_bytes(), 200),
        ("POST", "/v1/batches".into(), Some(&bearer), Some("application/json"), json!({"devices": ["sigfox/0051aa01"], "command": "locate"}).to_string().into_bytes(), 202),
        ("POST", "/v1/batches".into(), Some(&bearer), Some("application/json"), br#"{"command":"lock"}"#.to_vec(), 400),
        ("POST", "/v1/batches".into(), Some(&bearer), Some("application/json"), json!({"group": "nobody", "command": "lock"}).to_string().into_bytes(), 404),
        ("POST", "/v1/batches".into(), Some(&reader), Some("application/json"), json!({"group": "depot", "command": "lock"}).to_string().into_bytes(), 403),
        ("POST", "/v1/batches".into(), Some(&bearer), Some("text/plain"), b"lock".to_vec(), 415),
        ("POST", "/v1/batches".into(), None, Some("application/json"), b"{}".to_vec(), 401),
        ("GET", "/v1/batches/walk-batch".into(), Some(&bearer), None, vec![], 200),
        ("GET", "/v1/batches/walk-batch".into(), Some(&reader), None, vec![], 404),
        ("GET", "/v1/batches/no-such-batch".into(), Some(&bearer), None, vec![], 404),
        ("GET", "/v1/batches/walk-batch".into(), None, None, vec![], 401),
        ("DELETE", "/v1/groups/depot/devices/lorawan/70b3d57ed0000001".into(), Some(&bearer), None, vec![], 204),
        ("DELETE", "/v1/groups/depot/devices/lorawan/70b3d57ed0000001".into(), None, None, vec![], 401),
        ("GET", "/healthz".into(), None, None, vec![], 200),
        ("GET", "/metrics".into(), None, None, vec![], 200),
        ("GET", "/v1/openapi.json".into(), None, None, vec![], 200),
    ];
    let mut exercised = BTreeSet::new();
    for (method, path, auth, content_type, body, want) in walk {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        let (status, answer_headers, answer) = http(addr, method, &path, &headers, &body).await;
        assert_eq!(
            status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer)
        );
        let answer_headers: Vec<(String, String)> = answer_headers
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        exercised.insert(check(&doc, method, &path, status, &answer_headers, &answer));
    }
    let never: Vec<_> = operations(&doc).difference(&exercised).cloned().collect();
    assert!(never.is_empty(), "the walk never called {never:?}");
    // the served document is the one in the source
    let (_, _, served) = http(addr, "GET", "/v1/openapi.json", &[], b"").await;
    assert_eq!(serde_json::from_slice::<Value>(&served).unwrap(), doc);
}
