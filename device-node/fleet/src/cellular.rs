//! Cellular vehicles: each one a long poll over its own TCP (or TLS) connection, driven by
//! the device side of `device_node::cellular` — the same sans-IO client firmware on a
//! modem would use. The request bytes are the client's own; the answers are read with
//! its response reader. The bridge's listener is a separate implementation.
//!
//! A vehicle asks to wait until its next report is due (at most the wait it was given),
//! answers every frame at once with its next request (the acknowledgement and the ack
//! records), and reconnects a second after a connection fails. With TLS, each vehicle
//! keeps one client configuration for its whole life, so that a reconnection resumes
//! the session with a ticket.
use super::{Fleet, lock, now_ms};
use device_node::cellular::{Client, parse_response_head};
use device_node::seal::DeviceKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and how cellular vehicles connect.
#[derive(Clone)]
pub struct CellularTarget {
    /// The bridge's cellular listener.
    pub addr: SocketAddr,
    /// TLS: the client configuration every vehicle starts from (each keeps its own
    /// copy, with its own ticket cache), and the server name to expect.
    pub tls: Option<(rustls::ClientConfig, rustls::pki_types::ServerName<'static>)>,
    /// The longest wait a vehicle asks for, seconds.
    pub max_wait_s: u16,
}

impl std::fmt::Debug for CellularTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CellularTarget({}, tls: {})",
            self.addr,
            self.tls.is_some()
        )
    }
}

/// A simulated vehicle's key: derived from the fleet's seed and its id (a real vehicle's
/// is random, written at provisioning).
pub fn key_of(seed: u64, id: &str) -> [u8; 16] {
    let mut h = seed ^ 0x6c6f_6e67_7072_6f74;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = super::SplitMix::new(h);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    key[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    key
}

/// The bridge's `[cellular] keys_file` for these vehicles: "<id> <key hex>" lines.
pub fn keys_file(seed: u64, ids: &[&str]) -> String {
    let mut out = String::from("# longproto-fleet's simulated cellular vehicles\n");
    for id in ids {
        out += &format!("{id} {}\n", hex::encode(key_of(seed, id)));
    }
    out
}

/// A TLS client configuration trusting the CA certificate in `ca` (PEM): TLS 1.3, X25519
/// (as a modem would offer, and the listener takes), and the server name to expect.
pub fn tls_client(
    ca: &std::path::Path,
    server_name: &str,
) -> anyhow::Result<(rustls::ClientConfig, rustls::pki_types::ServerName<'static>)> {
    use anyhow::Context;
    let pem = std::fs::read(ca).with_context(|| format!("{}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.with_context(|| format!("{}: not a PEM certificate", ca.display()))?)?;
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .with_context(|| format!("server name {server_name:?}"))?;
    Ok((config, name))
}

/// The device's sans-IO client of a vehicle.
pub fn client(seed: u64, id: &str) -> Client {
    Client::new(DeviceKey::new(key_of(seed, id)), id, 1)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Runs one vehicle's long poll until the task is aborted.
pub async fn run(fleet: Arc<Fleet>, id: String, target: CellularTarget) {
    let tls = target.tls.clone().map(|(mut config, name)| {
        // a clone shares the ticket cache: each vehicle gets its own, as a modem has
        config.resumption = rustls::client::Resumption::in_memory_sessions(4);
        (tokio_rustls::TlsConnector::from(Arc::new(config)), name)
    });
    loop {
        let stream: Box<dyn Stream> = match connect(&target, &tls, &fleet).await {
            Some(s) => s,
            None => {
                lock(&fleet.stats).errors += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if polls(&fleet, &id, stream, target.max_wait_s).await.is_err() {
            lock(&fleet.stats).cellular_reconnects += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn connect(
    target: &CellularTarget,
    tls: &Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    fleet: &Fleet,
) -> Option<Box<dyn Stream>> {
    let tcp = TcpStream::connect(target.addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let Some((connector, name)) = tls else {
        return Some(Box::new(tcp));
    };
    let stream = connector.connect(name.clone(), tcp).await.ok()?;
    let resumed = matches!(
        stream.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let mut stats = lock(&fleet.stats);
    if resumed {
        stats.tls_resumed += 1;
    } else {
        stats.tls_full += 1;
    }
    Some(Box::new(stream))
}

/// Request after request on one connection; an error ends the connection.
async fn polls(
    fleet: &Fleet,
    id: &str,
    mut stream: Box<dyn Stream>,
    max_wait_s: u16,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let now = now_ms();
        let Some((request, wait_s)) = fleet.with(id, |d, stats| {
            let mut records = [0u8; 128];
            let status = d.node.uplink_due(now).then(|| d.vehicle.status());
            let n = if status.is_some() || d.node.pending_acks() > 0 {
                d.node.build_uplink(status, now, &mut records, 128)
            } else {
                0
            };
            // wait until the next report is due (the node's interval), at most max_wait_s
            let wait = (d.node.interval_s().min(max_wait_s as u32)) as u16;
            let mut out = [0u8; 256];
            let client = d
                .cellular
                .as_mut()
                .expect("a cellular vehicle has a client");
            let len = client
                .request(wait, &records[..n], &mut out)
                .expect("a request fits 256 bytes");
            stats.cellular_requests += 1;
            (out[..len].to_vec(), wait)
        }) else {
            return Ok(());
        };
        stream.write_all(&request).await?;
        stream.flush().await?;
        let limit = Duration::from_secs(wait_s as u64 + 30);
        let (status, body) = tokio::time::timeout(limit, read_response(&mut stream, &mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        match status {
            200 => {
                let now = now_ms();
                fleet.with(id, |d, stats| {
                    let mut vehicle = d.vehicle.clone();
                    let client = d
                        .cellular
                        .as_mut()
                        .expect("a cellular vehicle has a client");
                    let a = client.answer(&body, &mut d.node, now, &mut vehicle);
                    stats.executed += (vehicle.executed - d.vehicle.executed) as u64;
                    d.vehicle = vehicle;
                    stats.downlinks += 1;
                    stats.frames += a.frames as u64;
                    stats.refused_frames += a.refused as u64;
                });
            }
            204 => {}
            _ => {
                lock(&fleet.stats).errors += 1;
                return Err(std::io::Error::other(format!("answered {status}")));
            }
        }
    }
}

/// Reads one response: its status and body.
async fn read_response<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, Vec<u8>)> {
    loop {
        match parse_response_head(buf) {
            Ok(Some(head)) => {
                while buf.len() < head.head_len + head.body_len {
                    if stream.read_buf(buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let body = buf[head.head_len..head.head_len + head.body_len].to_vec();
                buf.drain(..head.head_len + head.body_len);
                return Ok((head.status, body));
            }
            Ok(None) => {
                if buf.len() > 4096 {
                    return Err(std::io::Error::other("response head too long"));
                }
                if stream.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
        }
    }
}
