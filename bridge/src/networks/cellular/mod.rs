//! The cellular adapter: the long poll. A device's request is its receive window for as
//! long as the bridge holds it; the answer carries every due command as sealed frames,
//! or nothing when the wait ends. The listener that carries the requests is
//! `http::cellular`; this module knows nothing of sockets.
//!
//! A command's life on this network:
//! - `scheduled` when a held (or arriving) request takes it;
//! - `sent` once its answer is written to the socket ([`CellularAdapter::written`]);
//! - `delivered` when the device's next request acknowledges the last frame's counter;
//!   a next request that does not, or none within `delivery_timeout_s`, sends the
//!   command back to the queue, to go again with the same counter (the node's replay
//!   window refuses a second execution);
//! - `executed` / `rejected` from the device's ack record, as on every network.
//!
//! Requests are authenticated: a MAC under the device's own key
//! ([`device_node::seal`]) over its counter and body, the counter above the last one the
//! store recorded. A request that fails either is refused before it touches the queue.
pub mod keys;

use crate::commands::store::RequestCounters;
use crate::commands::{Commands, DownlinkPlan, ReceiveWindow};
use crate::device::{DeviceId, Network};
use crate::metrics::Metrics;
use crate::pipeline::{CodecKeys, Pipeline, Uplink, lock};
use device_node::FRAME_LEN;
use device_node::cellular::{PollError, open_poll};
use device_node::seal::{DeviceKey, SEALED_FRAME_LEN, seal_frame};
use gateway_config::CellularSettings;
pub use keys::{DeviceKeys, KeysError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Frames one answer carries at most (12 bytes each).
pub const MAX_FRAMES: usize = 16;

/// The records of an authenticated request (a poll, or an SMS: `networks::sms`) through
/// the pipeline, and their acknowledgements to the queue.
pub(crate) async fn request_uplink(
    pipeline: &Pipeline,
    commands: &Commands,
    device: &DeviceId,
    records: &[u8],
    received: Instant,
    dedup_key: String,
    meta: serde_json::Value,
) {
    let mut acks = Vec::new();
    if !records.is_empty() {
        let up = Uplink {
            device: device.clone(),
            payload: records.to_vec(),
            fport: None,
            received,
            dedup_key: Some(dedup_key),
            codec_keys: CodecKeys::default(),
            meta: serde_json::value::to_raw_value(&meta).expect("a JSON object serialises"),
            network_facts: serde_json::Map::new(),
        };
        if let Some(ingested) = pipeline.ingest(up).await {
            acks = ingested.acks;
        }
    }
    commands.after_uplink(device, &acks, None).await;
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key for the device, or the MAC is wrong: `401`, the same for both, so that
    /// the answer does not tell which devices exist.
    Unauthorized,
    /// The counter is not above the last one: a replay. Also `401`.
    Replayed,
    /// The body is not a poll: `400` with what is wrong.
    Bad(String),
    /// The store could not check the counter: `503`, the device tries again.
    Unavailable,
}

/// A request that passed its checks.
#[derive(Debug)]
pub struct Accepted {
    /// The device.
    pub device: DeviceId,
    key: DeviceKey,
    /// How long it may be held.
    pub wait: Duration,
}

/// An answer with frames, to write; then tell [`CellularAdapter::written`].
#[derive(Debug)]
pub struct Answer {
    /// The sealed frames.
    pub body: Vec<u8>,
    plan: DownlinkPlan,
    /// Told once `sent` is recorded: the device's next request may come back before.
    recorded: watch::Sender<bool>,
}

/// A held request: woken when a command of its device is due, or when a newer request
/// of the device replaces it.
pub struct Hold {
    id: u64,
    wake: Notify,
    replaced: AtomicBool,
}

/// Removes its hold when the request ends, however it ends.
pub struct HoldGuard<'a> {
    adapter: &'a CellularAdapter,
    device: DeviceId,
    hold: Arc<Hold>,
}

impl HoldGuard<'_> {
    /// Waits until a command may be due, or the request is replaced.
    pub async fn woken(&self) {
        self.hold.wake.notified().await;
    }

    /// Whether a newer request of the device replaced this one.
    pub fn replaced(&self) -> bool {
        self.hold.replaced.load(Ordering::Acquire)
    }
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        let mut holds = lock(&self.adapter.holds);
        if holds
            .get(&self.device)
            .is_some_and(|h| h.id == self.hold.id)
        {
            holds.remove(&self.device);
        }
        self.adapter.metrics.cellular_held.dec();
    }
}

/// An answer with frames on its way, not yet acknowledged.
#[derive(Debug, Clone)]
struct InFlight {
    downlink: String,
    last_counter: u16,
    deadline_ms: i64,
    /// True once its `sent` is recorded.
    recorded: watch::Receiver<bool>,
}

/// Reads cellular requests into the pipeline and answers them from the queue.
pub struct CellularAdapter {
    keys: Arc<DeviceKeys>,
    pipeline: Arc<Pipeline>,
    commands: Arc<Commands>,
    counters: Arc<dyn RequestCounters>,
    metrics: Arc<Metrics>,
    max_wait_s: u16,
    delivery_timeout_ms: i64,
    holds: Mutex<HashMap<DeviceId, Arc<Hold>>>,
    in_flight: Mutex<HashMap<DeviceId, InFlight>>,
    next_hold: AtomicU64,
}

impl CellularAdapter {
    /// The adapter for `[cellular]` with the devices' keys (read again by
    /// [`DeviceKeys::watch`]); its tasks (due commands, delivery timeouts) run on `jobs`
    /// until `stop`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: &CellularSettings,
        keys: Arc<DeviceKeys>,
        pipeline: Arc<Pipeline>,
        commands: Arc<Commands>,
        counters: Arc<dyn RequestCounters>,
        metrics: Arc<Metrics>,
        jobs: &TaskTracker,
        stop: &CancellationToken,
    ) -> Arc<Self> {
        let mut due = commands.due(Network::Cellular);
        let adapter = Arc::new(CellularAdapter {
            keys,
            pipeline,
            commands,
            counters,
            metrics,
            max_wait_s: settings.max_wait_s.min(u16::MAX as u32) as u16,
            delivery_timeout_ms: settings.delivery_timeout_s as i64 * 1000,
            holds: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            next_hold: AtomicU64::new(0),
        });
        // a command became due: wake its device's held request
        jobs.spawn({
            let a = adapter.clone();
            stop.clone().run_until_cancelled_owned(async move {
                while let Some(device) = due.recv().await {
                    a.wake(&device);
                }
            })
        });
        jobs.spawn({
            let a = adapter.clone();
            stop.clone().run_until_cancelled_owned(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    a.delivery_timeouts().await;
                }
            })
        });
        tracing::info!(devices = adapter.keys.len(), "cellular keys read");
        adapter
    }

    /// A request's checks and its uplink: the device, its MAC, its counter; then the
    /// acknowledgement of the last frame, and the records through the pipeline.
    pub async fn accept(
        &self,
        device_text: &str,
        body: &[u8],
        received: Instant,
    ) -> Result<Accepted, Refusal> {
        let device = DeviceId::new(Network::Cellular, device_text).map_err(|e| {
            self.metrics.cellular("bad_request");
            Refusal::Bad(format!("path: {e}"))
        })?;
        let Some(key) = self.keys.get(&device) else {
            self.metrics.cellular("unauthorized");
            return Err(Refusal::Unauthorized);
        };
        let poll = match open_poll(&key, device.id.as_bytes(), body) {
            Ok(p) => p,
            Err(PollError::BadMac) => {
                self.metrics.cellular("unauthorized");
                return Err(Refusal::Unauthorized);
            }
            Err(e) => {
                self.metrics.cellular("bad_request");
                return Err(Refusal::Bad(format!("body: {e}")));
            }
        };
        match self
            .counters
            .advance_request_counter(&device, poll.counter)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.cellular("replayed");
                tracing::warn!(device = %device, counter = poll.counter, "cellular request with a counter already used: refused as a replay");
                return Err(Refusal::Replayed);
            }
            Err(e) => {
                tracing::error!(device = %device, error = %e, "store failed checking a request counter");
                return Err(Refusal::Unavailable);
            }
        }
        self.settle_in_flight(&device, poll.received).await;
        let meta = serde_json::json!({"request_counter": poll.counter, "wait_s": poll.wait_s});
        // the counter is authenticated and never repeats
        let dedup_key = poll.counter.to_string();
        request_uplink(
            &self.pipeline,
            &self.commands,
            &device,
            poll.records,
            received,
            dedup_key,
            meta,
        )
        .await;
        Ok(Accepted {
            device,
            key,
            wait: Duration::from_secs(poll.wait_s.min(self.max_wait_s) as u64),
        })
    }

    /// The frame in flight to the device: delivered when the request acknowledges its
    /// counter; otherwise the device never had it, and it goes back to the queue.
    async fn settle_in_flight(&self, device: &DeviceId, received: Option<u16>) {
        let Some(mut f) = lock(&self.in_flight).remove(device) else {
            return;
        };
        // a quick device answers before `sent` is recorded: keep the history in order
        // (a dropped sender means the answer was never written)
        let _ = tokio::time::timeout(Duration::from_secs(5), f.recorded.wait_for(|r| *r)).await;
        if received == Some(f.last_counter) {
            self.commands.network_ack(device, &f.downlink, true).await;
        } else {
            self.commands
                .network_not_delivered(
                    device,
                    &f.downlink,
                    "the device's next request did not acknowledge it",
                )
                .await;
        }
    }

    /// Takes the device's due commands, if any, as an answer: in flight from now on,
    /// until the device's next request acknowledges it or the delivery timeout passes.
    pub async fn take(&self, request: &Accepted) -> Option<Answer> {
        let window = ReceiveWindow { frames: MAX_FRAMES };
        let device = &request.device;
        let plan = self.commands.fill_window(device, window).await?;
        let id = device.id.as_bytes();
        let mut body = Vec::with_capacity(plan.payload.len() / FRAME_LEN * SEALED_FRAME_LEN);
        for frame in plan.payload.chunks_exact(FRAME_LEN) {
            let frame: &[u8; FRAME_LEN] = frame.try_into().expect("chunks of FRAME_LEN");
            body.extend_from_slice(&seal_frame(&request.key, id, frame));
        }
        let last = &plan.payload[plan.payload.len() - FRAME_LEN..];
        let (recorded, rx) = watch::channel(false);
        let earlier = lock(&self.in_flight).insert(
            device.clone(),
            InFlight {
                downlink: plan.id.clone(),
                last_counter: u16::from_be_bytes([last[1], last[2]]),
                deadline_ms: self.commands.now() + self.delivery_timeout_ms,
                recorded: rx,
            },
        );
        if let Some(earlier) = earlier {
            // two requests of one device answered at once: the earlier answer's
            // acknowledgement can no longer be told apart
            let reason = "a second answer went out before the device acknowledged this one";
            self.commands
                .network_not_delivered(device, &earlier.downlink, reason)
                .await;
        }
        Some(Answer {
            body,
            plan,
            recorded,
        })
    }

    /// Holds a request of `device`: a newer one replaces the one held before, which is
    /// woken to answer empty at once.
    pub fn hold(&self, device: &DeviceId) -> HoldGuard<'_> {
        let hold = Arc::new(Hold {
            id: self.next_hold.fetch_add(1, Ordering::Relaxed),
            wake: Notify::new(),
            replaced: AtomicBool::new(false),
        });
        let older = lock(&self.holds).insert(device.clone(), hold.clone());
        if let Some(older) = older {
            older.replaced.store(true, Ordering::Release);
            older.wake.notify_one();
        }
        self.metrics.cellular_held.inc();
        HoldGuard {
            adapter: self,
            device: device.clone(),
            hold,
        }
    }

    /// Counts a request by how it ended (`longproto_cellular_requests_total`).
    pub fn note(&self, outcome: &'static str) {
        self.metrics.cellular(outcome);
    }

    fn wake(&self, device: &DeviceId) {
        if let Some(h) = lock(&self.holds).get(device) {
            h.wake.notify_one();
        }
    }

    /// An answer was written to the socket (`ok`), or could not be: its commands are
    /// `sent` and wait for the device's acknowledgement, or go back to the queue.
    pub async fn written(&self, device: &DeviceId, answer: Answer, ok: bool) {
        let plan = answer.plan;
        if !ok {
            {
                let mut in_flight = lock(&self.in_flight);
                if in_flight.get(device).is_some_and(|f| f.downlink == plan.id) {
                    in_flight.remove(device);
                }
            }
            let retry = self
                .commands
                .handover_failed(&plan, "the device's connection closed before the answer")
                .await;
            for d in retry {
                self.wake(&d);
            }
            return;
        }
        self.commands.network_sent(device, &plan.id).await;
        let _ = answer.recorded.send(true);
    }

    /// Frames not acknowledged within the delivery timeout: the connection was dead;
    /// back to the queue (and to the device's held request, if it came back).
    async fn delivery_timeouts(&self) {
        let now = self.commands.now();
        let late: Vec<(DeviceId, InFlight)> = {
            let mut in_flight = lock(&self.in_flight);
            let devices: Vec<DeviceId> = in_flight
                .iter()
                .filter(|(_, f)| f.deadline_ms <= now)
                .map(|(d, _)| d.clone())
                .collect();
            devices
                .into_iter()
                .filter_map(|d| in_flight.remove(&d).map(|f| (d, f)))
                .collect()
        };
        let reason = format!(
            "not acknowledged within {} s: the connection is presumed dead",
            self.delivery_timeout_ms / 1000
        );
        for (device, f) in late {
            for d in self
                .commands
                .network_not_delivered(&device, &f.downlink, &reason)
                .await
            {
                self.wake(&d);
            }
        }
    }
}
