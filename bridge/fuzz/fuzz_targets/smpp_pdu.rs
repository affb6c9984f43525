//! PDUs from the SMSC (or whoever answers on its address): never a panic; a length the
//! reader takes is within its limits, and a whole PDU reads the same with more bytes in
//! the buffer behind it. A receipt's id and state come out of any deliver_sm without a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use longproto_bridge::networks::sms::pdu::{self, Body};

fuzz_target!(|data: &[u8]| {
    if let Some(Ok(len)) = pdu::pdu_len(data) {
        assert!((16..=pdu::MAX_PDU_LEN).contains(&len));
        if data.len() >= len {
            let read = pdu::read(&data[..len]).expect("a whole PDU of a good length reads");
            if let Body::Deliver(d) = &read.1 {
                let _ = pdu::receipt(d);
                assert!(d.short_message.len() <= len);
            }
        }
    }
});
