//! The cellular long-poll, device side: a sans-IO client that firmware on a modem (or the
//! fleet simulator) drives over any TCP or TLS socket.
//!
//! One route, `POST /c/{device id}`, on the bridge's cellular listener. The body is a
//! 9-byte poll header, the telemetry records (this crate's wire format, as on LoRaWAN),
//! and the request MAC ([`crate::seal::request_mac`]):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | `0x01` (version 1), `0x81` when bytes 7–8 acknowledge a frame |
//! | 1–4 | request counter, u32, one more than the last request's |
//! | 5–6 | `wait_s`, u16: how long the bridge may hold the request (0: answer at once) |
//! | 7–8 | the counter of the last command frame received (with `0x81`) |
//! | 9.. | telemetry records, or none |
//! | last 4 | MAC over bytes 0.. before it |
//!
//! The answer is `200` with sealed command frames (12 bytes each), or `204` with none.
//! The device answers a frame at once with its next request: its acknowledgement
//! (bytes 7–8) tells the bridge the frame arrived, and its ack record (executed,
//! rejected) travels in the same body. A frame the bridge does not hear acknowledged is
//! sent again with the same counter; the node's replay window refuses a second
//! execution.
//!
//! The request counter must never repeat, reboots included: persist
//! [`Client::counter`] (for instance in steps of 1024, skipping ahead a step at boot).
use crate::command::FRAME_LEN;
use crate::node::{Executor, Node};
use crate::seal::{DeviceKey, MAC_LEN, MAX_ID_LEN, SEALED_FRAME_LEN, open_frame, request_mac};

/// The route's path before the device id.
pub const PATH_PREFIX: &str = "/c/";
/// Bytes of the poll header.
pub const HEADER_LEN: usize = 9;
/// The shortest body: a header and its MAC, no records.
pub const MIN_BODY_LEN: usize = HEADER_LEN + MAC_LEN;
/// Version 1.
pub const VERSION: u8 = 0x01;
/// Flag of byte 0: bytes 7–8 acknowledge a frame.
pub const FLAG_RECEIVED: u8 = 0x80;

/// A poll as the bridge reads it (after checking its MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll<'a> {
    /// The request counter.
    pub counter: u32,
    /// Seconds the device waits.
    pub wait_s: u16,
    /// The counter of the last frame it received, if it says.
    pub received: Option<u16>,
    /// The telemetry records.
    pub records: &'a [u8],
}

/// Why a poll body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    /// Shorter than a header and a MAC.
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Byte 0 is not a known version.
    UnknownVersion(u8),
    /// The MAC is not this device's.
    BadMac,
}

impl core::fmt::Display for PollError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PollError::TooShort { len } => write!(
                f,
                "body of {len} bytes: a poll is at least {MIN_BODY_LEN} (9-byte header, 4-byte MAC)"
            ),
            PollError::UnknownVersion(v) => {
                write!(
                    f,
                    "byte 0 is {v:#04x}: expected 0x01 or 0x81 (a poll), 0x02 or 0x82 (an SMS)"
                )
            }
            PollError::BadMac => f.write_str("the MAC does not match"),
        }
    }
}

/// Reads a poll body without checking its MAC: what the bridge can say of a body before
/// it knows the key.
pub fn parse_poll(body: &[u8]) -> Result<(Poll<'_>, &[u8]), PollError> {
    parse_request(body, VERSION)
}

/// Reads a request of `version` (a poll, or an SMS's [`crate::sms::MO_VERSION`]): one
/// layout for both, told apart by byte 0, which the MAC covers, so that one can never
/// be replayed as the other.
pub(crate) fn parse_request(body: &[u8], version: u8) -> Result<(Poll<'_>, &[u8]), PollError> {
    if body.len() < MIN_BODY_LEN {
        return Err(PollError::TooShort { len: body.len() });
    }
    let (signed, mac) = body.split_at(body.len() - MAC_LEN);
    let flags = signed[0];
    if flags & !FLAG_RECEIVED != version {
        return Err(PollError::UnknownVersion(flags));
    }
    let poll = Poll {
        counter: u32::from_be_bytes([signed[1], signed[2], signed[3], signed[4]]),
        wait_s: u16::from_be_bytes([signed[5], signed[6]]),
        received: (flags & FLAG_RECEIVED != 0).then(|| u16::from_be_bytes([signed[7], signed[8]])),
        records: &signed[HEADER_LEN..],
    };
    Ok((poll, mac))
}

/// Reads a poll body and checks its MAC for this device and key.
pub fn open_poll<'a>(
    key: &DeviceKey,
    device_id: &[u8],
    body: &'a [u8],
) -> Result<Poll<'a>, PollError> {
    open_request(key, device_id, body, VERSION)
}

pub(crate) fn open_request<'a>(
    key: &DeviceKey,
    device_id: &[u8],
    body: &'a [u8],
    version: u8,
) -> Result<Poll<'a>, PollError> {
    let (poll, mac) = parse_request(body, version)?;
    let expected = request_mac(key, device_id, &body[..body.len() - MAC_LEN]);
    if crate::seal::mac_eq(&expected, mac) {
        Ok(poll)
    } else {
        Err(PollError::BadMac)
    }
}

/// What came of an answer's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answered {
    /// Sealed frames whose MAC was right, handed to the node.
    pub frames: usize,
    /// Sealed frames with a wrong MAC (or a body that is not whole sealed frames):
    /// dropped, not executed, not acknowledged.
    pub refused: usize,
}

/// A buffer was too small for what had to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

/// The device's side of the long poll.
#[derive(Debug, Clone)]
pub struct Client {
    key: DeviceKey,
    id: [u8; MAX_ID_LEN],
    id_len: usize,
    counter: u32,
    received: Option<u16>,
}

impl Client {
    /// A client for the device `id` (lowercase hex, as provisioned), whose next request
    /// counter is `next_counter` (persisted; 1 on a fresh device).
    pub fn new(key: DeviceKey, id: &str, next_counter: u32) -> Self {
        let mut buf = [0u8; MAX_ID_LEN];
        let id_len = id.len().min(MAX_ID_LEN);
        buf[..id_len].copy_from_slice(&id.as_bytes()[..id_len]);
        Client {
            key,
            id: buf,
            id_len,
            counter: next_counter,
            received: None,
        }
    }

    /// The device's key (for the other messages it authenticates: an SMS wake-up).
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// The device id.
    pub fn id(&self) -> &[u8] {
        &self.id[..self.id_len]
    }

    /// The next request counter (persist it).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// Writes the next request's body: header, `records`, MAC. Returns its length.
    pub fn body(
        &mut self,
        wait_s: u16,
        records: &[u8],
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        self.body_of(VERSION, wait_s, records, out)
    }

    /// Writes a request body of `version` (a poll's, or an SMS's): the request counter
    /// is one for both bearers.
    pub(crate) fn body_of(
        &mut self,
        version: u8,
        wait_s: u16,
        records: &[u8],
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        let len = HEADER_LEN + records.len() + MAC_LEN;
        if out.len() < len {
            return Err(BufferTooSmall);
        }
        out[0] = version
            | if self.received.is_some() {
                FLAG_RECEIVED
            } else {
                0
            };
        out[1..5].copy_from_slice(&self.counter.to_be_bytes());
        out[5..7].copy_from_slice(&wait_s.to_be_bytes());
        out[7..9].copy_from_slice(&self.received.unwrap_or(0).to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + records.len()].copy_from_slice(records);
        let signed = len - MAC_LEN;
        let mac = request_mac(&self.key, self.id(), &out[..signed]);
        out[signed..len].copy_from_slice(&mac);
        self.counter = self.counter.wrapping_add(1);
        Ok(len)
    }

    /// Writes a whole request, head and body: `POST /c/{id} HTTP/1.1`, `Content-Length`,
    /// nothing else. Returns its length.
    pub fn request(
        &mut self,
        wait_s: u16,
        records: &[u8],
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        let body_len = HEADER_LEN + records.len() + MAC_LEN;
        let mut w = Writer { out, len: 0 };
        w.put(b"POST ")?;
        w.put(PATH_PREFIX.as_bytes())?;
        w.put(&self.id[..self.id_len])?;
        w.put(b" HTTP/1.1\r\nContent-Length: ")?;
        w.decimal(body_len)?;
        w.put(b"\r\n\r\n")?;
        let head = w.len;
        let n = self.body(wait_s, records, &mut w.out[head..])?;
        Ok(head + n)
    }

    /// An answer's body (the frames of a `200`; empty for `204`): each sealed frame whose
    /// MAC is right goes to the node; the last one's counter is acknowledged by the next
    /// request.
    pub fn answer(
        &mut self,
        body: &[u8],
        node: &mut Node,
        now_ms: u64,
        exec: &mut impl Executor,
    ) -> Answered {
        let mut a = Answered::default();
        let mut chunks = body.chunks_exact(SEALED_FRAME_LEN);
        for chunk in &mut chunks {
            let mut sealed = [0u8; SEALED_FRAME_LEN];
            sealed.copy_from_slice(chunk);
            match open_frame(&self.key, self.id(), &sealed) {
                Some(frame) => {
                    node.handle_downlink(&frame, now_ms, exec);
                    self.received = Some(u16::from_be_bytes([frame[1], frame[2]]));
                    a.frames += 1;
                }
                None => a.refused += 1,
            }
        }
        if !chunks.remainder().is_empty() {
            a.refused += 1;
        }
        a
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len + b.len();
        self.out
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    fn decimal(&mut self, mut n: usize) -> Result<(), BufferTooSmall> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
}

/// An HTTP response head, as far as the device needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, the blank line included.
    pub head_len: usize,
    /// The body's length (`Content-Length`, 0 when absent).
    pub body_len: usize,
}

/// Why a response head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// `Content-Length` is not a number.
    BadContentLength,
}

/// Reads a response head from the start of `buf`: `Ok(None)` until the blank line has
/// arrived.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, ResponseError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    if status_line.len() < 12 || !status_line.starts_with(b"HTTP/1.") || status_line[8] != b' ' {
        return Err(ResponseError::BadStatusLine);
    }
    let status = parse_decimal(&status_line[9..12]).ok_or(ResponseError::BadStatusLine)?;
    let mut body_len = 0;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = trim(&line[colon + 1..]);
            body_len = parse_decimal(value).ok_or(ResponseError::BadContentLength)?;
        }
    }
    Ok(Some(ResponseHead {
        status: status as u16,
        head_len: end + 4,
        body_len,
    }))
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn parse_decimal(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    b.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + (d - b'0') as usize)
    })
}

/// Frames in a body of `len` bytes (each sealed frame is [`SEALED_FRAME_LEN`]).
pub const fn frames_in(len: usize) -> usize {
    len / SEALED_FRAME_LEN
}

const _: () = assert!(SEALED_FRAME_LEN == FRAME_LEN + MAC_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeState, Schedule};
    use crate::seal::seal_frame;
    use crate::telemetry::AckResult;

    struct Yes;
    impl Executor for Yes {
        fn execute(&mut self, _: &crate::Command) -> AckResult {
            AckResult::Executed
        }
    }

    fn key() -> DeviceKey {
        DeviceKey::new([0x11; 16])
    }

    #[test]
    fn a_request_is_the_head_the_header_the_records_and_the_mac() {
        let mut c = Client::new(key(), "cafe01", 7);
        let mut out = [0u8; 128];
        let n = c.request(240, &[0x84, 0, 42, 2, 0], &mut out).unwrap();
        let text = core::str::from_utf8(&out[..41]).unwrap();
        assert_eq!(text, "POST /c/cafe01 HTTP/1.1\r\nContent-Length: ");
        let head_len = out[..n].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &out[head_len..n];
        assert_eq!(body.len(), 18);
        let poll = open_poll(&key(), b"cafe01", body).unwrap();
        assert_eq!(poll.counter, 7);
        assert_eq!(poll.wait_s, 240);
        assert_eq!(poll.received, None);
        assert_eq!(poll.records, &[0x84, 0, 42, 2, 0]);
        assert_eq!(c.counter(), 8);
        assert_eq!(open_poll(&key(), b"cafe02", body), Err(PollError::BadMac));
    }

    #[test]
    fn a_frame_received_is_acknowledged_by_the_next_request_and_bad_ones_are_dropped() {
        let mut c = Client::new(key(), "cafe01", 1);
        let mut node = Node::new(Schedule::default(), NodeState::default());
        let good = seal_frame(&key(), b"cafe01", &[0x02, 0, 42, 0, 30, 0, 0, 0]);
        let mut forged = seal_frame(&key(), b"cafe01", &[0x02, 0, 43, 0, 30, 0, 0, 0]);
        forged[11] ^= 1;
        let mut body = [0u8; 24];
        body[..12].copy_from_slice(&good);
        body[12..].copy_from_slice(&forged);
        let a = c.answer(&body, &mut node, 0, &mut Yes);
        assert_eq!(
            a,
            Answered {
                frames: 1,
                refused: 1
            }
        );
        assert_eq!(node.state().replay.highest(), Some(42));
        let mut out = [0u8; 64];
        let n = c.body(0, &[], &mut out).unwrap();
        let poll = open_poll(&key(), b"cafe01", &out[..n]).unwrap();
        assert_eq!(poll.received, Some(42));
    }

    #[test]
    fn response_heads_are_read() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nxxxxxxxxxxxx";
        assert_eq!(
            parse_response_head(r),
            Ok(Some(ResponseHead {
                status: 200,
                head_len: 39,
                body_len: 12
            }))
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 204 No Content\r\n"),
            Ok(None)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 204 \r\n\r\n")
                .unwrap()
                .unwrap()
                .body_len,
            0
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 2x4 \r\n\r\n"),
            Err(ResponseError::BadStatusLine)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err(ResponseError::BadContentLength)
        );
    }

    #[test]
    fn short_and_unknown_bodies_say_why() {
        assert_eq!(parse_poll(&[1; 12]), Err(PollError::TooShort { len: 12 }));
        assert_eq!(parse_poll(&[2; 13]), Err(PollError::UnknownVersion(2)));
    }
}
