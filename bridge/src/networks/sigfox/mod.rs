//! The Sigfox adapter: DATA callbacks (UPLINK and BIDIR) and SERVICE ACKNOWLEDGE. A
//! BIDIR callback with `ack` true is the device's receive window: the reply carries one
//! 8-byte command frame, or there is none. The HTTP routes that carry the callbacks are
//! `http::sigfox`; this module knows nothing of HTTP.
pub mod callback;

use crate::commands::model::CommandState;
use crate::commands::store::Quotas;
use crate::commands::{Commands, ReceiveWindow};
use crate::device::{DeviceId, Network};
use crate::pipeline::{Pipeline, lock};
use crate::secret::constant_time_eq;
pub use callback::{CallbackError, read_uplink_callback};
use callback::{boolean, number, parse_fields, required, text, uplink_of};
use gateway_config::SigfoxSettings;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How long a callback without `time` counts as a copy of one with the same seqNumber:
/// Sigfox retries a callback after 1, 2 and 4 minutes; the 12-bit counter takes days to
/// wrap (at most 140 messages a day).
const UNTIMED_COPY_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

const DAY_MS: i64 = 86_400_000;

/// A callback as [`SigfoxAdapter::dedup_key`] remembers it: when, its dedup key, and
/// whether it carried a `time`.
type SeenCallback = (Instant, String, bool);

/// Reads Sigfox callbacks into the pipeline and fills BIDIR receive windows, within each
/// device's daily downlink quota.
pub struct SigfoxAdapter {
    /// The callback secret; empty refuses every callback.
    secret: String,
    /// Downlinks a device may take per day.
    daily_downlinks: u8,
    pipeline: Arc<Pipeline>,
    commands: Arc<Commands>,
    quotas: Arc<dyn Quotas>,
    /// (device, day) pairs whose quota refusal is already in the commands' history.
    quota_noted: Mutex<HashSet<(DeviceId, i64)>>,
    /// The last callbacks by (device, seqNumber): when, its dedup key, and whether it
    /// carried a `time`; kept for [`UNTIMED_COPY_WINDOW`].
    recent_seq: Mutex<HashMap<(DeviceId, u16), SeenCallback>>,
}

/// What a BIDIR callback's reply carries: the device id as the callback wrote it (the
/// reply's key) and the downlink.
#[derive(Debug, Clone, PartialEq)]
pub struct BidirReply {
    /// The device id exactly as the callback wrote it.
    pub device_as_written: String,
    /// The 8-byte downlink.
    pub payload: Vec<u8>,
}

impl BidirReply {
    /// The reply body Sigfox expects: `{"<device>": {"downlinkData": "<hex>"}}`.
    pub fn to_json(&self) -> Value {
        let mut reply = Map::new();
        reply.insert(
            self.device_as_written.clone(),
            json!({"downlinkData": hex::encode(&self.payload)}),
        );
        Value::Object(reply)
    }
}

impl SigfoxAdapter {
    /// The adapter for `[sigfox]`.
    pub fn new(
        settings: &SigfoxSettings,
        pipeline: Arc<Pipeline>,
        commands: Arc<Commands>,
        quotas: Arc<dyn Quotas>,
    ) -> Self {
        SigfoxAdapter {
            secret: settings.secret.clone(),
            daily_downlinks: settings.daily_downlinks,
            pipeline,
            commands,
            quotas,
            quota_noted: Mutex::new(HashSet::new()),
            recent_seq: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a callback carries the configured secret (never when none is set).
    pub fn authorized(&self, given: Option<&str>) -> bool {
        !self.secret.is_empty()
            && given.is_some_and(|g| constant_time_eq(g.as_bytes(), self.secret.as_bytes()))
    }

    /// A DATA callback (after authentication): the uplink goes through the pipeline, and
    /// a BIDIR callback's window takes a command if one is queued and the day's quota
    /// allows. `None`: nothing to send (or a retry of a callback already read).
    pub async fn data(
        &self,
        body: &[u8],
        form: bool,
        received: Instant,
    ) -> Result<Option<BidirReply>, CallbackError> {
        let m = parse_fields(body, form)?;
        let callback = uplink_of(&m, received)?;
        let (mut up, device_as_written, ack) =
            (callback.up, callback.device_as_written, callback.ack);
        let device = up.device.clone();
        if let Some(seq) = callback.seq {
            let own = up.dedup_key.take();
            up.dedup_key = self.dedup_key(&device, seq, callback.has_time, own, received);
        }
        let Some(ingested) = self.pipeline.ingest(up).await else {
            return Ok(None); // a retry: published once, no second command
        };
        let c = &self.commands;
        let plan = if ack && c.has_queued(&device) {
            let day = c.now().div_euclid(DAY_MS);
            if self.take_quota(&device, day).await {
                let window = Some(ReceiveWindow { frames: 1 });
                let plan = c.after_uplink(&device, &ingested.acks, window).await;
                if plan.is_none() {
                    let _ = self.quotas.return_daily_quota(&device, day).await;
                }
                plan
            } else {
                self.pipeline.metrics().sigfox_quota_exhausted.inc();
                self.note_quota(&device, day).await;
                c.after_uplink(&device, &ingested.acks, None).await
            }
        } else {
            c.after_uplink(&device, &ingested.acks, None).await
        };
        Ok(plan.map(|plan| BidirReply {
            device_as_written: device_as_written.to_owned(),
            payload: plan.payload,
        }))
    }

    /// A SERVICE ACKNOWLEDGE callback (after authentication) for the device's last
    /// downlink: delivered, lost (back to the queue while retrying can help), or failed.
    pub async fn acknowledge(&self, body: &[u8], form: bool) -> Result<(), CallbackError> {
        let m = parse_fields(body, form)?;
        let device_text = required(&m.device, "device")?;
        let device = DeviceId::new(Network::Sigfox, device_text)
            .map_err(|e| CallbackError::BadField(format!("device: {e}")))?;
        let code: u32 =
            number(&m.info_code, "infoCode")?.ok_or(CallbackError::Missing("infoCode"))?;
        let acked = boolean(&m.downlink_ack, "downlinkAck")?;
        let message = text(&m.info_message).unwrap_or_default();
        let Some(downlink) = self.last_downlink(&device).await else {
            tracing::info!(device = %device, code, "ACKNOWLEDGE for a device with no downlink in flight");
            return Ok(());
        };
        let (name, retry) = info_code(code);
        let reason = format!("sigfox: {name}: {message}");
        let c = &self.commands;
        if code == 0 && acked {
            c.network_ack(&device, &downlink, true).await;
        } else if retry {
            c.network_not_delivered(&device, &downlink, &reason).await;
        } else {
            c.network_dropped(&device, &downlink, CommandState::Failed, &reason)
                .await;
        }
        Ok(())
    }

    /// The dedup key of a callback: its own (`seqNumber|time`), unless a callback with
    /// the same seqNumber arrived within [`UNTIMED_COPY_WINDOW`] and one of the two has no
    /// `time`: then it is a copy, and takes that one's key (a template that leaves `time`
    /// out on a retry must not take a second command). Two callbacks that both carry a
    /// time differ when their times do: the counter wrapped.
    fn dedup_key(
        &self,
        device: &DeviceId,
        seq: u16,
        has_time: bool,
        own: Option<String>,
        now: Instant,
    ) -> Option<String> {
        let own = own?;
        let mut recent = lock(&self.recent_seq);
        if recent.len() > 10_000 {
            recent.retain(|_, (at, _, _)| now.duration_since(*at) < UNTIMED_COPY_WINDOW);
        }
        let key = (device.clone(), seq);
        if let Some((at, earlier, earlier_has_time)) = recent.get(&key) {
            if now.duration_since(*at) < UNTIMED_COPY_WINDOW && !(has_time && *earlier_has_time) {
                return Some(earlier.clone());
            }
        }
        recent.insert(key, (now, own.clone(), has_time));
        Some(own)
    }

    async fn take_quota(&self, device: &DeviceId, day: i64) -> bool {
        let limit = self.daily_downlinks as u32;
        match self.quotas.take_daily_quota(device, day, limit).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(device = %device, error = %e, "store failed taking the daily downlink quota");
                false
            }
        }
    }

    /// Writes "daily quota used up" into the history of the device's queued commands,
    /// once a day.
    async fn note_quota(&self, device: &DeviceId, day: i64) {
        {
            let mut noted = lock(&self.quota_noted);
            noted.retain(|(_, d)| *d >= day); // only today's notes matter
            if !noted.insert((device.clone(), day)) {
                return;
            }
        }
        let reason = format!(
            "waiting: the daily downlink quota ({}) is used up",
            self.daily_downlinks
        );
        let c = &self.commands;
        if let Ok(queued) = c.list(device, Some(CommandState::Queued), 1000).await {
            for cmd in queued {
                c.transition(
                    &cmd.id,
                    &[CommandState::Queued],
                    CommandState::Queued,
                    Some(&reason),
                )
                .await;
            }
        }
    }

    /// The downlink id of the device's newest command with the network (the queue's
    /// `list` waits for the windows already taken to reach the store).
    async fn last_downlink(&self, device: &DeviceId) -> Option<String> {
        let newest = self
            .commands
            .list(device, Some(CommandState::Scheduled), 1)
            .await
            .ok()?;
        newest.into_iter().next()?.network_ref
    }
}

/// Sigfox ACKNOWLEDGE info codes: name, and whether retrying can help.
fn info_code(code: u32) -> (&'static str, bool) {
    match code {
        0 => ("ACKED", true),
        1 => ("NO_ANSWER", true),
        2 => ("INVALID_PAYLOAD", false),
        3 => ("OVERRUN_ERROR", true),
        4 => ("NETWORK_ERROR", true),
        5 => ("PENDING", true),
        6 => ("NO_DOWNLINK_CONTRACT", false),
        7 => ("TOO_MANY_REQUESTS", true),
        8 => ("INVALID_CONFIGURATION", false),
        _ => ("UNKNOWN", true),
    }
}
