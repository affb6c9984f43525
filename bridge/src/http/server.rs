//! The HTTP connections: the accept loop, a connection limit, header and idle timeouts,
//! and a handler's panic answered with `500`.
use super::error::HttpError;
use crate::metrics::Metrics;
use crate::pipeline::lock;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits of the HTTP connections, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send a request's headers within this, from connecting or from its
    /// previous response.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// From `[http]`.
    pub fn new(h: &gateway_config::HttpSettings) -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(h.header_timeout_s as u64),
            idle_timeout: Duration::from_secs(h.idle_timeout_s as u64),
            max_connections: h.max_connections as usize,
        }
    }
}

/// Most header lines and header bytes a request may have; more gets a JSON `431`.
/// hyper itself answers a bare `431` only past four times these.
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves `app` on `listener` until `stop` resolves, then lets the requests in flight
/// finish. Each connection is HTTP/1.1 with the header and idle timeouts of `limits`; at
/// most `limits.max_connections` are open at once, so the process never runs out of
/// file descriptors for its store and broker connection (see docs/architecture.md). A
/// handler that panics answers `500` with a JSON error, and the process lives on.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let limit_logged = Mutex::new(None);
    tokio::pin!(stop);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics.http_connection_limit.inc();
                if Metrics::throttle(&limit_logged, Duration::from_secs(10)) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "http.max_connections reached: new connections wait (logged at most every 10 s)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = &mut stop => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // e.g. EMFILE: wait a little instead of spinning
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            app.clone(),
            limits,
            metrics.clone(),
            closing.clone(),
            permit,
        ));
    }
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// One connection: requests one after another until the client closes it, it idles past
/// `idle_timeout`, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    closing: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    // requests in flight on this connection, and when the last one ended
    let busy = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(Instant::now()));
    let service = {
        let (busy, last) = (busy.clone(), last.clone());
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (busy, last, metrics) = (busy.clone(), last.clone(), metrics.clone());
            busy.fetch_add(1, AtomicOrdering::Relaxed);
            let answer = app.clone().oneshot(req.map(axum::body::Body::new));
            async move {
                let result = std::panic::AssertUnwindSafe(answer).catch_unwind().await;
                *lock(&last) = Instant::now();
                busy.fetch_sub(1, AtomicOrdering::Relaxed);
                Ok::<_, std::convert::Infallible>(match result {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(panic) => {
                        metrics.http_panics.inc();
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(panic = what, "an HTTP handler panicked; answered 500");
                        HttpError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "the request could not be handled; it was logged",
                        )
                        .into_response()
                    }
                })
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS * 4)
        .max_buf_size(MAX_HEADER_BYTES * 4 + 8192);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut shutting = false;
    loop {
        // while a request is being answered the connection is not idle: look again a
        // whole timeout later (its end resets `last`), never in a tight loop
        let idle_for = if busy.load(AtomicOrdering::Relaxed) > 0 {
            limits.idle_timeout
        } else {
            limits.idle_timeout.saturating_sub(lock(&last).elapsed())
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closing.cancelled(), if !shutting => {
                shutting = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_for), if !shutting => {
                if busy.load(AtomicOrdering::Relaxed) == 0 && lock(&last).elapsed() >= limits.idle_timeout {
                    shutting = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Refuses requests with more header lines or bytes than the contract allows, with the
/// contract's JSON error (hyper's own refusal, far beyond these, has no body).
pub async fn header_limits(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return HttpError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} header lines, {bytes} bytes; at most {MAX_HEADERS} lines and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Starts `serve` on a free loopback port with `app`; the address and its stop.
    async fn serving(
        app: Router,
        idle_timeout: Duration,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        Arc<Metrics>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = Arc::new(Metrics::new());
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(5),
            idle_timeout,
            max_connections: 8,
        };
        tokio::spawn(serve(listener, app, limits, metrics.clone(), async {
            let _ = stopped.await;
        }));
        (addr, stop, metrics)
    }

    /// One request with `Connection: close`: the status line and the body.
    async fn request(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    }

    /// CPU time of this process (user + system), from /proc.
    fn cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        Duration::from_millis((f[0] + f[1]) * 10) // 100 ticks a second
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_panics_answers_500_and_the_server_goes_on() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .route("/ok", get(|| async { "ok" }));
        let (addr, _stop, metrics) = serving(app, Duration::from_secs(5)).await;
        let (status, body) = request(addr, "/boom").await;
        assert!(status.contains(" 500 "), "{status}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
        assert_eq!(request(addr, "/ok").await.1, "ok");
        assert_eq!(metrics.http_panics.get(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_longer_than_the_idle_timeout_costs_no_cpu_while_it_waits() {
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                "done"
            }),
        );
        let (addr, _stop, _) = serving(app, Duration::from_secs(1)).await;
        let before = cpu_time();
        assert_eq!(request(addr, "/slow").await.1, "done");
        let spent = cpu_time() - before;
        assert!(
            spent < Duration::from_millis(50),
            "{spent:?} of CPU while one request waited 2.5 s"
        );
    }
}
