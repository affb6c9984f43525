//! Vehicles with a number: each one's handset at the test SMSC ([`crate::smsc`]) reads
//! the bridge's binary SMS with the device side of `device_node::sms`, hands the frames
//! to the node, and, when the vehicle has no data session, answers by SMS with the
//! node's acknowledgements (a vehicle with one answers with its next poll).
use super::{Fleet, now_ms};
use crate::smsc::Smsc;
use device_node::sms::{Mt, PAYLOAD_MAX, parse_mt, split_user_data, udh};
use std::sync::Arc;

/// A simulated vehicle's number: `4917` and eight digits from its id.
pub fn number_of(id: &str) -> String {
    let n =
        u64::from_str_radix(id.get(id.len().saturating_sub(12)..).unwrap_or(id), 16).unwrap_or(0);
    format!("4917{:08}", n % 100_000_000)
}

/// The bridge's `[cellular] keys_file` for these vehicles, each with its number.
pub fn keys_file(seed: u64, ids: &[&str]) -> String {
    let mut out =
        String::from("# longproto-fleet's simulated cellular vehicles, with their numbers\n");
    for id in ids {
        let key = hex::encode(crate::cellular::key_of(seed, id));
        out += &format!("{id} {key} {}\n", number_of(id));
    }
    out
}

/// Runs one vehicle's handset until the task is aborted.
pub async fn run(fleet: Arc<Fleet>, id: String, number: String, smsc: Arc<Smsc>) {
    let mut inbox = smsc.handset(&number);
    while let Some(ud) = inbox.recv().await {
        let Some(reply) = fleet.with(&id, |d, stats| {
            stats.sms_received += 1;
            let client = d.cellular.as_mut()?;
            let key = client.key().clone();
            let (ports, payload) = split_user_data(&ud).ok()?;
            let Ok(Mt::Frames(sealed)) = parse_mt(&key, client.id(), payload) else {
                return None;
            };
            let now = now_ms();
            let mut vehicle = d.vehicle.clone();
            let a = client.answer(sealed, &mut d.node, now, &mut vehicle);
            stats.executed += (vehicle.executed - d.vehicle.executed) as u64;
            d.vehicle = vehicle;
            stats.frames += a.frames as u64;
            stats.refused_frames += a.refused as u64;
            if d.data_session {
                return None;
            }
            let mut records = [0u8; 120];
            let n = d.node.build_uplink(None, now, &mut records, 120);
            let client = d.cellular.as_mut()?;
            let mut out = udh(ports.src, ports.dest).to_vec();
            let mut body = [0u8; PAYLOAD_MAX];
            let len = client.sms_body(&records[..n], &mut body).ok()?;
            out.extend_from_slice(&body[..len]);
            stats.sms_sent += 1;
            Some(out)
        }) else {
            return;
        };
        if let Some(reply) = reply {
            smsc.mobile_originated(&number, &reply);
        }
    }
}
