//! The cellular devices' listener (`[cellular] bind`): one route, `POST /c/{device id}`,
//! spoken by hand so that not one byte the device does not need goes either way.
//!
//! A request needs its request line and `Content-Length`; nothing else is read (a
//! `Host` or any other header is accepted and skipped). The answers:
//! - `HTTP/1.1 200 OK`, `Content-Length`, the sealed frames;
//! - `HTTP/1.1 204 No Content` when the wait ended with nothing due (nor any header);
//! - `400` (what is wrong, as text), `401` (not authenticated: an unknown device, a
//!   wrong MAC, or a counter already used; one answer for all three), `404`, `405`,
//!   `413`, `503`; each of these closes the connection.
//!
//! Connections stay open between requests (HTTP/1.1 keep-alive). Every accepted socket
//! gets TCP keepalive with one probe after `tcp_keepalive_s` idle seconds: a connection
//! that died while a request was held is found, and the request's command released.
use crate::metrics::Metrics;
use crate::networks::cellular::{CellularAdapter, Refusal};
use device_node::cellular::PATH_PREFIX;
use gateway_config::CellularSettings;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest request head read (request line and headers).
const MAX_HEAD: usize = 1024;
/// The largest body read: a poll header, records, a MAC.
const MAX_BODY: usize = 4096;
/// Headers read at most.
const MAX_HEADERS: usize = 16;

/// What the listener needs besides the adapter.
#[derive(Clone)]
pub struct ListenerSettings {
    /// Idle time before the one keepalive probe; `None`: no keepalive.
    pub keepalive: Option<Duration>,
    /// Time a device has to send a whole request.
    pub request_timeout: Duration,
    /// Connections at once.
    pub max_connections: usize,
}

impl ListenerSettings {
    /// From `[cellular]`.
    pub fn new(s: &CellularSettings) -> Self {
        ListenerSettings {
            keepalive: (s.tcp_keepalive_s > 0)
                .then(|| Duration::from_secs(s.tcp_keepalive_s as u64)),
            request_timeout: Duration::from_secs(s.request_timeout_s as u64),
            max_connections: s.max_connections as usize,
        }
    }
}

/// Connections that may wait to be accepted (the kernel caps it at `net.core.somaxconn`).
/// When a cell comes back, its vehicles reconnect at once; with the 128 of a plain
/// `TcpListener::bind` the queue overflows and every dropped SYN waits 1 s or more for
/// its retransmission (docs/benchmarks.md).
pub const ACCEPT_BACKLOG: u32 = 8192;

/// The cellular listener on `bind`, with a backlog of [`ACCEPT_BACKLOG`].
pub async fn listen(bind: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(bind).await? {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(ACCEPT_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

/// Serves the listener until `stop`: held requests answer empty, connections close.
pub async fn serve(
    listener: TcpListener,
    adapter: Arc<CellularAdapter>,
    tls: Option<TlsAcceptor>,
    settings: ListenerSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let (socket, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors, mostly: wait instead of spinning
                    tracing::warn!(error = %e, "cellular listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        if let Err(e) = keepalive(&socket, settings.keepalive) {
            tracing::warn!(%peer, error = %e, "cellular connection: cannot set TCP keepalive");
        }
        let _ = socket.set_nodelay(true);
        let (adapter, tls, settings, metrics, stop) = (
            adapter.clone(),
            tls.clone(),
            settings.clone(),
            metrics.clone(),
            stop.clone(),
        );
        connections.spawn(async move {
            metrics.cellular_connections.inc();
            match tls {
                None => connection(socket, &adapter, &settings, &stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(socket);
                    match tokio::time::timeout(settings.request_timeout, handshake).await {
                        Ok(Ok(stream)) => connection(stream, &adapter, &settings, &stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "cellular TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "cellular TLS handshake timed out"),
                    }
                }
            }
            metrics.cellular_connections.dec();
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// One probe after `idle`, then the connection is given up (Linux: `TCP_KEEPIDLE`,
/// `TCP_KEEPINTVL` as the probe's wait, `TCP_KEEPCNT` 1).
fn keepalive(socket: &TcpStream, idle: Option<Duration>) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    match idle {
        None => sock.set_keepalive(false),
        Some(idle) => {
            let ka = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(idle.min(Duration::from_secs(15)))
                .with_retries(1);
            sock.set_tcp_keepalive(&ka)
        }
    }
}

/// A request read off the connection.
struct Request {
    device: String,
    body: Vec<u8>,
}

/// Why a request could not be read: the status and the text to answer with.
#[derive(Debug, PartialEq)]
pub struct Unreadable {
    /// The status.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

fn unreadable(status: u16, message: impl Into<String>) -> Unreadable {
    Unreadable {
        status,
        message: message.into(),
    }
}

/// Reads a request head from `buf`: `Ok(None)` until it is whole; the device id, the
/// body length and the head's length.
pub fn parse_head(buf: &[u8]) -> Result<Option<(String, usize, usize)>, Unreadable> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(unreadable(
                431,
                format!("request head longer than {MAX_HEAD} bytes"),
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(unreadable(431, format!("more than {MAX_HEADERS} headers")));
        }
        Err(e) => return Err(unreadable(400, format!("request head: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Err(unreadable(
            431,
            format!("request head longer than {MAX_HEAD} bytes"),
        ));
    }
    let path = req.path.unwrap_or_default();
    let Some(device) = path.strip_prefix(PATH_PREFIX) else {
        return Err(unreadable(
            404,
            format!(
                "no route {}: the one route is POST {PATH_PREFIX}{{device id}}",
                crate::device::excerpt(path)
            ),
        ));
    };
    if req.method != Some("POST") {
        return Err(unreadable(405, "only POST"));
    }
    let mut body_len = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| unreadable(400, "Content-Length is not a number"))?;
            if body_len.is_some_and(|b| b != n) {
                return Err(unreadable(400, "two different Content-Length headers"));
            }
            body_len = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(unreadable(
                400,
                "Transfer-Encoding is not supported: send Content-Length",
            ));
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY {
        return Err(unreadable(
            413,
            format!("body of {body_len} bytes: at most {MAX_BODY}"),
        ));
    }
    Ok(Some((device.to_owned(), body_len, head_len)))
}

/// Reads the next request; `Ok(None)` when the device closed the connection between
/// requests.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, Unreadable> {
    loop {
        if let Some((device, body_len, head_len)) = parse_head(buf)? {
            while buf.len() < head_len + body_len {
                if stream.read_buf(buf).await.unwrap_or(0) == 0 {
                    return Ok(None);
                }
            }
            let body = buf[head_len..head_len + body_len].to_vec();
            buf.drain(..head_len + body_len);
            return Ok(Some(Request { device, body }));
        }
        if stream.read_buf(buf).await.unwrap_or(0) == 0 {
            return Ok(None);
        }
    }
}

/// Serves one device connection: request after request.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    adapter: &CellularAdapter,
    settings: &ListenerSettings,
    stop: &CancellationToken,
) {
    let mut buf = Vec::with_capacity(256);
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(settings.request_timeout, read_request(&mut stream, &mut buf)) => r,
            _ = stop.cancelled() => return,
        };
        let request = match read {
            Err(_) | Ok(Ok(None)) => return, // timed out, or closed
            Ok(Err(e)) => {
                let _ = write_error(&mut stream, e.status, &e.message).await;
                return;
            }
            Ok(Ok(Some(r))) => r,
        };
        let accepted = match adapter
            .accept(&request.device, &request.body, Instant::now())
            .await
        {
            Ok(a) => a,
            Err(refusal) => {
                let (status, message) = match refusal {
                    Refusal::Unauthorized | Refusal::Replayed => (
                        401,
                        "not authenticated: unknown device, wrong MAC, or a request counter already used".to_owned(),
                    ),
                    Refusal::Bad(m) => (400, m),
                    Refusal::Unavailable => (503, "the store is not answering; try again".to_owned()),
                };
                let _ = write_error(&mut stream, status, &message).await;
                return;
            }
        };
        let mut answer = adapter.take(&accepted).await;
        let (mut closed, mut replaced) = (false, false);
        if answer.is_none() && !accepted.wait.is_zero() {
            let hold = adapter.hold(&accepted.device);
            let deadline = tokio::time::Instant::now() + accepted.wait;
            loop {
                // taken after the hold is registered: a command created in between
                // wakes it instead of being missed
                answer = adapter.take(&accepted).await;
                replaced = hold.replaced();
                if answer.is_some() || replaced {
                    break;
                }
                tokio::select! {
                    _ = hold.woken() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.cancelled() => break,
                    r = stream.read_buf(&mut buf) => {
                        // the connection died (keepalive, reset, close), or the device
                        // sent its next request early: either way this one ends
                        closed = !matches!(r, Ok(n) if n > 0);
                        break;
                    }
                }
            }
        }
        if closed {
            adapter.note("closed");
            if let Some(a) = answer {
                adapter.written(&accepted.device, a, false).await;
            }
            return;
        }
        match answer {
            Some(a) => {
                let ok = write_frames(&mut stream, &a.body).await.is_ok();
                adapter.note(if ok { "frames" } else { "closed" });
                adapter.written(&accepted.device, a, ok).await;
                if !ok {
                    return;
                }
            }
            None => {
                adapter.note(if replaced { "replaced" } else { "empty" });
                if stream
                    .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn write_frames<S: AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(40 + body.len());
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn write_error<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    message: &str,
) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let body = format!("{message}\n");
    let out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_or_refused_with_their_reason() {
        let ok = b"POST /c/cafe01 HTTP/1.1\r\nContent-Length: 13\r\n\r\n";
        assert_eq!(parse_head(ok), Ok(Some(("cafe01".into(), 13, ok.len()))));
        assert_eq!(parse_head(&ok[..20]), Ok(None));
        let with_host = b"POST /c/cafe01 HTTP/1.1\r\nHost: x\r\ncontent-length:13\r\n\r\n";
        assert_eq!(parse_head(with_host).unwrap().unwrap().1, 13);
        assert_eq!(
            parse_head(b"GET /c/cafe01 HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            parse_head(b"POST /v1/x HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            404
        );
        let big = b"POST /c/1 HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
        assert_eq!(parse_head(big).unwrap_err().status, 413);
        let chunked = b"POST /c/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked).unwrap_err().status, 400);
        let two = b"POST /c/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(
            parse_head(two)
                .unwrap_err()
                .message
                .contains("two different")
        );
        assert_eq!(
            parse_head(b"\x01\x02 / HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let long = [b"POST /c/1 HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 1100]].concat();
        assert_eq!(parse_head(&long).unwrap_err().status, 431);
    }
}
