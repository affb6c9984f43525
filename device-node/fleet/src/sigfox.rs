//! Sigfox devices as the Sigfox backend presents them: each uplink a DATA callback with
//! `ack: true` (BIDIR), the reply's 8-byte `downlinkData` handed to the node, and the
//! SERVICE ACKNOWLEDGE callback that follows a delivered downlink.
use super::{Fleet, lock, post};
use serde_json::json;
use std::sync::Arc;

/// One Sigfox uplink (12 bytes at most: a status, or the waiting acknowledgements).
pub(super) async fn uplink(fleet: &Arc<Fleet>, id: &str, now: u64) {
    let Some(http) = fleet.targets.http else {
        return;
    };
    let Some((data, seq)) = fleet.with(id, |d, stats| {
        let mut buf = [0u8; 12];
        let status = (d.node.pending_acks() == 0).then(|| d.vehicle.status());
        let n = d.node.build_uplink(status, now, &mut buf, 12);
        d.f_cnt = (d.f_cnt + 1) % 4096;
        stats.sigfox_uplinks += 1;
        (hex::encode(&buf[..n]), d.f_cnt)
    }) else {
        return;
    };
    let device = id.to_uppercase();
    let auth = format!("Bearer {}", fleet.targets.sigfox_secret);
    // as a Sigfox callback template writes them: numbers as strings are common
    let body = json!({"device": device, "deviceTypeId": "5f1a0a7e2e2b3c0011d1e2f3", "time": now / 1000,
        "data": data, "seqNumber": seq, "ack": true, "station": "4E2F", "rssi": "-118.00",
        "snr": "9.50", "avgSnr": "11.20", "lat": "39.0", "lng": "-9.0"});
    let reply = match post(http, "/v1/sigfox/uplink", &auth, &body).await {
        Ok((200, reply)) => reply,
        Ok((204, _)) => return,
        _ => {
            lock(&fleet.stats).errors += 1;
            return;
        }
    };
    let Some(Ok(frame)) = reply[&device]["downlinkData"].as_str().map(hex::decode) else {
        lock(&fleet.stats).errors += 1;
        return;
    };
    fleet.with(id, |d, stats| d.receive(&frame, now, stats));
    let ack = json!({"device": device, "time": now / 1000 + 20, "infoCode": 0,
        "infoMessage": "Acked", "downlinkAck": true, "downlinkOverusage": false});
    if !matches!(
        post(http, "/v1/sigfox/ack", &auth, &ack).await,
        Ok((200..=299, _))
    ) {
        lock(&fleet.stats).errors += 1;
    }
}
