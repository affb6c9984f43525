//! The SMS adapter: binary SMS over SMPP 3.4, beside the cellular long poll. A device is
//! one cellular device with a number (its line in `cellular.keys_file`); it has one
//! command queue and one counter whichever bearer reaches it.
//!
//! - **Fallback.** A command not delivered within `sms_after_s` of its creation is sent
//!   by SMS too ([`SmsAdapter::fallback`]): queued commands are taken from the queue as
//!   a receive window of 11 sealed frames (one SMS, coalesced); commands already on
//!   their way over cellular but not acknowledged go as copies with their own
//!   counters. Whichever copy reaches the device first executes; the node's replay
//!   window refuses the other. A device set to `wake` gets a wake-up instead, and polls.
//! - **States.** `submit_sm_resp` → `sent` ("by SMS, message …"); a delivery receipt
//!   `DELIVRD` → `delivered`; `EXPIRED`, `UNDELIV`, `REJECTD`, `DELETED`, a refused or
//!   unanswered submit, or no receipt within `receipt_timeout_s` → back to `queued`
//!   with the same counter (or `failed` once the attempts are used up).
//! - **Uplinks.** A message from a device's number is a request
//!   ([`device_node::sms`]): its records (acks above all) go through the one pipeline.
//!   An unknown number, a bad MAC or a replayed counter is counted and dropped.
//! - **Cost.** A daily cap per device and one in all; a command held back says so in its
//!   history.
pub mod pdu;
pub mod session;

use crate::commands::model::{Command, CommandState};
use crate::commands::store::{Quotas, RequestCounters, StoreError};
use crate::commands::{Commands, DownlinkPlan, ReceiveWindow};
use crate::device::{DeviceId, Network};
use crate::metrics::Metrics;
use crate::networks::cellular::{DeviceKeys, request_uplink};
use crate::pipeline::{Pipeline, lock};
use anyhow::Context;
use device_node::FRAME_LEN;
use device_node::cellular::PollError;
use device_node::seal::{DeviceKey, SEALED_FRAME_LEN, seal_frame};
use device_node::sms::{self as wire, MAX_FRAMES, open_mo, split_user_data, udh, wake_payload};
use gateway_config::SmsSettings;
use pdu::{Deliver, ReceiptState, Submit};
use session::{SessionSettings, Smpp, SubmitOutcome};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The store's facts the adapter needs: request counters and daily caps.
pub trait SmsStore: RequestCounters + Quotas {}
impl<T: RequestCounters + Quotas> SmsStore for T {}

/// A message the SMSC accepted, until its receipt.
#[derive(Debug, Clone)]
struct Submitted {
    device: DeviceId,
    /// The window it carried (commands taken from the queue), if any.
    downlink: Option<String>,
    /// Commands it carried as copies (on their way over cellular too).
    copies: Vec<String>,
    at: i64,
}

/// Reads the SMSC's messages into the pipeline and sends commands by SMS.
pub struct SmsAdapter {
    keys: Arc<DeviceKeys>,
    smpp: Arc<Smpp>,
    commands: Arc<Commands>,
    pipeline: Arc<Pipeline>,
    store: Arc<dyn SmsStore>,
    metrics: Arc<Metrics>,
    port: u16,
    source_addr: String,
    source_ton: u8,
    sms_after_ms: i64,
    receipt_timeout_ms: i64,
    daily_per_device: u32,
    daily_total: u32,
    submitted: std::sync::Mutex<HashMap<String, Submitted>>,
    /// When each command last went by SMS (or was held back by a cap).
    last_sms: std::sync::Mutex<HashMap<String, i64>>,
    /// Devices with a submit awaiting its response.
    busy: std::sync::Mutex<HashSet<DeviceId>>,
    /// Downlinks (`network_ref`) not to send by SMS again: those an SMS carries, and the
    /// cellular answers already copied into one.
    by_sms: std::sync::Mutex<HashSet<String>>,
    /// Told each time a message is recorded in `submitted`.
    recorded: tokio::sync::Notify,
}

const DAY_MS: i64 = 86_400_000;
/// The store's name of the daily cap of every SMS together.
const SMS_QUOTA: &str = "sms";

/// The TLS client configuration for smpps://: `sms.ca_cert` (PEM) or the system's roots.
fn tls_config(ca: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = crate::mqtt::trusted_roots("sms", "smpps", ca)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The session settings of `[sms]`.
pub fn session_settings(s: &SmsSettings) -> anyhow::Result<SessionSettings> {
    let (tls, rest) = match s.server.split_once("://") {
        Some(("smpp", rest)) => (None, rest),
        Some(("smpps", rest)) => (Some(tls_config(&s.ca_cert)?), rest),
        _ => anyhow::bail!(
            "sms.server: \"{}\" is not smpp://host:port or smpps://host:port",
            s.server
        ),
    };
    let (host, port) = rest
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)))
        .with_context(|| format!("sms.server: \"{}\" has no host:port", s.server))?;
    let password = if s.password_file.is_empty() {
        s.password.clone()
    } else {
        std::fs::read_to_string(&s.password_file)
            .with_context(|| format!("sms.password_file: cannot read \"{}\"", s.password_file))?
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    };
    Ok(SessionSettings {
        host,
        port,
        tls,
        system_id: s.system_id.clone(),
        password,
        system_type: s.system_type.clone(),
        window: s.window.max(1) as usize,
        submits_per_s: s.submits_per_s.max(1),
        enquire_link: Duration::from_secs(s.enquire_link_s.max(1) as u64),
        response_timeout: Duration::from_secs(s.response_timeout_s.max(1) as u64),
    })
}

impl SmsAdapter {
    /// Binds to the SMSC of `[sms]` and runs the adapter's tasks on `jobs` until `stop`;
    /// `keys` are the cellular devices' (their numbers among them).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: &SmsSettings,
        keys: Arc<DeviceKeys>,
        pipeline: Arc<Pipeline>,
        commands: Arc<Commands>,
        store: Arc<dyn SmsStore>,
        metrics: Arc<Metrics>,
        jobs: &TaskTracker,
        stop: &CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let session = session_settings(settings)?;
        let (smpp, mut inbound) = Smpp::start(session, metrics.clone(), jobs, stop);
        let adapter = Arc::new(SmsAdapter {
            keys,
            smpp,
            commands,
            pipeline,
            store,
            metrics,
            port: settings.port,
            source_addr: settings.source_addr.clone(),
            source_ton: settings.source_ton,
            sms_after_ms: settings.sms_after_s as i64 * 1000,
            receipt_timeout_ms: settings.receipt_timeout_s as i64 * 1000,
            daily_per_device: settings.daily_per_device,
            daily_total: settings.daily_total,
            submitted: Default::default(),
            last_sms: Default::default(),
            busy: Default::default(),
            by_sms: Default::default(),
            recorded: Default::default(),
        });
        jobs.spawn({
            let a = adapter.clone();
            stop.clone().run_until_cancelled_owned(async move {
                while let Some(msg) = inbound.recv().await {
                    if msg.deliver.is_receipt() {
                        // its submit's response may still be on its way to the adapter:
                        // a receipt waits for it apart, the devices' requests keep order
                        let a = a.clone();
                        tokio::spawn(async move {
                            a.receipt(&msg.deliver).await;
                            msg.answer(pdu::ROK);
                        });
                        continue;
                    }
                    let status = a.received(&msg.deliver).await;
                    msg.answer(status);
                }
            })
        });
        jobs.spawn({
            let a = adapter.clone();
            stop.clone().run_until_cancelled_owned(async move {
                // four times a second: a command goes by SMS at most 250 ms after
                // sms_after_s
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut ticks = 0u64;
                loop {
                    tick.tick().await;
                    if a.smpp.bound() {
                        a.fallback().await;
                    }
                    ticks += 1;
                    if ticks % 4 == 0 {
                        a.receipt_timeouts().await;
                    }
                }
            })
        });
        tracing::info!(server = settings.server, "SMS adapter started");
        Ok(adapter)
    }

    /// Whether the bind to the SMSC is up.
    pub fn bound(&self) -> bool {
        self.smpp.bound()
    }

    /// Sends by SMS what waited `sms_after_s` for the cellular long poll.
    pub async fn fallback(self: &Arc<Self>) {
        let now = self.commands.now();
        let waiting = self
            .commands
            .undelivered_before(Network::Cellular, now - self.sms_after_ms)
            .await;
        let mut by_device: Vec<(DeviceId, Vec<Command>)> = Vec::new();
        {
            let last = lock(&self.last_sms);
            let busy = lock(&self.busy);
            let mut by_sms = lock(&self.by_sms);
            // forget downlinks whose commands were delivered or went back to the queue
            let seen: HashSet<&str> = waiting
                .iter()
                .filter_map(|c| c.network_ref.as_deref())
                .collect();
            by_sms.retain(|r| seen.contains(r.as_str()));
            for cmd in waiting {
                let skip = busy.contains(&cmd.device)
                    || last
                        .get(&cmd.id)
                        .is_some_and(|t| now - t < self.sms_after_ms)
                    || cmd.network_ref.as_ref().is_some_and(|r| by_sms.contains(r));
                if skip {
                    continue;
                }
                match by_device.iter_mut().find(|(d, _)| *d == cmd.device) {
                    Some((_, cmds)) => cmds.push(cmd),
                    None => by_device.push((cmd.device.clone(), vec![cmd])),
                }
            }
        }
        for (device, cmds) in by_device {
            let Some((key, contact)) = self.keys.sms_of(&device) else {
                continue;
            };
            {
                let mut last = lock(&self.last_sms);
                for c in &cmds {
                    last.insert(c.id.clone(), now);
                }
            }
            if !self.take_caps(&device, &cmds).await {
                continue;
            }
            lock(&self.busy).insert(device.clone());
            let a = self.clone();
            tokio::spawn(async move {
                a.send(&device, &key, &contact.number, contact.wake, cmds)
                    .await;
                lock(&a.busy).remove(&device);
            });
        }
        // forget commands no longer waiting
        let cutoff = now - 2 * self.sms_after_ms.max(60_000);
        lock(&self.last_sms).retain(|_, t| *t > cutoff);
    }

    /// Takes one SMS from the global and the device's daily caps (both kept in the
    /// store, so that a restart resets neither); false (noted in the commands'
    /// histories) when either is used up.
    async fn take_caps(&self, device: &DeviceId, cmds: &[Command]) -> bool {
        let day = self.commands.now().div_euclid(DAY_MS);
        let failed = |e: StoreError| {
            tracing::error!(device = %device, error = %e, "store failed counting an SMS; none sent");
            false
        };
        let (cap, why) = match self
            .store
            .take_shared_quota(SMS_QUOTA, day, self.daily_total)
            .await
        {
            Err(e) => return failed(e),
            Ok(false) => (
                "total",
                format!(
                    "SMS held back: the daily cap of {} SMS in all is reached",
                    self.daily_total
                ),
            ),
            Ok(true) => match self
                .store
                .take_daily_quota(device, day, self.daily_per_device)
                .await
            {
                Ok(true) => return true,
                other => {
                    let _ = self.store.return_shared_quota(SMS_QUOTA, day).await;
                    match other {
                        Err(e) => return failed(e),
                        _ => (
                            "device",
                            format!(
                                "SMS held back: the device's daily cap of {} SMS is reached",
                                self.daily_per_device
                            ),
                        ),
                    }
                }
            },
        };
        Metrics::sms(&self.metrics.sms_capped, cap);
        tracing::warn!(device = %device, cap, "SMS held back by a daily cap");
        for c in cmds {
            self.commands.note(&c.id, c.state, &why).await;
        }
        false
    }

    /// One SMS to the device: its queued commands as a window, copies of those on their
    /// way over cellular, or a wake-up.
    async fn send(
        &self,
        device: &DeviceId,
        key: &DeviceKey,
        number: &str,
        wake: bool,
        cmds: Vec<Command>,
    ) {
        let id = device.id.as_bytes();
        let mut payload = Vec::with_capacity(wire::PAYLOAD_MAX);
        let mut plan: Option<DownlinkPlan> = None;
        let mut copies: Vec<Command> = Vec::new();
        if wake {
            let at_s = (self.commands.now() / 1000).clamp(0, u32::MAX as i64) as u32;
            payload.extend_from_slice(&wake_payload(key, id, at_s));
            copies = cmds;
        } else {
            let mut sealed = Vec::with_capacity(MAX_FRAMES * SEALED_FRAME_LEN);
            if cmds.iter().any(|c| c.state == CommandState::Queued) {
                plan = self
                    .commands
                    .fill_window(device, ReceiveWindow { frames: MAX_FRAMES })
                    .await;
            }
            let taken: &[String] = plan.as_ref().map_or(&[], |p| &p.commands);
            if let Some(p) = &plan {
                lock(&self.by_sms).insert(p.id.clone());
                for frame in p.payload.chunks_exact(FRAME_LEN) {
                    let frame: &[u8; FRAME_LEN] = frame.try_into().expect("chunks of FRAME_LEN");
                    sealed.extend_from_slice(&seal_frame(key, id, frame));
                }
            }
            for c in cmds {
                if sealed.len() / SEALED_FRAME_LEN >= MAX_FRAMES {
                    break;
                }
                if taken.contains(&c.id) || c.state == CommandState::Queued {
                    continue;
                }
                let Ok(frame) = c.frame().encode() else {
                    continue;
                };
                sealed.extend_from_slice(&seal_frame(key, id, &frame));
                // one copy per cellular answer
                if let Some(r) = &c.network_ref {
                    lock(&self.by_sms).insert(r.clone());
                }
                copies.push(c);
            }
            if sealed.is_empty() {
                self.give_back(device).await;
                return;
            }
            payload.push(wire::MT_FRAMES);
            payload.extend_from_slice(&sealed);
        }
        // the message must not reach the vehicle after its commands expired: a frame
        // with a new counter would still execute, hours later, on a phone switched back on
        let expires_at = plan
            .iter()
            .map(|p| p.expires_at)
            .chain(copies.iter().map(|c| c.expires_at))
            .min()
            .unwrap_or_else(|| self.commands.now() + 60_000);
        let mut user_data = udh(self.port, self.port).to_vec();
        user_data.extend_from_slice(&payload);
        let submit = Submit {
            source_addr: self.source_addr.clone(),
            source_ton: self.source_ton,
            source_npi: if self.source_ton == 5 { 0 } else { 1 },
            destination_addr: number.to_owned(),
            esm_class: wire::ESM_UDHI,
            registered_delivery: 0x01,
            data_coding: wire::DATA_CODING_8BIT,
            validity_period: pdu::relative_validity(expires_at - self.commands.now()),
            short_message: user_data,
        };
        let kind = if wake { "wake" } else { "frames" };
        let outcome = self.smpp.submit(submit).await;
        let taken: Vec<String> = plan.as_ref().map_or_else(Vec::new, |p| p.commands.clone());
        match outcome {
            SubmitOutcome::Accepted(message_id) => {
                Metrics::sms(&self.metrics.sms_sent, kind);
                tracing::info!(device = %device, message_id, kind, commands = taken.len() + copies.len(), "SMS accepted by the SMSC");
                for c in &taken {
                    let why = format!("by SMS, message {message_id}");
                    self.commands
                        .transition(
                            c,
                            &[CommandState::Scheduled],
                            CommandState::Sent,
                            Some(&why),
                        )
                        .await;
                }
                let copy_note = if wake {
                    format!("wake-up SMS sent, message {message_id}: the device polls at once")
                } else {
                    format!("also sent by SMS, message {message_id}, with the same counter")
                };
                for c in &copies {
                    self.commands.note(&c.id, c.state, &copy_note).await;
                }
                if !wake {
                    lock(&self.submitted).insert(
                        message_id,
                        Submitted {
                            device: device.clone(),
                            downlink: plan.map(|p| p.id),
                            copies: copies.into_iter().map(|c| c.id).collect(),
                            at: self.commands.now(),
                        },
                    );
                    self.recorded.notify_waiters();
                }
            }
            SubmitOutcome::Refused(status) => {
                self.give_back(device).await;
                let why = format!(
                    "the SMSC refused the SMS: {status:#010x} {}",
                    pdu::status_name(status)
                );
                tracing::warn!(device = %device, reason = why, "SMS refused");
                if let Some(p) = plan {
                    self.commands
                        .network_not_delivered(device, &p.id, &why)
                        .await;
                }
            }
            SubmitOutcome::Lost(why) => {
                let why = format!(
                    "SMS submit unanswered ({why}): it may have gone out; it goes again with the same counter"
                );
                tracing::warn!(device = %device, reason = why, "SMS submit lost");
                if let Some(p) = plan {
                    self.commands
                        .network_not_delivered(device, &p.id, &why)
                        .await;
                }
            }
        }
    }

    /// Gives back the SMS taken from the caps for a message that did not go out.
    async fn give_back(&self, device: &DeviceId) {
        let day = self.commands.now().div_euclid(DAY_MS);
        if let Err(e) = self.store.return_shared_quota(SMS_QUOTA, day).await {
            tracing::warn!(error = %e, "store failed giving back an SMS of the daily cap in all");
        }
        if let Err(e) = self.store.return_daily_quota(device, day).await {
            tracing::warn!(device = %device, error = %e, "store failed giving back an SMS of the daily cap");
        }
    }

    /// A device's message (receipts go to [`Self::receipt`]); returns the
    /// `deliver_sm_resp` status.
    async fn received(&self, d: &Deliver) -> u32 {
        let dropped = |outcome: &'static str| {
            Metrics::sms(&self.metrics.sms_received, outcome);
            pdu::ROK
        };
        let Some((device, key)) = self.keys.by_number(&d.source_addr) else {
            tracing::warn!(number = %crate::device::excerpt(&d.source_addr), "SMS from a number no device has: dropped");
            return dropped("unknown_number");
        };
        let payload = match split_user_data(&d.short_message) {
            Ok((ports, payload)) if ports.dest == self.port => payload,
            Ok((ports, _)) => {
                tracing::warn!(device = %device, port = ports.dest, "SMS to another application port: dropped");
                return dropped("malformed");
            }
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "SMS from a device is not binary user data with ports: dropped");
                return dropped("malformed");
            }
        };
        let request = match open_mo(&key, device.id.as_bytes(), payload) {
            Ok(r) => r,
            Err(PollError::BadMac) => {
                tracing::warn!(device = %device, "SMS with a bad MAC: dropped");
                return dropped("bad_mac");
            }
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "SMS request unreadable: dropped");
                return dropped("malformed");
            }
        };
        match self
            .store
            .advance_sms_counter(&device, request.counter)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(device = %device, counter = request.counter, "SMS request with a counter already used: dropped as a replay");
                return dropped("replayed");
            }
            // the SMSC delivers it again later
            Err(e) => {
                tracing::error!(device = %device, error = %e, "store failed checking an SMS counter");
                return pdu::RX_T_APPN;
            }
        }
        Metrics::sms(&self.metrics.sms_received, "request");
        let meta = serde_json::json!({"bearer": "sms", "request_counter": request.counter});
        let dedup_key = format!("sms-{}", request.counter);
        request_uplink(
            &self.pipeline,
            &self.commands,
            &device,
            request.records,
            Instant::now(),
            dedup_key,
            meta,
        )
        .await;
        pdu::ROK
    }

    async fn receipt(&self, d: &Deliver) {
        let Some((message_id, state)) = pdu::receipt(d) else {
            Metrics::sms(&self.metrics.sms_received, "malformed");
            return;
        };
        if state == ReceiptState::Other {
            return;
        }
        let mut found = None;
        for _ in 0..100 {
            let recorded = self.recorded.notified();
            if let Some(sub) = lock(&self.submitted).remove(&message_id) {
                found = Some(sub);
                break;
            }
            if tokio::time::timeout(Duration::from_millis(20), recorded)
                .await
                .is_err()
                && lock(&self.busy).is_empty()
            {
                break;
            }
        }
        let Some(sub) = found else {
            Metrics::sms(&self.metrics.sms_received, "unmatched_receipt");
            tracing::debug!(
                message_id,
                "receipt of a message this bridge is not waiting for"
            );
            return;
        };
        Metrics::sms(&self.metrics.sms_received, "receipt");
        if state != ReceiptState::Delivered {
            tracing::warn!(device = %sub.device, message_id, state = state.name(), "SMS not delivered");
            if let Some(downlink) = &sub.downlink {
                let why = format!(
                    "SMS {} (delivery receipt of message {message_id})",
                    state.name()
                );
                self.commands
                    .network_not_delivered(&sub.device, downlink, &why)
                    .await;
            }
            return;
        }
        let mut ids = sub.copies.clone();
        if let Some(downlink) = &sub.downlink {
            ids.extend(
                self.commands
                    .commands_of(&sub.device, downlink)
                    .await
                    .into_iter()
                    .map(|c| c.id),
            );
        }
        let why = format!("SMS delivered (receipt of message {message_id})");
        for id in ids {
            self.commands
                .transition(
                    &id,
                    &[CommandState::Scheduled, CommandState::Sent],
                    CommandState::Delivered,
                    Some(&why),
                )
                .await;
        }
    }

    /// Messages without a receipt in time: their windows go back to the queue.
    async fn receipt_timeouts(&self) {
        let now = self.commands.now();
        let late: Vec<(String, Submitted)> = {
            let mut submitted = lock(&self.submitted);
            let ids: Vec<String> = submitted
                .iter()
                .filter(|(_, s)| now - s.at >= self.receipt_timeout_ms)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| submitted.remove(&id).map(|s| (id, s)))
                .collect()
        };
        for (message_id, sub) in late {
            if let Some(downlink) = &sub.downlink {
                let why = format!(
                    "no delivery receipt of SMS message {message_id} within {} s",
                    self.receipt_timeout_ms / 1000
                );
                self.commands
                    .network_not_delivered(&sub.device, downlink, &why)
                    .await;
            }
        }
    }
}
