//! Two bridges, one PostgreSQL, one broker (docs/deployment.md): the standby answers
//! 503 and opens no MQTT session; after a `kill -9` of the active one it takes the lock
//! and the same persistent session, and nothing is lost or executed twice; an active
//! bridge whose lock session ends exits at once.
use crate::common::*;
use serde_json::{Value, json};
use std::process::Child;
use std::time::{Duration, Instant};

/// Both bridges' MQTT client id: one persistent session, whichever is active.
const CLIENT: &str = "bridge-ha";

/// A bridge binary on the shared broker and database, its own HTTP port.
struct Node(BridgeProcess);

impl Node {
    fn new(broker: &Mosquitto, db: &str) -> Node {
        Node(BridgeProcess::new(broker, CLIENT, Some(db)))
    }

    fn spawn(&mut self) {
        self.0.start("info");
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.0.addr
    }

    /// `/healthz`: status, `Retry-After`, body; `None` while nothing listens.
    async fn health(&self) -> Option<(u16, Option<String>, Value)> {
        let r = longproto_fleet::http::request(self.addr(), "GET", "/healthz", &[], b"");
        let r = tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .ok()?
            .ok()?;
        let retry = r
            .headers
            .iter()
            .find(|(k, _)| k == "retry-after")
            .map(|(_, v)| v.clone());
        Some((r.status, retry, serde_json::from_slice(&r.body).ok()?))
    }

    /// Waits until `/healthz` says `role`; how long that took.
    async fn until_role(&self, role: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some((_, _, v)) = self.health().await {
                if v["role"] == role {
                    return start.elapsed();
                }
            }
            assert!(
                start.elapsed() < within,
                "{} did not become {role} within {within:?}",
                self.addr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The hex of an ack record: counter, opcode, result (0: executed).
fn ack(counter: u16, opcode: u8) -> String {
    hex::encode([0x84, (counter >> 8) as u8, counter as u8, opcode, 0])
}

/// A command through the API of `node`: its `202` body.
async fn command(node: &Node, eui: &str, body: Value) -> Value {
    let path = format!("/v1/devices/lorawan/{eui}/commands");
    let (status, v) = api(node.addr(), "POST", &path, Some(&body)).await;
    assert_eq!(status, 202, "{v}");
    v
}

/// The f_cnt of each telemetry message seen on `tele` within `quiet` of the last one.
async fn f_cnts(tele: &mut Watcher, quiet: Duration) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some((_, p, _)) = tele.next_where(quiet, |_| true).await {
        let v: Value = serde_json::from_slice(&p).unwrap();
        seen.push(v["meta"]["f_cnt"].as_u64().unwrap_or_else(|| panic!("{v}")));
    }
    seen
}

fn exit_code_within(child: &mut Child, within: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_waits_without_a_session_then_takes_over_a_kill_9_losing_nothing() {
    let broker = Mosquitto::start();
    let db = postgres_database().await;
    let (mut a, mut b) = (Node::new(&broker, &db), Node::new(&broker, &db));
    let eui = "70b3d57ed00a0001";
    let mut cs = ChirpstackDouble::new(&broker, "app-ha").await;
    let mut tele = Watcher::new(&broker, "ha-tele", &["longproto/v1/lorawan/+/telemetry"]).await;
    let mut events = Watcher::new(&broker, "ha-events", &["longproto/v1/+/+/command-events"]).await;

    a.spawn();
    wait_status(&broker, b"online").await;
    let mut status_topic =
        Watcher::new(&broker, "ha-status", &["longproto/v1/bridge/status"]).await;
    let retained = status_topic
        .next_where(Duration::from_secs(5), |_| true)
        .await;
    assert_eq!(retained.unwrap().1, b"online"[..]);
    b.spawn();
    b.until_role("standby", Duration::from_secs(30)).await;
    let (status, retry, body) = b.health().await.unwrap();
    assert_eq!(
        (status, retry.as_deref(), &body),
        (
            503,
            Some("1"),
            &json!({"role": "standby", "mqtt": "down", "store": "up"})
        )
    );
    let (status, body) = api(b.addr(), "GET", &format!("/v1/devices/lorawan/{eui}"), None).await;
    assert_eq!((status, &body["error"]["code"]), (503, &json!("standby")));
    let (status, _, body) = a.health().await.unwrap();
    assert_eq!((status, &body["role"]), (200, &json!("active")));

    // the active one serves: a command, its window, its hand-over
    let c1 = command(&a, eui, json!({"command": "lock"})).await;
    cs.up(eui, 5, 1, "").await;
    let (_, down, data) = cs.next_down(Duration::from_secs(10)).await.unwrap();
    assert_eq!(u16::from_be_bytes([data[1], data[2]]), 1);
    cs.txack(eui, down["id"].as_str().unwrap()).await;
    wait_state(&mut events, c1["id"].as_str().unwrap(), "sent").await;
    // a standby with a session of its own would have taken A's, and the broker would
    // have published A's last will
    let took = status_topic
        .next_where(Duration::from_millis(500), |_| true)
        .await;
    assert!(took.is_none(), "the standby opened a session: {took:?}");
    let c2 = command(&a, eui, json!({"command": "locate"})).await;
    assert_eq!(c2["counter"], 2);

    // kill -9; the device goes on talking while no bridge holds the session
    a.0.kill9();
    let killed = Instant::now();
    cs.up(eui, 5, 2, &ack(1, 0x01)).await;
    for f_cnt in 3..=6 {
        cs.up(eui, 5, f_cnt, "").await;
    }

    // the standby takes the lock and the session: the first window it fills carries
    // the command A accepted, with its counter, and nothing A handed over goes again
    let (_, _, data) = cs
        .next_down(Duration::from_secs(10))
        .await
        .expect("the standby fills a window after the takeover");
    let takeover = killed.elapsed();
    let counters: Vec<u16> = data
        .chunks(8)
        .map(|f| u16::from_be_bytes([f[1], f[2]]))
        .collect();
    assert_eq!(counters, [2], "only the command still queued");
    assert!(
        takeover < Duration::from_secs(5),
        "the first window after kill -9 took {takeover:?}"
    );
    eprintln!("takeover after kill -9: first window filled in {takeover:?}");
    let (status, _, body) = b.health().await.unwrap();
    assert_eq!((status, &body["role"]), (200, &json!("active")));

    // every uplink reached a bridge, once: 1 through A, 2-6 queued by the broker for B
    cs.up(eui, 5, 7, &ack(2, 0x03)).await;
    wait_state(&mut events, c1["id"].as_str().unwrap(), "executed").await;
    wait_state(&mut events, c2["id"].as_str().unwrap(), "executed").await;
    let mut seen = f_cnts(&mut tele, Duration::from_millis(1500)).await;
    seen.sort();
    assert_eq!(
        seen,
        (1..=7).collect::<Vec<u64>>(),
        "uplinks lost or repeated"
    );
    assert!(
        cs.next_down(Duration::from_millis(500)).await.is_none(),
        "a command went out twice"
    );
    for c in [&c1, &c2] {
        let path = format!("/v1/commands/{}", c["id"].as_str().unwrap());
        let (_, v) = api(b.addr(), "GET", &path, None).await;
        let executed = v["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] == "executed")
            .count();
        assert_eq!(
            (v["state"].as_str(), executed),
            (Some("executed"), 1),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_bridge_whose_lock_session_ends_exits_before_the_standby_acts() {
    use sqlx::Connection;
    let broker = Mosquitto::start();
    let db = postgres_database().await;
    let (mut a, mut b) = (Node::new(&broker, &db), Node::new(&broker, &db));
    a.spawn();
    wait_status(&broker, b"online").await;
    b.spawn();
    b.until_role("standby", Duration::from_secs(30)).await;
    let mut status = Watcher::new(&broker, "ha-status-2", &["longproto/v1/bridge/status"]).await;
    status
        .next_where(Duration::from_secs(5), |_| true)
        .await
        .expect("the retained online");

    // PostgreSQL ends the session that holds the lock (as a failover or an operator would)
    let mut admin = sqlx::PgConnection::connect(&db).await.unwrap();
    let ended: Vec<i32> = sqlx::query_scalar(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended.len(), 1, "one session holds the lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(ended[0])
        .execute(&mut admin)
        .await
        .unwrap();
    let ended_at = Instant::now();
    let code = exit_code_within(a.0.child().unwrap(), Duration::from_secs(3));
    let exited = ended_at.elapsed();
    assert_eq!(code, Some(75), "the active bridge did not stop at once");
    // its last will, then the standby's online: the standby acted after A had gone
    let mut seen = Vec::new();
    while let Some((_, p, _)) = status.next_where(Duration::from_secs(10), |_| true).await {
        seen.push(String::from_utf8(p).unwrap());
        if seen.last().is_some_and(|s| s == "online") {
            break;
        }
    }
    assert_eq!(seen, ["offline", "online"]);
    b.until_role("active", Duration::from_secs(5)).await;
    eprintln!("lock session ended: the active bridge exited in {exited:?}");
}
