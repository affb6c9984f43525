//! Operators through real HTTP: named tokens and their scopes, what a token may see,
//! rotation without a restart, who asked for each command, and a command to a group of
//! a thousand simulated vehicles with its batch's progress.
use crate::common::*;
use gateway_config::TokenSettings;
use longproto_bridge::operators::hash_secret;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A named token's configuration.
fn token(secret: &str, scopes: &[&str], devices: &[&str]) -> TokenSettings {
    TokenSettings {
        secret_sha256: hash_secret(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        devices: devices.iter().map(|s| s.to_string()).collect(),
    }
}

/// One request with this bearer secret: status and JSON body (null when none).
async fn call(
    bridge: &longproto_bridge::app::Bridge,
    secret: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {secret}");
    let mut headers = vec![("Authorization", auth.as_str())];
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, _, answer) = http(bridge.http_addr(), method, path, &headers, &bytes).await;
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

/// Waits up to 10 s until `GET path` with this secret answers `want`.
async fn until_status(
    bridge: &longproto_bridge::app::Bridge,
    secret: &str,
    path: &str,
    want: u16,
    why: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(bridge, secret, "GET", path, None).await.0 != want {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const VIEWER: &str = "viewer-secret-0123456789";
const OPS: &str = "ops-secret-0123456789abc";
const LISBON: &str = "lisbon-secret-0123456789";

#[tokio::test]
async fn a_read_only_token_may_look_but_not_create_or_cancel() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "ops-readonly");
    s.operators
        .token
        .insert("viewer".into(), token(VIEWER, &["read"], &[]));
    s.operators
        .token
        .insert("ops".into(), token(OPS, &["read", "command"], &[]));
    let bridge = start_bridge(&broker, s).await;
    let path = "/v1/devices/lorawan/70b3d57ed0000001/commands";
    let (status, cmd) = call(
        &bridge,
        OPS,
        "POST",
        path,
        Some(&json!({"command": "lock"})),
    )
    .await;
    assert_eq!(status, 202, "{cmd}");
    let id = cmd["id"].as_str().unwrap();

    let (status, e) = call(
        &bridge,
        VIEWER,
        "POST",
        path,
        Some(&json!({"command": "unlock"})),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["error"]["code"], "forbidden");
    assert_eq!(
        e["error"]["message"],
        "the token \"viewer\" has no command scope"
    );
    let (status, e) = call(
        &bridge,
        VIEWER,
        "DELETE",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{e}");
    // it may read, and nothing changed
    let (status, c) = call(&bridge, VIEWER, "GET", &format!("/v1/commands/{id}"), None).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["state"], "queued");
    let (status, list) = call(&bridge, VIEWER, "GET", path, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["commands"].as_array().unwrap().len(), 1, "{list}");
    // the legacy plain token still has every scope
    let (status, _) = api(
        bridge.http_addr(),
        "DELETE",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_group_scoped_token_cannot_tell_another_groups_vehicle_from_one_that_does_not_exist() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "ops-groups");
    s.operators.token.insert(
        "lisbon-ops".into(),
        token(LISBON, &["read", "command"], &["group:lisbon"]),
    );
    s.operators
        .group
        .insert("lisbon".into(), vec!["lorawan/70b3d57ed0000001".into()]);
    s.operators
        .group
        .insert("porto".into(), vec!["lorawan/70b3d57ed0000002".into()]);
    let bridge = start_bridge(&broker, s).await;
    let cs = ChirpstackDouble::new(&broker, "app-1").await;
    // both vehicles exist: each has sent an uplink and has a command
    for (i, eui) in ["70b3d57ed0000001", "70b3d57ed0000002"].iter().enumerate() {
        cs.up(eui, 5, i as u32 + 1, "096e24b5e600f6b803e03039")
            .await;
    }
    let porto = create_command(&bridge, "70b3d57ed0000002", json!({"command": "lock"})).await;
    let porto_id = porto["id"].as_str().unwrap();
    let state = "/v1/devices/lorawan/70b3d57ed0000002";
    until_status(&bridge, TOKEN, state, 200, "the uplink never arrived").await;

    // the same answer, byte for byte but for the id, as for a vehicle that does not exist
    let hidden = "lorawan/70b3d57ed0000002";
    let missing = "lorawan/70b3d57ed00000ff";
    for (method, suffix, body) in [
        ("GET", "", None),
        ("GET", "/commands", None),
        ("POST", "/commands", Some(json!({"command": "unlock"}))),
    ] {
        let (s1, b1) = call(
            &bridge,
            LISBON,
            method,
            &format!("/v1/devices/{hidden}{suffix}"),
            body.as_ref(),
        )
        .await;
        let (s2, b2) = call(
            &bridge,
            LISBON,
            method,
            &format!("/v1/devices/{missing}{suffix}"),
            body.as_ref(),
        )
        .await;
        assert_eq!((s1, s2), (404, 404), "{method} {suffix}: {b1} / {b2}");
        assert_eq!(
            b1.to_string(),
            b2.to_string().replace(missing, hidden),
            "{method} {suffix}"
        );
    }
    let (s1, b1) = call(
        &bridge,
        LISBON,
        "GET",
        &format!("/v1/commands/{porto_id}"),
        None,
    )
    .await;
    let (s2, b2) = call(&bridge, LISBON, "GET", "/v1/commands/no-such-command", None).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(
        b1.to_string(),
        b2.to_string().replace("no-such-command", porto_id)
    );
    let (s1, _) = call(
        &bridge,
        LISBON,
        "DELETE",
        &format!("/v1/commands/{porto_id}"),
        None,
    )
    .await;
    assert_eq!(s1, 404);
    let (status, _) = api(
        bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{porto_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "the full token still sees it, still queued");

    // its own group's vehicle it may see and command
    let (status, c) = call(
        &bridge,
        LISBON,
        "POST",
        "/v1/devices/lorawan/70b3d57ed0000001/commands",
        Some(&json!({"command": "unlock"})),
    )
    .await;
    assert_eq!(status, 202, "{c}");
    let (status, g) = call(&bridge, LISBON, "GET", "/v1/groups/porto", None).await;
    assert_eq!(status, 404, "{g}");

    // a ChirpStack device tag puts a third vehicle into Lisbon: now the token sees it
    let third = "lorawan/70b3d57ed0000003";
    let (status, _) = call(
        &bridge,
        LISBON,
        "GET",
        &format!("/v1/devices/{third}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    cs.up_tagged(
        "70b3d57ed0000003",
        1,
        "096e24b5e600f6b803e03039",
        json!({"group": "lisbon, scooters"}),
    )
    .await;
    let path = format!("/v1/devices/{third}");
    until_status(
        &bridge,
        LISBON,
        &path,
        200,
        "the tag never made it a member",
    )
    .await;
    let (_, g) = call(&bridge, LISBON, "GET", "/v1/groups/lisbon", None).await;
    assert_eq!(
        g["devices"],
        json!([
            {"device": "lorawan/70b3d57ed0000001", "sources": ["config"]},
            {"device": third, "sources": ["tag"]}
        ])
    );
    // and the tag changed: out again
    cs.up_tagged(
        "70b3d57ed0000003",
        2,
        "096e24b5e600f6b803e03039",
        json!({"group": "porto"}),
    )
    .await;
    until_status(
        &bridge,
        LISBON,
        &path,
        404,
        "the tag's change did not take it out",
    )
    .await;
}

#[tokio::test]
async fn tokens_rotate_through_the_tokens_file_without_a_restart() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let write = |secrets: &[(&str, &str)]| {
        let mut text = String::from("[token]\n");
        for (name, secret) in secrets {
            text += &format!(
                "{name} = {{ secret_sha256 = \"{}\", scopes = [\"read\", \"command\"] }}\n",
                hash_secret(secret)
            );
        }
        // a new file, renamed over the old one, as a deployment tool writes it
        let tmp = dir.path().join("tokens.tmp");
        write_keys(&tmp, &text);
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(&[("alice", "alice-secret-0123456789")]);
    let mut s = settings(&broker, "ops-rotate");
    s.operators.tokens_file = file.display().to_string();
    let bridge = start_bridge(&broker, s).await;
    let path = "/v1/devices/sigfox/0051aa01/commands";
    let (status, _) = call(&bridge, "alice-secret-0123456789", "GET", path, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&bridge, "alice-secret-9876543210", "GET", path, None).await;
    assert_eq!(status, 401);

    // rotate alice's secret, add bob
    write(&[
        ("alice", "alice-secret-9876543210"),
        ("bob", "bob-secret-0123456789ab"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let old = call(&bridge, "alice-secret-0123456789", "GET", path, None)
            .await
            .0;
        let new = call(&bridge, "alice-secret-9876543210", "GET", path, None)
            .await
            .0;
        let bob = call(&bridge, "bob-secret-0123456789ab", "GET", path, None)
            .await
            .0;
        if (old, new, bob) == (401, 200, 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 6 s: old {old}, new {new}, bob {bob}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a broken file keeps the tokens in force
    let tmp = dir.path().join("tokens.tmp");
    write_keys(&tmp, "[token]\nbob = { secret_sha256 = \"not hex\" }\n");
    std::fs::rename(&tmp, &file).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        call(&bridge, "bob-secret-0123456789ab", "GET", path, None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn every_command_says_who_asked_in_its_history_its_events_and_the_metrics() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "ops-origin");
    s.operators
        .token
        .insert("ops".into(), token(OPS, &["read", "command"], &[]));
    let bridge = start_bridge(&broker, s).await;
    let mut events = Watcher::new(
        &broker,
        "ops-origin-events",
        &["longproto/v1/+/+/command-events"],
    )
    .await;

    let (status, cmd) = call(
        &bridge,
        OPS,
        "POST",
        "/v1/devices/lorawan/70b3d57ed0000001/commands",
        Some(&json!({"command": "lock"})),
    )
    .await;
    assert_eq!(status, 202);
    let id = cmd["id"].as_str().unwrap().to_owned();
    let by_ops = json!({"via": "http", "token": "ops"});
    assert_eq!(cmd["origin"], by_ops);
    let queued = wait_state(&mut events, &id, "queued").await;
    assert_eq!(queued["origin"], by_ops, "{queued}");

    // over MQTT, with who asks
    let mqtt = publisher(&broker, "ops-origin-pub").await;
    mqtt.publish(
        "longproto/v1/lorawan/70b3d57ed0000002/command",
        rumqttc::QoS::AtLeastOnce,
        false,
        json!({"command": "locate", "id": "by-alice", "requested_by": "alice@depot"}).to_string(),
    )
    .await
    .unwrap();
    let e = wait_state(&mut events, "by-alice", "queued").await;
    assert_eq!(
        e["origin"],
        json!({"via": "mqtt", "requested_by": "alice@depot"})
    );

    // the cancellation is the canceller's
    let (status, _) = call(&bridge, OPS, "DELETE", "/v1/commands/by-alice", None).await;
    assert_eq!(status, 200);
    let e = wait_state(&mut events, "by-alice", "cancelled").await;
    assert_eq!(e["origin"], by_ops);
    let (_, c) = call(&bridge, OPS, "GET", "/v1/commands/by-alice", None).await;
    assert_eq!(
        c["origin"],
        json!({"via": "mqtt", "requested_by": "alice@depot"})
    );
    let history: Vec<(&str, &Value)> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["state"].as_str().unwrap(), &h["origin"]))
        .collect();
    assert_eq!(
        history,
        [
            (
                "queued",
                &json!({"via": "mqtt", "requested_by": "alice@depot"})
            ),
            ("cancelled", &by_ops)
        ]
    );
    // over HTTP there is no requested_by: the token says who
    let (status, e) = call(
        &bridge,
        OPS,
        "POST",
        "/v1/devices/lorawan/70b3d57ed0000001/commands",
        Some(&json!({"command": "lock", "requested_by": "mallory"})),
    )
    .await;
    assert_eq!(status, 400, "{e}");

    let m = metrics_text(&bridge).await;
    assert!(
        m.contains("longproto_commands_created_total{origin=\"ops\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("longproto_commands_created_total{origin=\"mqtt\"} 1\n"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_to_a_group_of_a_thousand_vehicles_reaches_each_and_its_batch_counts_them() {
    use crate::fleet::{KillOnDrop, fleet_binary};
    const N: u32 = 1000;
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "ops-batch");
    s.operators
        .token
        .insert("ops".into(), token(OPS, &["read", "command"], &[]));
    let euis: Vec<String> = (1..=N).map(|n| format!("70b3d57ed{n:07x}")).collect();
    s.operators.group.insert(
        "depot".into(),
        euis.iter().map(|e| format!("lorawan/{e}")).collect(),
    );
    let bridge = start_bridge(&broker, s).await;
    let mut progress =
        Watcher::new(&broker, "ops-batch-progress", &["longproto/v1/batches/+"]).await;

    // a thousand class A vehicles reporting every 5 s through the ChirpStack double
    let child = std::process::Command::new(fleet_binary())
        .args([
            "--mqtt",
            &broker.url(),
            "--http",
            &bridge.http_addr().to_string(),
        ])
        .args(["--lorawan", &N.to_string(), "--class-c", "0"])
        .args(["--interval", "5", "--rx-delay-ms", "300", "--seed", "7"])
        .args(["--duration", "180", "--report-every", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("longproto-fleet starts");
    let _sim = KillOnDrop(child);

    let commits = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("longproto_command_creation_commits_total "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    };
    let before = commits(&metrics_text(&bridge).await);
    let (status, created) = call(
        &bridge,
        OPS,
        "POST",
        "/v1/batches",
        Some(&json!({"group": "depot", "command": "locate", "id": "depot-locate", "ttl_s": 600})),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["total"], N);
    assert_eq!(
        commits(&metrics_text(&bridge).await),
        before + 1,
        "a thousand commands, one transaction"
    );

    // each vehicle takes its own command in its next window and acknowledges it
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = Value::Null;
    loop {
        let (status, p) = call(&bridge, OPS, "GET", "/v1/batches/depot-locate", None).await;
        assert_eq!(status, 200, "{p}");
        let sum: u64 = p["states"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(sum, N as u64, "every command counted once: {p}");
        if p["states"]["executed"] == N {
            assert_eq!(p["open"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "after 120 s: {p}");
        last = p;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_ne!(last, Value::Null, "the batch was seen on its way");
    // the retained progress on MQTT reaches the same counts
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (topic, payload, _) = progress
            .next_where(Duration::from_secs(10), |_| true)
            .await
            .expect("batch progress on MQTT");
        assert_eq!(topic, "longproto/v1/batches/depot-locate");
        let p: Value = serde_json::from_slice(&payload).unwrap();
        if p["states"]["executed"] == N {
            break;
        }
        assert!(Instant::now() < deadline, "MQTT progress stuck at {p}");
    }
    // one of them, as the API shows it: its own counter, the batch, who asked
    let (_, list) = call(
        &bridge,
        OPS,
        "GET",
        &format!("/v1/devices/lorawan/{}/commands", euis[499]),
        None,
    )
    .await;
    let c = &list["commands"][0];
    assert_eq!(c["batch_id"], "depot-locate");
    assert_eq!(c["origin"], json!({"via": "http", "token": "ops"}));
    assert_eq!(c["state"], "executed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_one_batch_id_at_once_create_one_batch() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "ops-batch-once");
    s.operators
        .token
        .insert("ops".into(), token(OPS, &["read", "command"], &[]));
    s.operators.group.insert(
        "yard".into(),
        (1..=200u32)
            .map(|n| format!("lorawan/70b3d57ed{n:07x}"))
            .collect(),
    );
    let bridge = start_bridge(&broker, s).await;
    let body = json!({"group": "yard", "command": "lock", "id": "yard-lock"});
    let requests = (0..8).map(|_| call(&bridge, OPS, "POST", "/v1/batches", Some(&body)));
    let answers = futures_util::future::join_all(requests).await;
    let created = answers.iter().filter(|(s, _)| *s == 202).count();
    let repeated = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 7), "{answers:?}");
    let (_, p) = call(&bridge, OPS, "GET", "/v1/batches/yard-lock", None).await;
    assert_eq!(p["total"], 200, "one command per device: {p}");
}
