//! SMPP 3.4 PDUs, as far as an ESME bound as a transceiver needs them: the requests it
//! sends (`bind_transceiver`, `submit_sm`, `enquire_link`, `unbind`), the responses it
//! writes (`deliver_sm_resp`, `enquire_link_resp`, `unbind_resp`, `generic_nack`), and a
//! reader for every PDU an SMSC sends it. Sans-IO: bytes in, bytes out.
//!
//! Every PDU is a 16-byte header (`command_length`, `command_id`, `command_status`,
//! `sequence_number`, big-endian), mandatory fields (C-octet strings end with a NUL),
//! then optional TLVs. The reader refuses anything that runs past its length, and names
//! the field at fault.

/// `bind_transceiver`.
pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
/// `submit_sm`.
pub const SUBMIT_SM: u32 = 0x0000_0004;
/// `deliver_sm`.
pub const DELIVER_SM: u32 = 0x0000_0005;
/// `unbind`.
pub const UNBIND: u32 = 0x0000_0006;
/// `enquire_link`.
pub const ENQUIRE_LINK: u32 = 0x0000_0015;
/// `generic_nack`.
pub const GENERIC_NACK: u32 = 0x8000_0000;
/// A response's `command_id`: its request's with bit 31 set.
pub const RESP: u32 = 0x8000_0000;

/// `ESME_ROK`.
pub const ROK: u32 = 0x00;
/// `ESME_RINVMSGLEN`: the message length is wrong.
pub const RINVMSGLEN: u32 = 0x01;
/// `ESME_RINVCMDID`: unknown command.
pub const RINVCMDID: u32 = 0x03;
/// `ESME_RBINDFAIL`.
pub const RBINDFAIL: u32 = 0x0D;
/// `ESME_RINVPASWD`.
pub const RINVPASWD: u32 = 0x0E;
/// `ESME_RINVSYSID`.
pub const RINVSYSID: u32 = 0x0F;
/// `ESME_RMSGQFUL`: the SMSC's queue is full (try again later).
pub const RMSGQFUL: u32 = 0x14;
/// `ESME_RTHROTTLED`: too many submits.
pub const RTHROTTLED: u32 = 0x58;
/// `ESME_RX_T_APPN`: the ESME cannot take the message now (temporary).
pub const RX_T_APPN: u32 = 0x64;

/// The header's length.
pub const HEADER_LEN: usize = 16;
/// The longest PDU the reader takes (a `deliver_sm` with a 64 KB `message_payload`
/// would be legal; nothing this bridge reads needs more than a few hundred bytes).
pub const MAX_PDU_LEN: usize = 4096;

/// TLV `receipted_message_id`.
const TLV_RECEIPTED_MESSAGE_ID: u16 = 0x001E;
/// TLV `message_state`.
const TLV_MESSAGE_STATE: u16 = 0x0427;
/// TLV `message_payload`.
const TLV_MESSAGE_PAYLOAD: u16 = 0x0424;

/// The name of a `command_status`, for logs and errors.
pub fn status_name(status: u32) -> &'static str {
    match status {
        ROK => "ESME_ROK",
        RINVMSGLEN => "ESME_RINVMSGLEN",
        0x02 => "ESME_RINVCMDLEN",
        RINVCMDID => "ESME_RINVCMDID",
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        RBINDFAIL => "ESME_RBINDFAIL",
        RINVPASWD => "ESME_RINVPASWD",
        RINVSYSID => "ESME_RINVSYSID",
        RMSGQFUL => "ESME_RMSGQFUL",
        0x45 => "ESME_RSUBMITFAIL",
        RTHROTTLED => "ESME_RTHROTTLED",
        RX_T_APPN => "ESME_RX_T_APPN",
        _ => "other",
    }
}

/// A PDU the reader refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// `command_length` is below the header's or above [`MAX_PDU_LEN`].
    #[error("command_length {0} is outside 16..=4096")]
    BadLength(u32),
    /// A field runs past the PDU.
    #[error("{pdu}: field {field} runs past the PDU's end")]
    Truncated {
        /// The PDU.
        pdu: &'static str,
        /// The field.
        field: &'static str,
    },
}

/// A PDU's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `command_id`.
    pub id: u32,
    /// `command_status`.
    pub status: u32,
    /// `sequence_number`.
    pub seq: u32,
}

/// A `deliver_sm`: a mobile-originated message or a delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deliver {
    /// `source_addr`: the sender's number.
    pub source_addr: String,
    /// `destination_addr`.
    pub destination_addr: String,
    /// `esm_class`.
    pub esm_class: u8,
    /// `data_coding`.
    pub data_coding: u8,
    /// `short_message`, or the `message_payload` TLV when that is empty.
    pub short_message: Vec<u8>,
    /// TLV `receipted_message_id`.
    pub receipted_message_id: Option<String>,
    /// TLV `message_state`.
    pub message_state: Option<u8>,
}

impl Deliver {
    /// Whether it is a delivery receipt (`esm_class` message type `0x04`).
    pub fn is_receipt(&self) -> bool {
        self.esm_class & 0x3C == 0x04
    }
}

/// A PDU as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `bind_transceiver_resp` (its `system_id`, when present).
    BindResp(String),
    /// `submit_sm_resp` (its `message_id`; empty on an error status).
    SubmitResp(String),
    /// `deliver_sm`.
    Deliver(Deliver),
    /// `enquire_link`.
    EnquireLink,
    /// `enquire_link_resp`.
    EnquireLinkResp,
    /// `unbind`.
    Unbind,
    /// `unbind_resp`.
    UnbindResp,
    /// `generic_nack`.
    GenericNack,
    /// Anything else: answered with `generic_nack` if it is a request.
    Other,
    /// A PDU whose length was right but whose body could not be read.
    Malformed(PduError),
}

/// The length of the PDU at the start of `buf`: `None` until its 4 length bytes are in.
pub fn pdu_len(buf: &[u8]) -> Option<Result<usize, PduError>> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    if (len as usize) < HEADER_LEN || len as usize > MAX_PDU_LEN {
        return Some(Err(PduError::BadLength(len)));
    }
    Some(Ok(len as usize))
}

/// Reads one whole PDU (`pdu` is exactly `command_length` bytes). A body that cannot be
/// read is [`Body::Malformed`], so that it can be answered by its sequence number.
pub fn read(pdu: &[u8]) -> Result<(Header, Body), PduError> {
    let len = match pdu_len(pdu) {
        Some(Ok(len)) if len == pdu.len() => len,
        Some(Err(e)) => return Err(e),
        _ => return Err(PduError::BadLength(pdu.len() as u32)),
    };
    let word = |i: usize| u32::from_be_bytes(pdu[i..i + 4].try_into().expect("4 bytes"));
    let header = Header {
        id: word(4),
        status: word(8),
        seq: word(12),
    };
    let mut r = Reader {
        buf: &pdu[HEADER_LEN..len],
        pdu: "",
    };
    let body = match read_body(header, &mut r) {
        Ok(b) => b,
        Err(e) => Body::Malformed(e),
    };
    Ok((header, body))
}

fn read_body(header: Header, r: &mut Reader<'_>) -> Result<Body, PduError> {
    Ok(match header.id {
        id if id == BIND_TRANSCEIVER | RESP => {
            r.pdu = "bind_transceiver_resp";
            // an error response may carry no body at all
            BindResp(if r.buf.is_empty() {
                String::new()
            } else {
                r.cstr("system_id")?
            })
        }
        id if id == SUBMIT_SM | RESP => {
            r.pdu = "submit_sm_resp";
            SubmitResp(if r.buf.is_empty() {
                String::new()
            } else {
                r.cstr("message_id")?
            })
        }
        DELIVER_SM => {
            r.pdu = "deliver_sm";
            Body::Deliver(r.deliver()?)
        }
        ENQUIRE_LINK => Body::EnquireLink,
        id if id == ENQUIRE_LINK | RESP => Body::EnquireLinkResp,
        UNBIND => Body::Unbind,
        id if id == UNBIND | RESP => Body::UnbindResp,
        GENERIC_NACK => Body::GenericNack,
        _ => Body::Other,
    })
}

use Body::{BindResp, SubmitResp};

struct Reader<'a> {
    buf: &'a [u8],
    pdu: &'static str,
}

impl Reader<'_> {
    fn short(&self, field: &'static str) -> PduError {
        PduError::Truncated {
            pdu: self.pdu,
            field,
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PduError> {
        let (&b, rest) = self.buf.split_first().ok_or(self.short(field))?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], PduError> {
        if self.buf.len() < n {
            return Err(self.short(field));
        }
        let (a, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(a)
    }

    fn cstr(&mut self, field: &'static str) -> Result<String, PduError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(self.short(field))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn deliver(&mut self) -> Result<Deliver, PduError> {
        let mut d = Deliver::default();
        self.cstr("service_type")?;
        self.take(2, "source_addr_ton")?;
        d.source_addr = self.cstr("source_addr")?;
        self.take(2, "dest_addr_ton")?;
        d.destination_addr = self.cstr("destination_addr")?;
        d.esm_class = self.u8("esm_class")?;
        self.take(2, "protocol_id")?;
        self.cstr("schedule_delivery_time")?;
        self.cstr("validity_period")?;
        self.take(2, "registered_delivery")?;
        d.data_coding = self.u8("data_coding")?;
        self.u8("sm_default_msg_id")?;
        let n = self.u8("sm_length")? as usize;
        d.short_message = self.take(n, "short_message")?.to_vec();
        while !self.buf.is_empty() {
            let tag = u16::from_be_bytes(self.take(2, "tlv tag")?.try_into().expect("2"));
            let len = u16::from_be_bytes(self.take(2, "tlv length")?.try_into().expect("2"));
            let value = self.take(len as usize, "tlv value")?;
            match tag {
                TLV_RECEIPTED_MESSAGE_ID => {
                    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                    d.receipted_message_id =
                        Some(String::from_utf8_lossy(&value[..end]).into_owned());
                }
                TLV_MESSAGE_STATE => d.message_state = value.first().copied(),
                TLV_MESSAGE_PAYLOAD if d.short_message.is_empty() => {
                    d.short_message = value.to_vec()
                }
                _ => {}
            }
        }
        Ok(d)
    }
}

/// A PDU being written.
struct Writer(Vec<u8>);

impl Writer {
    fn new(id: u32, status: u32, seq: u32) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&status.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        Writer(v)
    }

    fn cstr(mut self, s: &str) -> Self {
        self.0.extend(s.bytes().filter(|&b| b != 0));
        self.0.push(0);
        self
    }

    fn u8(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    fn done(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// `bind_transceiver`, interface version 3.4, TON/NPI unknown, no address range.
pub fn bind_transceiver(seq: u32, system_id: &str, password: &str, system_type: &str) -> Vec<u8> {
    Writer::new(BIND_TRANSCEIVER, 0, seq)
        .cstr(system_id)
        .cstr(password)
        .cstr(system_type)
        .u8(0x34)
        .u8(0)
        .u8(0)
        .cstr("")
        .done()
}

/// What a `submit_sm` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// `source_addr`.
    pub source_addr: String,
    /// `source_addr_ton`.
    pub source_ton: u8,
    /// `source_addr_npi`.
    pub source_npi: u8,
    /// `destination_addr`: the device's number.
    pub destination_addr: String,
    /// `esm_class` (`0x40`: the user data has a header).
    pub esm_class: u8,
    /// `registered_delivery` (`0x01`: a receipt for the final state).
    pub registered_delivery: u8,
    /// `data_coding` (`0x04`: 8-bit).
    pub data_coding: u8,
    /// `validity_period` in the relative form `YYMMDDhhmmss000R`, or empty.
    pub validity_period: String,
    /// The user data (at most 140 bytes: a longer one is cut by the length byte's
    /// limit, so the caller never builds one).
    pub short_message: Vec<u8>,
}

/// A relative `validity_period` (SMPP 3.4 §7.1.1, `YYMMDDhhmmsstnnR`) of `ms`, in whole
/// seconds (at least one, at most 99 days).
pub fn relative_validity(ms: i64) -> String {
    let s = (ms / 1000).clamp(1, 99 * 86_400 + 86_399);
    format!(
        "0000{:02}{:02}{:02}{:02}000R",
        s / 86_400,
        s % 86_400 / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `submit_sm`.
pub fn submit_sm(seq: u32, s: &Submit) -> Vec<u8> {
    let mut w = Writer::new(SUBMIT_SM, 0, seq)
        .cstr("")
        .u8(s.source_ton)
        .u8(s.source_npi)
        .cstr(&s.source_addr)
        .u8(1) // international
        .u8(1) // E.164
        .cstr(&s.destination_addr)
        .u8(s.esm_class)
        .u8(0) // protocol_id
        .u8(0) // priority_flag
        .cstr("") // schedule_delivery_time: now
        .cstr(&s.validity_period)
        .u8(s.registered_delivery)
        .u8(0) // replace_if_present_flag
        .u8(s.data_coding)
        .u8(0); // sm_default_msg_id
    let sm = &s.short_message[..s.short_message.len().min(254)];
    w.0.push(sm.len() as u8);
    w.0.extend_from_slice(sm);
    w.done()
}

/// A request without a body (`enquire_link`, `unbind`).
pub fn request(id: u32, seq: u32) -> Vec<u8> {
    Writer::new(id, 0, seq).done()
}

/// A response without a body other than `message_id` (`deliver_sm_resp` carries an
/// empty one) or without one at all (`enquire_link_resp`, `unbind_resp`,
/// `generic_nack`).
pub fn response(request_id: u32, status: u32, seq: u32) -> Vec<u8> {
    let w = Writer::new(request_id | RESP, status, seq);
    if request_id == DELIVER_SM {
        w.cstr("").done()
    } else {
        w.done()
    }
}

/// A receipt's final state, from its `message_state` TLV or its text's `stat:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptState {
    /// `DELIVRD`.
    Delivered,
    /// `EXPIRED`.
    Expired,
    /// `UNDELIV`.
    Undeliverable,
    /// `REJECTD`.
    Rejected,
    /// `DELETED`.
    Deleted,
    /// `ACCEPTD`, `UNKNOWN`, `ENROUTE`: not final for the bridge.
    Other,
}

impl ReceiptState {
    /// The SMPP name.
    pub fn name(self) -> &'static str {
        match self {
            ReceiptState::Delivered => "DELIVRD",
            ReceiptState::Expired => "EXPIRED",
            ReceiptState::Undeliverable => "UNDELIV",
            ReceiptState::Rejected => "REJECTD",
            ReceiptState::Deleted => "DELETED",
            ReceiptState::Other => "other",
        }
    }
}

/// The message id and final state of a delivery receipt: TLVs first (SMPP 3.4 §5.3.2),
/// then the text form `id:… stat:…` (Appendix B) that most SMSCs send as well.
pub fn receipt(d: &Deliver) -> Option<(String, ReceiptState)> {
    let text = String::from_utf8_lossy(&d.short_message);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    let id = d.receipted_message_id.clone().or_else(|| field("id:"))?;
    let state = match d.message_state {
        Some(2) => ReceiptState::Delivered,
        Some(3) => ReceiptState::Expired,
        Some(4) => ReceiptState::Deleted,
        Some(5) => ReceiptState::Undeliverable,
        Some(8) => ReceiptState::Rejected,
        Some(_) => ReceiptState::Other,
        None => match field("stat:").as_deref() {
            Some("DELIVRD") => ReceiptState::Delivered,
            Some("EXPIRED") => ReceiptState::Expired,
            Some("DELETED") => ReceiptState::Deleted,
            Some("UNDELIV") => ReceiptState::Undeliverable,
            Some("REJECTD") => ReceiptState::Rejected,
            _ => ReceiptState::Other,
        },
    };
    Some((id, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submit_is_laid_out_as_smpp_3_4_says() {
        let s = Submit {
            source_addr: "LONGPROTO".into(),
            source_ton: 5,
            source_npi: 0,
            destination_addr: "491701234567".into(),
            esm_class: 0x40,
            registered_delivery: 1,
            data_coding: 4,
            validity_period: String::new(),
            short_message: vec![0x06, 0x05, 0x04, 0xc3, 0x4f, 0xc3, 0x4f, 0x01],
        };
        let pdu = submit_sm(7, &s);
        let mut want = Vec::new();
        want.extend_from_slice(&(pdu.len() as u32).to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend_from_slice(b"\0\x05\x00LONGPROTO\0\x01\x01491701234567\0");
        want.extend_from_slice(&[0x40, 0, 0, 0, 0, 1, 0, 4, 0, 8]);
        want.extend_from_slice(&s.short_message);
        assert_eq!(pdu, want);
    }

    #[test]
    fn validity_is_relative_and_in_whole_seconds() {
        assert_eq!(relative_validity(300_000), "000000000500000R");
        assert_eq!(
            relative_validity(7 * 86_400_000 + 3_723_000),
            "000007010203000R"
        );
        assert_eq!(
            relative_validity(-5),
            "000000000001000R",
            "at least a second"
        );
        assert_eq!(relative_validity(i64::MAX).len(), 16);
    }

    #[test]
    fn a_receipt_is_read_from_its_tlvs_or_its_text() {
        let mut d = Deliver {
            esm_class: 0x04,
            short_message: b"id:abc12 sub:001 dlvrd:001 submit date:2612040610 done date:2612040610 stat:UNDELIV err:001 text:".to_vec(),
            ..Default::default()
        };
        assert!(d.is_receipt());
        assert_eq!(
            receipt(&d),
            Some(("abc12".into(), ReceiptState::Undeliverable))
        );
        d.receipted_message_id = Some("xyz".into());
        d.message_state = Some(2);
        assert_eq!(receipt(&d), Some(("xyz".into(), ReceiptState::Delivered)));
    }

    #[test]
    fn truncated_pdus_name_the_field() {
        let mut pdu = response(DELIVER_SM, 0, 1);
        pdu[7] = 0x05; // a deliver_sm with only an empty C-string
        pdu[4] = 0;
        assert_eq!(
            read(&pdu).unwrap().1,
            Body::Malformed(PduError::Truncated {
                pdu: "deliver_sm",
                field: "source_addr_ton"
            })
        );
        assert_eq!(pdu_len(&[0, 0, 0, 3]), Some(Err(PduError::BadLength(3))));
        assert_eq!(
            pdu_len(&[0, 0, 0x10, 1]),
            Some(Err(PduError::BadLength(4097)))
        );
        assert_eq!(pdu_len(&[0, 0]), None);
    }
}
