//! A test SMSC: it takes one ESME's bind as a transceiver over real SMPP 3.4 on TCP, and
//! hands each message to the simulated handset of its destination number. Its PDUs are
//! read and written with the `smpp34` crate's codec, a different implementation from the
//! bridge's own, so that one misreading of the specification cannot cancel itself out.
//!
//! It can misbehave on demand ([`Knobs`]): refuse binds, throttle above a rate, lose
//! responses, drop the connection in the middle of a window, and send delivery receipts
//! at once, late, with a failure state, or never. Every bind and submit is recorded for
//! the tests to look at.
use smpp34::{
    CommandHeader, SmppError, Tlv, bind_transceiver, deliver_sm, enquire_link, submit_sm,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// What the SMSC does with each message's delivery receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipts {
    /// A receipt with this final state (`DELIVRD`, `UNDELIV`, ...) once the handset has
    /// the message.
    Now(&'static str),
    /// The same, this long after.
    After(Duration, &'static str),
    /// None at all.
    Never,
}

/// How the SMSC behaves now.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Refuse binds with `ESME_RINVPASWD` whatever the credentials.
    pub refuse_binds: bool,
    /// Submits per second it takes; above it, `ESME_RTHROTTLED`.
    pub max_per_s: Option<u32>,
    /// Submits whose response it loses (the message still goes out).
    pub lose_responses: u32,
    /// After this many more submits taken, it closes the connection at once, their
    /// responses unsent (the messages still go out).
    pub drop_after: Option<u32>,
    /// Receipts.
    pub receipts: Receipts,
    /// Numbers whose handset is out of reach: messages to them are not delivered (the
    /// receipt, if any, says `UNDELIV`).
    pub unreachable: Vec<String>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            refuse_binds: false,
            max_per_s: None,
            lose_responses: 0,
            drop_after: None,
            receipts: Receipts::Now("DELIVRD"),
            unreachable: Vec::new(),
        }
    }
}

/// A submit as the SMSC read it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// `destination_addr`.
    pub to: String,
    /// `source_addr`.
    pub from: String,
    /// `esm_class`.
    pub esm_class: u8,
    /// `data_coding`.
    pub data_coding: u8,
    /// `registered_delivery`.
    pub registered_delivery: u8,
    /// `validity_period`.
    pub validity_period: String,
    /// `short_message`: the user data.
    pub user_data: Vec<u8>,
    /// What it answered: the message id, or the refusal.
    pub answer: Result<String, u32>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    knobs: Knobs,
    binds: Vec<(String, bool)>,
    submits: Vec<Submitted>,
    /// The bound ESME's writer.
    esme: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Closes the bound ESME's connection when told.
    kill: Option<Arc<Notify>>,
    handsets: HashMap<String, mpsc::UnboundedSender<Vec<u8>>>,
    /// Start of the current second and submits taken in it.
    second: Option<(Instant, u32)>,
    /// Sequence numbers of the mobile-originated messages sent to the ESME.
    mo_seqs: std::collections::HashSet<u32>,
    /// MO messages the ESME answered, by status.
    mo_answers: Vec<u32>,
}

/// The test SMSC.
pub struct Smsc {
    addr: SocketAddr,
    system_id: String,
    password: String,
    state: Mutex<State>,
    changed: Notify,
    next_id: AtomicU32,
    next_seq: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Smsc {
    /// Listens on a free loopback port for an ESME with these credentials.
    pub async fn start(system_id: &str, password: &str) -> std::io::Result<Arc<Smsc>> {
        Self::start_on(
            "127.0.0.1:0".parse().expect("an address"),
            system_id,
            password,
        )
        .await
    }

    /// Listens on `addr`.
    pub async fn start_on(
        addr: SocketAddr,
        system_id: &str,
        password: &str,
    ) -> std::io::Result<Arc<Smsc>> {
        let listener = TcpListener::bind(addr).await?;
        let smsc = Arc::new(Smsc {
            addr: listener.local_addr()?,
            system_id: system_id.to_owned(),
            password: password.to_owned(),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            next_id: AtomicU32::new(1),
            next_seq: AtomicU32::new(1),
        });
        let s = smsc.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(s.clone().serve(tcp));
            }
        });
        Ok(smsc)
    }

    /// Where it listens: `smpp://{addr}` for the bridge.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how it behaves.
    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut lock(&self.state).knobs);
    }

    /// Every bind so far: (system_id, accepted).
    pub fn binds(&self) -> Vec<(String, bool)> {
        lock(&self.state).binds.clone()
    }

    /// Every submit so far.
    pub fn submits(&self) -> Vec<Submitted> {
        lock(&self.state).submits.clone()
    }

    /// The statuses the ESME answered mobile-originated messages with.
    pub fn mo_answers(&self) -> Vec<u32> {
        lock(&self.state).mo_answers.clone()
    }

    /// Whether an ESME is bound now.
    pub fn bound(&self) -> bool {
        lock(&self.state).esme.is_some()
    }

    /// Waits until `check` holds of the recorded state, or `timeout`.
    pub async fn wait(&self, timeout: Duration, check: impl Fn(&Smsc) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if check(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return check(self);
            }
        }
    }

    /// The handset of `number`: it receives the user data of each message delivered to it.
    pub fn handset(&self, number: &str) -> mpsc::UnboundedReceiver<Vec<u8>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.state).handsets.insert(number.to_owned(), tx);
        rx
    }

    /// A handset sends a binary message (user data with its header) to the ESME, as a
    /// `deliver_sm`; false when no ESME is bound.
    pub fn mobile_originated(&self, from: &str, user_data: &[u8]) -> bool {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.state).mo_seqs.insert(seq);
        let pdu = deliver_sm::new(
            seq,
            String::new(),
            1,
            1,
            from.to_owned(),
            0,
            0,
            String::new(),
            0x40,
            0,
            0,
            String::new(),
            String::new(),
            0,
            0,
            0x04,
            0,
            user_data.to_vec(),
        );
        self.to_esme(pdu.encode())
    }

    fn to_esme(&self, pdu: Vec<u8>) -> bool {
        lock(&self.state)
            .esme
            .as_ref()
            .is_some_and(|tx| tx.send(pdu).is_ok())
    }

    /// Closes the ESME's connection now.
    pub fn drop_connection(&self) {
        let mut st = lock(&self.state);
        st.esme = None;
        if let Some(k) = st.kill.take() {
            k.notify_one();
        }
        drop(st);
        self.changed.notify_waiters();
    }

    fn receipt(&self, message_id: &str, to: &str, stat: &'static str) -> Vec<u8> {
        let text = format!(
            "id:{message_id} sub:001 dlvrd:{} submit date:2612040000 done date:2612040000 stat:{stat} err:000 text:",
            if stat == "DELIVRD" { "001" } else { "000" }
        );
        let state: u8 = match stat {
            "DELIVRD" => 2,
            "EXPIRED" => 3,
            "DELETED" => 4,
            "UNDELIV" => 5,
            "REJECTD" => 8,
            _ => 7,
        };
        let mut id = message_id.as_bytes().to_vec();
        id.push(0);
        deliver_sm::new(
            self.next_seq.fetch_add(1, Ordering::Relaxed),
            String::new(),
            1,
            1,
            to.to_owned(),
            0,
            0,
            String::new(),
            0x04,
            0,
            0,
            String::new(),
            String::new(),
            0,
            0,
            0,
            0,
            text.into_bytes(),
        )
        .with_tlvs([Tlv::new(0x001E, id), Tlv::new(0x0427, vec![state])])
        .encode()
    }

    async fn serve(self: Arc<Self>, tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let (mut rd, mut wr) = tcp.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let kill = Arc::new(Notify::new());
        let mut bound = false;
        let mut buf = Vec::new();
        loop {
            let pdu = tokio::select! {
                out = rx.recv() => match out {
                    Some(pdu) => {
                        if wr.write_all(&pdu).await.is_err() { break; }
                        continue;
                    }
                    None => break,
                },
                pdu = read_pdu(&mut rd, &mut buf) => match pdu {
                    Some(p) => p,
                    None => break,
                },
                // dropped by `drop_connection`
                _ = kill.notified() => break,
            };
            let Ok(header) = CommandHeader::decode(&pdu) else {
                break;
            };
            let reply = match header.command_id {
                0x0000_0009 => {
                    let Ok(req) = bind_transceiver::decode(header, &pdu) else {
                        break;
                    };
                    let ok = !lock(&self.state).knobs.refuse_binds
                        && req.system_id == self.system_id
                        && req.password == self.password;
                    let sid = req.system_id.clone();
                    let resp = if ok {
                        req.accept("longproto-test-smsc".into(), Some(0x34))
                    } else {
                        req.reject(SmppError::ESME_RINVPASWD)
                    };
                    {
                        let mut st = lock(&self.state);
                        st.binds.push((sid, ok));
                        if ok {
                            st.esme = Some(tx.clone());
                            st.kill = Some(kill.clone());
                        }
                    }
                    bound = ok;
                    self.changed.notify_waiters();
                    Some(resp.encode())
                }
                0x0000_0004 if bound => match self.submit(&pdu, header) {
                    Step::Answer(r) => Some(r),
                    Step::Silent => None,
                    Step::Drop => break,
                },
                0x0000_0015 => enquire_link::decode(header, &pdu)
                    .ok()
                    .map(|e| e.accept().encode()),
                0x0000_0006 => {
                    let resp = CommandHeader {
                        command_length: 16,
                        command_id: 0x8000_0006,
                        command_status: 0,
                        sequence_number: header.sequence_number,
                    };
                    let _ = wr.write_all(&resp.encode()).await;
                    break;
                }
                0x8000_0005 => {
                    let mut st = lock(&self.state);
                    if st.mo_seqs.remove(&header.sequence_number) {
                        st.mo_answers.push(header.command_status);
                    }
                    drop(st);
                    self.changed.notify_waiters();
                    None
                }
                0x8000_0015 => None,
                _ => Some(
                    smpp34::generic_nack::new(SmppError::ESME_RINVCMDID, header.sequence_number)
                        .encode(),
                ),
            };
            if let Some(r) = reply {
                if wr.write_all(&r).await.is_err() {
                    break;
                }
            }
        }
        let mut st = lock(&self.state);
        if st.esme.as_ref().is_some_and(|t| t.same_channel(&tx)) {
            st.esme = None;
            st.kill = None;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    fn submit(self: &Arc<Self>, pdu: &[u8], header: CommandHeader) -> Step {
        let Ok(req) = submit_sm::decode(header, pdu) else {
            return Step::Answer(submit_sm::generic_reject(0, SmppError::ESME_RINVMSGLEN).encode());
        };
        let mut st = lock(&self.state);
        let now = Instant::now();
        let throttled = match st.knobs.max_per_s {
            None => false,
            Some(max) => {
                let (start, n) = st.second.get_or_insert((now, 0));
                if now.duration_since(*start) >= Duration::from_secs(1) {
                    *start = now;
                    *n = 0;
                }
                *n += 1;
                *n > max
            }
        };
        let record = |answer| Submitted {
            to: req.destination_addr.clone(),
            from: req.source_addr.clone(),
            esm_class: req.esm_class,
            data_coding: req.data_coding,
            registered_delivery: req.registered_delivery,
            validity_period: req.validity_period.clone(),
            user_data: req.short_message.clone(),
            answer,
            at: now,
        };
        if throttled {
            st.submits
                .push(record(Err(SmppError::ESME_RTHROTTLED as u32)));
            drop(st);
            self.changed.notify_waiters();
            return Step::Answer(req.reject(SmppError::ESME_RTHROTTLED).encode());
        }
        let id = format!("m{:06}", self.next_id.fetch_add(1, Ordering::Relaxed));
        st.submits.push(record(Ok(id.clone())));
        // the message goes out whatever becomes of the response, a moment after it (an
        // SMSC answers the submit before it forwards the message)
        let reachable = !st.knobs.unreachable.contains(&req.destination_addr);
        let handset = reachable
            .then(|| st.handsets.get(&req.destination_addr).cloned())
            .flatten();
        let stat = if reachable { None } else { Some("UNDELIV") };
        let receipt = match (req.registered_delivery & 0x03, st.knobs.receipts) {
            (0, _) | (_, Receipts::Never) => None,
            (_, Receipts::Now(s)) => Some((Duration::ZERO, stat.unwrap_or(s))),
            (_, Receipts::After(d, s)) => Some((d, stat.unwrap_or(s))),
        };
        let to = req.destination_addr.clone();
        let message = req.short_message.clone();
        let step = if let Some(n) = st.knobs.drop_after.as_mut() {
            if *n <= 1 {
                st.knobs.drop_after = None;
                st.esme = None;
                st.kill = None;
                Step::Drop
            } else {
                *n -= 1;
                Step::Silent
            }
        } else if st.knobs.lose_responses > 0 {
            st.knobs.lose_responses -= 1;
            Step::Silent
        } else {
            Step::Answer(req.accept(id.clone()).encode())
        };
        drop(st);
        let s = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(h) = handset {
                let _ = h.send(message);
            }
            if let Some((after, stat)) = receipt {
                tokio::time::sleep(after).await;
                let r = s.receipt(&id, &to, stat);
                s.to_esme(r);
            }
        });
        self.changed.notify_waiters();
        step
    }
}

enum Step {
    Answer(Vec<u8>),
    /// No response (lost, or held until the drop).
    Silent,
    Drop,
}

async fn read_pdu(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().ok()?) as usize;
            if !(16..=65_536).contains(&len) {
                return None;
            }
            if buf.len() >= len {
                return Some(buf.drain(..len).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = rd.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
