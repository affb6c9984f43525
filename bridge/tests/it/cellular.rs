//! The cellular long poll through real sockets: a device here is the device side of
//! `device_node::cellular` (the sans-IO client firmware would use) over a plain
//! `TcpStream`, reading answers with the client's own response reader; the bridge's
//! listener is a separate implementation (httparse).
use crate::common::*;
use device_node::cellular::{Answered, Client, parse_response_head};
use device_node::node::{Node, NodeState, Schedule};
use device_node::seal::DeviceKey;
use longproto_bridge::app::Bridge;
use longproto_fleet::Vehicle;
use longproto_fleet::cellular::key_of;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SEED: u64 = 42;
const ID: &str = "ce11000000000001";

/// A cellular device on one TCP connection.
struct Device {
    client: Client,
    node: Node,
    vehicle: Vehicle,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Device {
    async fn connect(addr: SocketAddr, id: &str) -> Device {
        Device {
            client: Client::new(DeviceKey::new(key_of(SEED, id)), id, 1),
            node: Node::new(Schedule::default(), NodeState::default()),
            vehicle: Vehicle::parked(38.72, -9.14, 80),
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// A new connection for the same device (its counter and node carry on).
    async fn reconnect(&mut self, addr: SocketAddr) {
        self.stream = TcpStream::connect(addr).await.unwrap();
        self.buf.clear();
    }

    /// Writes a request carrying the node's waiting acknowledgements.
    async fn send(&mut self, wait_s: u16) {
        let mut records = [0u8; 64];
        let n = self.node.build_uplink(None, 0, &mut records, 64);
        let mut out = [0u8; 256];
        let len = self
            .client
            .request(wait_s, &records[..n], &mut out)
            .unwrap();
        self.stream.write_all(&out[..len]).await.unwrap();
    }

    /// Reads one answer: status and body.
    async fn answer(&mut self, within: Duration) -> (u16, Vec<u8>) {
        let read = async {
            loop {
                if let Some(h) = parse_response_head(&self.buf).unwrap() {
                    while self.buf.len() < h.head_len + h.body_len {
                        assert!(self.stream.read_buf(&mut self.buf).await.unwrap() > 0);
                    }
                    let body = self.buf[h.head_len..h.head_len + h.body_len].to_vec();
                    self.buf.drain(..h.head_len + h.body_len);
                    return (h.status, body);
                }
                assert!(
                    self.stream.read_buf(&mut self.buf).await.unwrap() > 0,
                    "the bridge closed the connection"
                );
            }
        };
        tokio::time::timeout(within, read)
            .await
            .expect("an answer in time")
    }

    /// A request and its answer.
    async fn poll(&mut self, wait_s: u16) -> (u16, Vec<u8>) {
        self.send(wait_s).await;
        self.answer(Duration::from_secs(wait_s as u64 + 10)).await
    }

    /// Hands an answer's frames to the node.
    fn take(&mut self, body: &[u8]) -> Answered {
        self.client
            .answer(body, &mut self.node, 0, &mut self.vehicle)
    }
}

struct Setup {
    bridge: Bridge,
    addr: SocketAddr,
    events: Watcher,
    _keys: tempfile::TempDir,
}

/// A bridge with a cellular listener knowing the keys of `ids`.
async fn cellular_bridge(
    broker: &Mosquitto,
    name: &str,
    ids: &[&str],
    tune: impl FnOnce(&mut gateway_config::Settings),
) -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys");
    write_keys(&path, &longproto_fleet::cellular::keys_file(SEED, ids));
    let mut s = settings(broker, name);
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = path.display().to_string();
    tune(&mut s);
    let events = Watcher::new(
        broker,
        &format!("{name}-events"),
        &["longproto/v1/cellular/+/command-events"],
    )
    .await;
    let bridge = start_bridge(broker, s).await;
    let addr = bridge.cellular_addr().expect("a cellular listener");
    Setup {
        bridge,
        addr,
        events,
        _keys: keys,
    }
}

async fn create(bridge: &Bridge, id: &str, body: Value) -> Value {
    let path = format!("/v1/devices/cellular/{id}/commands");
    let (status, v) = api(bridge.http_addr(), "POST", &path, Some(&body)).await;
    assert_eq!(status, 202, "{v}");
    v
}

/// Everything the bridge writes until it closes the connection (at most 5 s).
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("the bridge answers and closes within 5 s")
        .unwrap();
    answer
}

async fn state_of(bridge: &Bridge, id: &str) -> String {
    let (status, v) = api(
        bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_takes_commands_from_the_api_and_mqtt_and_they_walk_to_executed() {
    let broker = Mosquitto::start();
    let mut setup = cellular_bridge(&broker, "cell-held", &[ID], |_| {}).await;
    let mut dev = Device::connect(setup.addr, ID).await;
    assert_eq!(dev.poll(0).await.0, 204, "nothing due: answered at once");

    // held, then a command over the API answers it at once
    dev.send(60).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = Instant::now();
    let cmd = create(
        &setup.bridge,
        ID,
        json!({"command": "unlock", "args": {"auto_relock_s": 30}}),
    )
    .await;
    let (status, body) = dev.answer(Duration::from_secs(5)).await;
    let took = created.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body.len(), 12, "one sealed frame");
    assert_eq!(
        dev.take(&body),
        Answered {
            frames: 1,
            refused: 0
        }
    );
    assert!(!dev.vehicle.locked, "the vehicle unlocked");
    assert!(
        took < Duration::from_secs(2),
        "answered {took:?} after the command"
    );

    // the next request acknowledges the frame and carries the ack record
    dev.send(60).await;
    let id = cmd["id"].as_str().unwrap();
    for state in ["scheduled", "sent", "delivered", "executed"] {
        wait_state(&mut setup.events, id, state).await;
    }
    assert_eq!(state_of(&setup.bridge, id).await, "executed");

    // the request still held takes a command sent over MQTT
    let mqtt = publisher(&broker, "cell-held-operator").await;
    mqtt.publish(
        format!("longproto/v1/cellular/{ID}/command"),
        rumqttc::QoS::AtLeastOnce,
        false,
        serde_json::to_vec(&json!({"id": "lock-over-mqtt", "command": "lock"})).unwrap(),
    )
    .await
    .unwrap();
    let (status, body) = dev.answer(Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert_eq!(dev.take(&body).frames, 1);
    assert!(dev.vehicle.locked);
    dev.send(0).await;
    assert_eq!(dev.answer(Duration::from_secs(5)).await.0, 204);
    wait_state(&mut setup.events, "lock-over-mqtt", "executed").await;
    let metrics = metrics_text(&setup.bridge).await;
    assert!(
        metrics.contains("longproto_cellular_requests_total{outcome=\"frames\"} 2"),
        "{metrics}"
    );
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_ends_empty_and_a_newer_request_replaces_the_held_one() {
    let broker = Mosquitto::start();
    let setup = cellular_bridge(&broker, "cell-wait", &[ID], |_| {}).await;
    let mut dev = Device::connect(setup.addr, ID).await;
    let started = Instant::now();
    assert_eq!(dev.poll(1).await, (204, Vec::new()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // a request longer than the maximum is held for the maximum
    // (here: a second connection of the same device replaces the first at once)
    dev.send(120).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = Device::connect(setup.addr, ID).await;
    second.client = Client::new(DeviceKey::new(key_of(SEED, ID)), ID, 1000);
    second.send(120).await;
    let (status, _) = dev.answer(Duration::from_secs(2)).await;
    assert_eq!(status, 204, "the older request is answered empty at once");
    let cmd = create(&setup.bridge, ID, json!({"command": "locate"})).await;
    let (status, body) = second.answer(Duration::from_secs(5)).await;
    assert_eq!(status, 200, "the newer request takes the command");
    assert_eq!(second.take(&body).frames, 1);
    assert_eq!(cmd["counter"], 1);
    let metrics = metrics_text(&setup.bridge).await;
    assert!(
        metrics.contains("longproto_cellular_requests_total{outcome=\"replaced\"} 1"),
        "{metrics}"
    );
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_keeps_its_command_and_a_resent_frame_is_refused_by_the_node() {
    let broker = Mosquitto::start();
    let mut setup = cellular_bridge(&broker, "cell-cut", &[ID], |s| {
        s.cellular.delivery_timeout_s = 1;
    })
    .await;
    let mut dev = Device::connect(setup.addr, ID).await;

    // the connection goes away while the request is held: nothing is taken
    dev.send(60).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    dev.stream.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cmd = create(&setup.bridge, ID, json!({"command": "unlock"})).await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        state_of(&setup.bridge, &id).await,
        "queued",
        "not handed to a dead request"
    );

    // a new connection takes it; the device executes it, but the request carrying its
    // acknowledgement is lost with the link: past the delivery timeout it is queued again
    dev.reconnect(setup.addr).await;
    let (status, body) = dev.poll(60).await;
    assert_eq!(status, 200);
    let first_frame = body.clone();
    assert_eq!(dev.take(&body).frames, 1);
    assert_eq!(dev.vehicle.executed, 1);
    let mut lost = [0u8; 64];
    assert!(
        dev.node.build_uplink(None, 0, &mut lost, 64) > 0,
        "the ack record, lost"
    );
    wait_state(&mut setup.events, &id, "sent").await;
    let requeued = wait_state(&mut setup.events, &id, "queued").await;
    assert!(
        requeued["reason"]
            .as_str()
            .unwrap()
            .contains("not acknowledged within 1 s"),
        "{requeued}"
    );

    // the device comes back: the same frame, the same counter; the node refuses to run
    // it twice, and says so (already_executed counts as executed)
    dev.reconnect(setup.addr).await;
    let (status, body) = dev.poll(60).await;
    assert_eq!(status, 200);
    assert_eq!(body, first_frame, "sent again with the same counter");
    assert_eq!(dev.take(&body).frames, 1);
    assert_eq!(dev.vehicle.executed, 1, "not executed a second time");
    dev.send(0).await;
    assert_eq!(dev.answer(Duration::from_secs(5)).await.0, 204);
    wait_state(&mut setup.events, &id, "executed").await;
    let (_, history) = api(
        setup.bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    let states: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "queued",
            "scheduled",
            "sent",
            "queued",
            "scheduled",
            "sent",
            "delivered",
            "executed"
        ],
        "{history}"
    );
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_command_is_never_sent() {
    let broker = Mosquitto::start();
    let mut setup = cellular_bridge(&broker, "cell-expiry", &[ID], |_| {}).await;
    let cmd = create(&setup.bridge, ID, json!({"command": "unlock", "ttl_s": 1})).await;
    let id = cmd["id"].as_str().unwrap();
    wait_state(&mut setup.events, id, "expired").await;
    let mut dev = Device::connect(setup.addr, ID).await;
    assert_eq!(dev.poll(1).await.0, 204, "nothing after its expiry");
    assert_eq!(dev.vehicle.executed, 0);
    setup.bridge.shutdown().await;
}

/// A cell coming back reconnects its vehicles at once: the listener's accept queue is
/// far longer than the 128 of a plain `bind`, so their SYNs are not dropped. `ss` shows
/// it: for a listening socket, Send-Q is the backlog, capped by `net.core.somaxconn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_queues_a_reconnecting_cell_without_dropping_syns() {
    let broker = Mosquitto::start();
    let setup = cellular_bridge(&broker, "cell-backlog", &[ID], |_| {}).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", setup.addr.port())])
        .output()
        .expect("ss (iproute2)");
    let line = String::from_utf8(out.stdout).unwrap();
    let backlog: u32 = line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket in `ss`: {line:?}"));
    let want = longproto_bridge::http::cellular::ACCEPT_BACKLOG.min(somaxconn);
    assert!(
        want > 128,
        "net.core.somaxconn {somaxconn} caps the backlog"
    );
    assert_eq!(backlog, want, "{line}");
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_unknown_requests_get_401_and_take_nothing() {
    let broker = Mosquitto::start();
    let setup = cellular_bridge(&broker, "cell-auth", &[ID], |_| {}).await;
    let cmd = create(&setup.bridge, ID, json!({"command": "unlock"})).await;
    let id = cmd["id"].as_str().unwrap();

    let mut out = [0u8; 256];
    let raw = |out: &[u8]| out.to_vec();
    // a request under another key
    let mut forger = Client::new(DeviceKey::new([7; 16]), ID, 1);
    let n = forger.request(0, &[], &mut out).unwrap();
    let forged = raw(&out[..n]);
    // a request of a device without a key
    let mut stranger = Client::new(
        DeviceKey::new(key_of(SEED, "ce11000000000999")),
        "ce11000000000999",
        1,
    );
    let n = stranger.request(0, &[], &mut out).unwrap();
    let unknown = raw(&out[..n]);
    let mut unauthorized = Vec::new();
    for request in [&forged, &unknown] {
        let mut s = TcpStream::connect(setup.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let answer = until_closed(&mut s).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        unauthorized.push(text.split("\r\n\r\n").nth(1).unwrap().to_owned());
    }
    assert_eq!(
        unauthorized[0], unauthorized[1],
        "an unknown device and a bad MAC look the same"
    );
    assert_eq!(state_of(&setup.bridge, id).await, "queued");

    // the genuine request, captured, then replayed
    let mut dev = Device::connect(setup.addr, ID).await;
    let mut genuine = Client::new(DeviceKey::new(key_of(SEED, ID)), ID, 5);
    let n = genuine.request(0, &[], &mut out).unwrap();
    let captured = raw(&out[..n]);
    dev.stream.write_all(&captured).await.unwrap();
    let (status, body) = dev.answer(Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 12);
    let mut replay = TcpStream::connect(setup.addr).await.unwrap();
    replay.write_all(&captured).await.unwrap();
    let answer = until_closed(&mut replay).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 401 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let metrics = metrics_text(&setup.bridge).await;
    assert!(
        metrics.contains("longproto_cellular_requests_total{outcome=\"replayed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("longproto_cellular_requests_total{outcome=\"unauthorized\"} 2"),
        "{metrics}"
    );
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_a_bad_mac_is_refused_by_the_node() {
    let broker = Mosquitto::start();
    let setup = cellular_bridge(&broker, "cell-badmac", &[ID], |_| {}).await;
    create(&setup.bridge, ID, json!({"command": "unlock"})).await;
    let mut dev = Device::connect(setup.addr, ID).await;
    let (status, mut body) = dev.poll(5).await;
    assert_eq!(status, 200);
    body[3] ^= 0x01; // an argument byte changed on the path
    assert_eq!(
        dev.take(&body),
        Answered {
            frames: 0,
            refused: 1
        }
    );
    assert_eq!(dev.vehicle.executed, 0);
    assert!(dev.vehicle.locked, "the vehicle stays locked");
    assert_eq!(
        dev.node.pending_acks(),
        0,
        "a forged frame is not acknowledged"
    );
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_named_and_never_answered_5xx() {
    let broker = Mosquitto::start();
    let setup = cellular_bridge(&broker, "cell-bad", &[ID], |_| {}).await;
    let cases: [(&[u8], &str, &str); 6] = [
        (
            b"GET /c/ce11000000000001 HTTP/1.1\r\n\r\n",
            "405",
            "only POST",
        ),
        (
            b"POST /v1/devices HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "404",
            "no route",
        ),
        (
            b"POST /c/zz HTTP/1.1\r\nContent-Length: 13\r\n\r\n0123456789abc",
            "400",
            "path",
        ),
        (
            b"POST /c/ce11000000000001 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "400",
            "at least 13",
        ),
        (
            b"POST /c/ce11000000000001 HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
            "413",
            "at most 4096",
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 hello\r\n\r\n",
            "400",
            "request head",
        ),
    ];
    for (request, status, says) in cases {
        let mut s = TcpStream::connect(setup.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let answer = until_closed(&mut s).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?} → {text}"
        );
        assert!(text.contains(says), "{request:?} → {text}");
    }
    setup.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_and_their_tickets_survive_a_restart() {
    let broker = Mosquitto::start();
    let pki = Pki::new();
    let tickets = tempfile::tempdir().unwrap();
    let ticket_file = tickets.path().join("ticket-keys").display().to_string();
    let tune = |s: &mut gateway_config::Settings| {
        s.cellular.tls_cert = pki.path("server.pem");
        s.cellular.tls_key = pki.path("server.key");
        s.cellular.tls_ticket_keys_file = ticket_file.clone();
    };
    let setup = cellular_bridge(&broker, "cell-tls", &[ID], tune).await;
    let (base, name) = longproto_fleet::cellular::tls_client(
        std::path::Path::new(&pki.path("ca.pem")),
        "localhost",
    )
    .unwrap();
    let mut config = base.clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(4);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut client = Client::new(DeviceKey::new(key_of(SEED, ID)), ID, 1);

    // one exchange per connection; the kind of each handshake
    async fn exchange(
        connector: &tokio_rustls::TlsConnector,
        name: &rustls::pki_types::ServerName<'static>,
        addr: SocketAddr,
        client: &mut Client,
    ) -> rustls::HandshakeKind {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        let mut out = [0u8; 128];
        let n = client.request(0, &[], &mut out).unwrap();
        tls.write_all(&out[..n]).await.unwrap();
        let mut buf = Vec::new();
        while parse_response_head(&buf).unwrap().is_none() {
            assert!(tls.read_buf(&mut buf).await.unwrap() > 0);
        }
        assert!(buf.starts_with(b"HTTP/1.1 204 "));
        tls.get_ref().1.handshake_kind().unwrap()
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(
        exchange(&connector, &name, setup.addr, &mut client).await,
        Full
    );
    assert_eq!(
        exchange(&connector, &name, setup.addr, &mut client).await,
        Resumed
    );
    assert_eq!(
        exchange(&connector, &name, setup.addr, &mut client).await,
        Resumed
    );

    // a restart on the same ticket keys: the vehicle still resumes
    let store = setup.bridge.commands().store_answers().await;
    assert!(store);
    setup.bridge.shutdown().await;
    let again = cellular_bridge(&broker, "cell-tls", &[ID], tune).await;
    assert_eq!(
        exchange(&connector, &name, again.addr, &mut client).await,
        Resumed,
        "the ticket outlived the restart"
    );
    again.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_read_again_without_a_restart_and_a_world_readable_file_is_refused() {
    let broker = Mosquitto::start();
    let setup = cellular_bridge(&broker, "cell-keys", &[ID], |_| {}).await;
    let newcomer = "ce11000000000777";
    let mut s = TcpStream::connect(setup.addr).await.unwrap();
    let mut out = [0u8; 128];
    let mut client = Client::new(DeviceKey::new(key_of(SEED, newcomer)), newcomer, 1);
    let n = client.request(0, &[], &mut out).unwrap();
    s.write_all(&out[..n]).await.unwrap();
    assert!(
        until_closed(&mut s).await.starts_with(b"HTTP/1.1 401 "),
        "no key yet"
    );

    // the operator adds the vehicle's key; within the reload period it is taken
    let path = setup._keys.path().join("keys");
    std::fs::write(
        &path,
        longproto_fleet::cellular::keys_file(SEED, &[ID, newcomer]),
    )
    .unwrap();
    let started = Instant::now();
    loop {
        let mut s = TcpStream::connect(setup.addr).await.unwrap();
        let n = client.request(0, &[], &mut out).unwrap();
        s.write_all(&out[..n]).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        if &head == b"HTTP/1.1 204" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new key was not read within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    setup.bridge.shutdown().await;

    // a keys file others can read stops the start, naming the file and the fix
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut s = settings(&broker, "cell-keys-open");
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = path.display().to_string();
    let e = format!("{:#}", Bridge::start(s).await.err().expect("refused"));
    assert!(
        e.contains("cellular.keys_file") && e.contains("mode 0644") && e.contains("chmod 600"),
        "{e}"
    );
}
