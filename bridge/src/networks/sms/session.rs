//! The SMPP session: one bind to the SMSC as a transceiver, kept alive with
//! `enquire_link`, bound again with backoff after a drop.
//!
//! - Submits go out at most `submits_per_s` a second, evenly paced, and at most `window`
//!   awaiting their response; `ESME_RTHROTTLED` (or `ESME_RMSGQFUL`) pauses sending
//!   briefly and slows the pace (`Pace`), and the submit goes again.
//! - A submit whose response does not come (a drop, or `response_timeout_s`) is
//!   [`SubmitOutcome::Lost`]: it may have gone out; the adapter sends its commands again
//!   with the same counters.
//! - A bind refused for its credentials is logged as an error naming the keys to check,
//!   and tried again only every [`REFUSED_RETRY`], never in a storm.
//! - Every `deliver_sm` (a message from a device, a receipt) is handed to the adapter,
//!   and answered with the status the adapter gives once it has dealt with it: a
//!   temporary error makes the SMSC deliver it again later.
use super::pdu::{self, Body, Deliver, Submit};
use crate::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a bind refused for its credentials waits before the next try.
pub const REFUSED_RETRY: Duration = Duration::from_secs(300);
/// The longest wait between binds after other failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The pace of submits: never above `submits_per_s`, one every interval (no burst to
/// catch up after a quiet spell). A throttle from the SMSC pauses sending for five
/// intervals (0.1 to 1 s) and slows the pace by a quarter, down to a quarter of the
/// configured rate; every 10 s without one brings it back up by a tenth.
#[derive(Debug)]
struct Pace {
    max: f64,
    rate: f64,
    gate: Instant,
    calm_since: Instant,
}

impl Pace {
    fn new(per_s: u32, now: Instant) -> Self {
        let max = per_s.max(1) as f64;
        Pace {
            max,
            rate: max,
            gate: now,
            calm_since: now,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    fn sent(&mut self, now: Instant) {
        self.gate = self.gate.max(now) + self.interval();
        if self.rate < self.max && now.duration_since(self.calm_since) >= Duration::from_secs(10) {
            self.rate = (self.rate * 1.1).min(self.max);
            self.calm_since = now;
        }
    }

    fn throttled(&mut self, now: Instant) {
        self.rate = (self.rate * 0.75).max(self.max / 4.0).max(1.0);
        let pause = (self.interval() * 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
        self.gate = now + pause;
        self.calm_since = now;
    }
}

/// Where and how to bind.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (smpps://), with this configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `system_id`.
    pub system_id: String,
    /// `password`.
    pub password: String,
    /// `system_type`.
    pub system_type: String,
    /// Submits awaiting their response at once.
    pub window: usize,
    /// Submits per second.
    pub submits_per_s: u32,
    /// Idle time before an `enquire_link`.
    pub enquire_link: Duration,
    /// Time the SMSC has to answer.
    pub response_timeout: Duration,
}

/// What became of a submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// `submit_sm_resp` with `ESME_ROK`: the SMSC's message id.
    Accepted(String),
    /// Refused with this status (not a throttle: those are retried here).
    Refused(u32),
    /// No answer: it may or may not have gone out.
    Lost(String),
}

/// A `deliver_sm` for the adapter; answer it with [`Inbound::answer`].
pub struct Inbound {
    /// The message.
    pub deliver: Deliver,
    seq: u32,
    replies: mpsc::UnboundedSender<(u32, u32)>,
}

impl Inbound {
    /// Answers the SMSC: `pdu::ROK`, or a temporary error to have it delivered again.
    pub fn answer(self, status: u32) {
        let _ = self.replies.send((self.seq, status));
    }
}

struct Job {
    submit: Submit,
    done: oneshot::Sender<SubmitOutcome>,
}

/// The bind to the SMSC.
pub struct Smpp {
    jobs: mpsc::UnboundedSender<Job>,
    bound: watch::Receiver<bool>,
}

impl Smpp {
    /// Starts binding (on `tasks`, until `stop`); returns the session and the stream of
    /// messages the SMSC delivers.
    pub fn start(
        settings: SessionSettings,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> (Arc<Smpp>, mpsc::UnboundedReceiver<Inbound>) {
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let (bound_tx, bound) = watch::channel(false);
        let link = Link {
            s: settings,
            metrics,
            jobs: jobs_rx,
            inbound: inbound_tx,
            bound: bound_tx,
            pending: VecDeque::new(),
            stop: stop.clone(),
        };
        tasks.spawn(link.run());
        (Arc::new(Smpp { jobs, bound }), inbound_rx)
    }

    /// Whether a bind is up now.
    pub fn bound(&self) -> bool {
        *self.bound.borrow()
    }

    /// Submits one message; waits for the SMSC's answer (throttles are retried here).
    pub async fn submit(&self, submit: Submit) -> SubmitOutcome {
        let (done, rx) = oneshot::channel();
        if self.jobs.send(Job { submit, done }).is_err() {
            return SubmitOutcome::Lost("the SMPP session has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| SubmitOutcome::Lost("the SMPP session has stopped".into()))
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Why a bind did not come up.
#[derive(Debug)]
enum BindError {
    /// The SMSC refused the credentials.
    Credentials(u32),
    /// Anything else (connection, TLS, timeout, another refusal).
    Other(String),
}

struct Link {
    s: SessionSettings,
    metrics: Arc<Metrics>,
    jobs: mpsc::UnboundedReceiver<Job>,
    inbound: mpsc::UnboundedSender<Inbound>,
    bound: watch::Sender<bool>,
    /// Submits waiting for room in the window (a throttled one goes first again).
    pending: VecDeque<Job>,
    stop: CancellationToken,
}

impl Link {
    async fn run(mut self) {
        let mut backoff = Duration::from_secs(1);
        let target = format!("{}:{}", self.s.host, self.s.port);
        while !self.stop.is_cancelled() {
            let wait = match self.bind().await {
                Ok(stream) => {
                    backoff = Duration::from_secs(1);
                    tracing::info!(smsc = %target, system_id = %self.s.system_id, "bound to the SMSC as a transceiver");
                    self.metrics.sms_binds("bound");
                    self.bound.send_replace(true);
                    let why = self.serve(stream).await;
                    self.bound.send_replace(false);
                    self.metrics.sms_bound.set(0);
                    if self.stop.is_cancelled() {
                        break;
                    }
                    tracing::warn!(smsc = %target, reason = %why, "SMPP bind lost; binding again");
                    Duration::from_millis(200)
                }
                Err(BindError::Credentials(status)) => {
                    self.metrics.sms_binds("refused");
                    tracing::error!(
                        smsc = %target,
                        system_id = %self.s.system_id,
                        status = format_args!("{status:#010x} {}", pdu::status_name(status)),
                        retry_s = REFUSED_RETRY.as_secs(),
                        "the SMSC refused the bind's credentials: check sms.system_id and sms.password (or password_file)"
                    );
                    REFUSED_RETRY
                }
                Err(BindError::Other(why)) => {
                    self.metrics.sms_binds("failed");
                    tracing::warn!(smsc = %target, reason = %why, retry_ms = backoff.as_millis() as u64, "cannot bind to the SMSC");
                    let w = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    w
                }
            };
            // jobs arriving while unbound are answered at once: the adapter sends
            // nothing while the bind is down, but one may have raced the drop
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.stop.cancelled() => return,
                    job = self.jobs.recv() => match job {
                        Some(job) => { let _ = job.done.send(SubmitOutcome::Lost("no bind to the SMSC".into())); }
                        None => return,
                    },
                }
            }
            for job in self.pending.drain(..) {
                let _ = job
                    .done
                    .send(SubmitOutcome::Lost("no bind to the SMSC".into()));
            }
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let tcp = tokio::net::TcpStream::connect((self.s.host.as_str(), self.s.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = self.s.tls.clone() else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(self.s.host.clone())
            .map_err(|e| format!("sms.server host: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(tls))
    }

    async fn bind(&self) -> Result<Box<dyn Stream>, BindError> {
        let timeout = self.s.response_timeout;
        let mut stream = tokio::time::timeout(timeout, self.connect())
            .await
            .map_err(|_| BindError::Other("connect: timed out".into()))?
            .map_err(BindError::Other)?;
        let bind =
            pdu::bind_transceiver(1, &self.s.system_id, &self.s.password, &self.s.system_type);
        stream
            .write_all(&bind)
            .await
            .map_err(|e| BindError::Other(format!("write: {e}")))?;
        let mut buf = Vec::new();
        let (header, body) = tokio::time::timeout(timeout, read_pdu(&mut stream, &mut buf))
            .await
            .map_err(|_| BindError::Other("no bind_transceiver_resp in time".into()))?
            .map_err(BindError::Other)?;
        match (header.status, body) {
            (pdu::ROK, Body::BindResp(_)) => Ok(stream),
            (s @ (pdu::RINVPASWD | pdu::RINVSYSID), _) => Err(BindError::Credentials(s)),
            (s, Body::BindResp(_) | Body::GenericNack) => Err(BindError::Other(format!(
                "bind refused: {s:#010x} {}",
                pdu::status_name(s)
            ))),
            (_, other) => Err(BindError::Other(format!(
                "expected bind_transceiver_resp, got {other:?}"
            ))),
        }
    }

    /// Serves one bind until it drops (or the bridge stops); says why it ended.
    async fn serve(&mut self, stream: Box<dyn Stream>) -> String {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (replies_tx, mut replies) = mpsc::unbounded_channel::<(u32, u32)>();
        let (frames_tx, mut frames) = mpsc::channel::<Result<(pdu::Header, Body), String>>(64);
        // the reader: whole PDUs, in order
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let r = read_pdu(&mut rd, &mut buf).await;
                let end = r.is_err();
                if frames_tx.send(r).await.is_err() || end {
                    return;
                }
            }
        });
        let mut seq: u32 = 1;
        let mut next_seq = || {
            seq = if seq >= 0x7FFF_FFFF { 1 } else { seq + 1 };
            seq
        };
        let mut outstanding: HashMap<u32, (Job, Instant)> = HashMap::new();
        let mut enquiry: Option<(u32, Instant)> = None;
        let mut pace = Pace::new(self.s.submits_per_s, Instant::now());
        let mut last_heard = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let why = loop {
            // send what the window and the rate allow
            let now = Instant::now();
            let mut write_failed = None;
            while outstanding.len() < self.s.window && now >= pace.gate {
                let Some(job) = self.pending.pop_front() else {
                    break;
                };
                if job.done.is_closed() {
                    continue;
                }
                let s = next_seq();
                if let Err(e) = wr.write_all(&pdu::submit_sm(s, &job.submit)).await {
                    // it may be partly written: the SMSC may have it
                    let _ = job.done.send(SubmitOutcome::Lost(format!("write: {e}")));
                    write_failed = Some(e);
                    break;
                }
                self.metrics.sms_submits("sent");
                outstanding.insert(s, (job, Instant::now()));
                pace.sent(now);
            }
            if let Some(e) = write_failed {
                break format!("write: {e}");
            }
            let room = outstanding.len() < self.s.window && !self.pending.is_empty();
            tokio::select! {
                _ = self.stop.cancelled() => {
                    let _ = wr.write_all(&pdu::request(pdu::UNBIND, next_seq())).await;
                    // the unbind_resp, briefly: the SMSC may also just close
                    let _ = tokio::time::timeout(Duration::from_millis(500), frames.recv()).await;
                    break "the bridge is stopping".to_owned();
                }
                job = self.jobs.recv() => match job {
                    Some(job) => self.pending.push_back(job),
                    None => break "the SMS adapter stopped".to_owned(),
                },
                _ = tokio::time::sleep_until(pace.gate), if room && pace.gate > Instant::now() => {}
                Some((s, status)) = replies.recv() => {
                    if let Err(e) = wr.write_all(&pdu::response(pdu::DELIVER_SM, status, s)).await {
                        break format!("write: {e}");
                    }
                }
                frame = frames.recv() => {
                    let (header, body) = match frame {
                        Some(Ok(f)) => f,
                        Some(Err(e)) => break e,
                        None => break "the connection closed".to_owned(),
                    };
                    last_heard = Instant::now();
                    match body {
                        Body::SubmitResp(message_id) => {
                            let Some((job, _)) = outstanding.remove(&header.seq) else {
                                tracing::debug!(seq = header.seq, "submit_sm_resp for no submit waiting (answered too late)");
                                continue;
                            };
                            match header.status {
                                pdu::ROK => {
                                    self.metrics.sms_submits("accepted");
                                    let _ = job.done.send(SubmitOutcome::Accepted(message_id));
                                }
                                pdu::RTHROTTLED | pdu::RMSGQFUL => {
                                    self.metrics.sms_submits("throttled");
                                    tracing::debug!(status = pdu::status_name(header.status), "SMSC throttled a submit; pausing");
                                    self.pending.push_front(job);
                                    pace.throttled(Instant::now());
                                }
                                status => {
                                    self.metrics.sms_submits("refused");
                                    let _ = job.done.send(SubmitOutcome::Refused(status));
                                }
                            }
                        }
                        Body::Deliver(deliver) => {
                            let _ = self.inbound.send(Inbound { deliver, seq: header.seq, replies: replies_tx.clone() });
                        }
                        Body::EnquireLink => {
                            if let Err(e) = wr.write_all(&pdu::response(pdu::ENQUIRE_LINK, pdu::ROK, header.seq)).await {
                                break format!("write: {e}");
                            }
                        }
                        Body::EnquireLinkResp => {
                            if enquiry.is_some_and(|(s, _)| s == header.seq) {
                                enquiry = None;
                            }
                        }
                        Body::Unbind => {
                            let _ = wr.write_all(&pdu::response(pdu::UNBIND, pdu::ROK, header.seq)).await;
                            break "the SMSC unbound".to_owned();
                        }
                        Body::GenericNack => {
                            // a nack of a submit: it was not taken
                            if let Some((job, _)) = outstanding.remove(&header.seq) {
                                self.metrics.sms_submits("refused");
                                let _ = job.done.send(SubmitOutcome::Refused(header.status));
                            }
                        }
                        Body::BindResp(_) | Body::UnbindResp => {}
                        Body::Malformed(e) => {
                            tracing::warn!(error = %e, "SMSC sent a PDU that cannot be read; answered with an error");
                            self.metrics.malformed("sms", "bad_pdu");
                            let answer = if header.id == pdu::DELIVER_SM {
                                pdu::response(pdu::DELIVER_SM, pdu::RINVMSGLEN, header.seq)
                            } else {
                                pdu::response(pdu::GENERIC_NACK & !pdu::RESP, pdu::RINVMSGLEN, header.seq)
                            };
                            if let Err(e) = wr.write_all(&answer).await {
                                break format!("write: {e}");
                            }
                        }
                        Body::Other => {
                            if header.id & pdu::RESP == 0 {
                                let nack = pdu::response(pdu::GENERIC_NACK & !pdu::RESP, pdu::RINVCMDID, header.seq);
                                let _ = wr.write_all(&nack).await;
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let late: Vec<u32> = outstanding
                        .iter()
                        .filter(|(_, (_, at))| now.duration_since(*at) >= self.s.response_timeout)
                        .map(|(s, _)| *s)
                        .collect();
                    for s in late {
                        if let Some((job, _)) = outstanding.remove(&s) {
                            self.metrics.sms_submits("lost");
                            let _ = job.done.send(SubmitOutcome::Lost(format!(
                                "no submit_sm_resp within {} s", self.s.response_timeout.as_secs()
                            )));
                        }
                    }
                    if let Some((_, at)) = enquiry {
                        if now.duration_since(at) >= self.s.response_timeout {
                            break "no enquire_link_resp in time".to_owned();
                        }
                    } else if now.duration_since(last_heard) >= self.s.enquire_link {
                        let s = next_seq();
                        if let Err(e) = wr.write_all(&pdu::request(pdu::ENQUIRE_LINK, s)).await {
                            break format!("write: {e}");
                        }
                        enquiry = Some((s, now));
                        last_heard = now;
                    }
                }
            }
        };
        reader.abort();
        for (_, (job, _)) in outstanding.drain() {
            self.metrics.sms_submits("lost");
            let _ = job.done.send(SubmitOutcome::Lost(format!(
                "the bind ended before the SMSC answered ({why})"
            )));
        }
        why
    }
}

/// Reads one whole PDU, keeping what follows it in `buf`.
async fn read_pdu<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(pdu::Header, Body), String> {
    loop {
        if let Some(len) = pdu::pdu_len(buf) {
            let len = len.map_err(|e| format!("SMSC sent a bad PDU: {e}"))?;
            if buf.len() >= len {
                let frame: Vec<u8> = buf.drain(..len).collect();
                return pdu::read(&frame).map_err(|e| format!("SMSC sent a bad PDU: {e}"));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the SMSC closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_never_bursts_slows_on_a_throttle_and_recovers() {
        let t0 = Instant::now();
        let mut p = Pace::new(50, t0);
        p.sent(t0);
        p.sent(t0);
        assert_eq!(p.gate, t0 + Duration::from_millis(40), "one every 20 ms");
        // a long quiet spell gives no burst: the next gate is an interval after now
        let later = t0 + Duration::from_secs(5);
        p.sent(later);
        assert_eq!(p.gate, later + Duration::from_millis(20));
        p.throttled(later);
        assert_eq!(p.rate, 37.5);
        let pause = p.gate.duration_since(later);
        assert!(
            (133..=134).contains(&pause.as_millis()),
            "{pause:?}: five intervals at 37.5/s"
        );
        for _ in 0..10 {
            p.throttled(later);
        }
        assert_eq!(
            p.rate, 12.5,
            "a quarter of the configured rate at the least"
        );
        let mut t = later;
        while p.rate < 50.0 {
            t += Duration::from_secs(10);
            p.sent(t);
        }
        assert_eq!(p.rate, 50.0, "back to the configured rate, never above");
    }
}
