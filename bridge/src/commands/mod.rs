//! The command queue: creation, the state machine, and filling receive windows.
//!
//! Network-agnostic: an adapter tells [`Commands`] that a device opened a receive window
//! of some size, and gets back a [`DownlinkPlan`] to turn into its own protocol (a
//! ChirpStack `command/down`, a Sigfox BIDIR reply). Every state change is stored with
//! its time and published on `{root}/{network}/{id}/command-events`.
//!
//! The queue is the only door to commands: the HTTP API and the MQTT command topic
//! ([`mqtt_api`]) create, read and cancel through it, and it tells the adapters when a
//! command becomes due outside an uplink ([`Commands::due`]).
pub mod journal;
pub mod json;
pub mod model;
pub mod mqtt_api;
pub mod store;

use crate::clock::Clock;
use crate::commands::json::parse_command;
use crate::device::{DeviceId, Network};
use crate::mqtt::Publisher;
use crate::pipeline::{Pipeline, lock};
use gateway_config::CommandSettings;
use journal::{Entry, Journal};
use model::{Command, CommandState, HistoryEntry, Origin};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use store::{CommandStore, Created, NewCommand, QueuedCommand, StoreError};
use tokio::sync::{mpsc, watch};

/// How many 8-byte command frames a receive window can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveWindow {
    /// Frames that fit.
    pub frames: usize,
}

impl ReceiveWindow {
    /// A window of `max_payload` bytes.
    pub fn of_bytes(max_payload: usize) -> Self {
        ReceiveWindow {
            frames: max_payload / device_node::FRAME_LEN,
        }
    }
}

/// What to send in a window: frames of one or more commands under one downlink id.
#[derive(Debug, Clone, PartialEq)]
pub struct DownlinkPlan {
    /// The device.
    pub device: DeviceId,
    /// The downlink's id: a UUID of its own for each window (ChirpStack's queue item id
    /// must be a UUID, whatever ids the callers chose for the commands).
    pub id: String,
    /// The frames, one after another.
    pub payload: Vec<u8>,
    /// Ask for a confirmed downlink (any of the commands asked).
    pub confirmed: bool,
    /// The earliest expiry of the commands, ms since the epoch.
    pub expires_at: i64,
    /// The commands, in frame order.
    pub commands: Vec<String>,
}

/// Why the queue refused a request: the message names what is wrong (the HTTP layer
/// maps each to its status in one place, `http::error`).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The body is wrong: which field and why.
    #[error("{0}")]
    Invalid(String),
    /// The id is taken by another command (another device's, or a different one).
    #[error("{0}")]
    Conflict(String),
    /// No command has this id.
    #[error("no command \"{}\"", crate::device::excerpt(.0))]
    NotFound(String),
    /// Only a queued command can be cancelled.
    #[error("command \"{}\" is {state}: only a queued command can be cancelled (a scheduled one is already with the network)", crate::device::excerpt(.id))]
    NotCancellable {
        /// The command.
        id: String,
        /// Where it is now.
        state: CommandState,
    },
    /// The store failed (not the client's fault).
    #[error("{0}")]
    Store(StoreError),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdConflict { .. } | StoreError::IdReused { .. } => {
                CommandError::Conflict(e.to_string())
            }
            other => CommandError::Store(other),
        }
    }
}

/// The command queue of every device, over a [`CommandStore`] (SQLite unless said).
pub struct Commands<S = store::Store> {
    store: S,
    clock: Arc<dyn Clock>,
    publisher: Publisher,
    pipeline: Arc<Pipeline>,
    settings: CommandSettings,
    metrics: Arc<crate::metrics::Metrics>,
    /// The queued commands of every device, in memory: a receive window is chosen from
    /// here without a store query (see [`Commands::fill_window`]). The store stays the
    /// record: this is rebuilt from it at start.
    queue: Mutex<HashMap<DeviceId, Vec<Pending>>>,
    /// Insertion order of the queue, for ties.
    next_seq: AtomicI64,
    /// Windows taken from memory, on their way to the store.
    persist: mpsc::UnboundedSender<Take>,
    /// The window journal and the sequence number of the last window taken.
    windows: Mutex<WindowLog>,
    /// The sequence number of the last window the store holds: state changes and
    /// lookups by downlink wait for the windows taken before them (see [`Commands::settled`]).
    stored: watch::Sender<u64>,
    /// The last window the store holds, announced or not: what a window without a
    /// journal waits for before its hand-over.
    recorded: watch::Sender<u64>,
    /// Devices that may have commands not yet final: only their acknowledgement records
    /// are looked up in the store (anyone can send an ack record; it costs nothing then).
    commanded: Mutex<HashSet<DeviceId>>,
    /// Per network, the adapter to tell when a device's command becomes due outside an
    /// uplink (see [`Commands::due`]).
    due: Mutex<HashMap<Network, mpsc::UnboundedSender<DeviceId>>>,
    /// Batches with a command that changed since their progress was last published.
    changed_batches: Mutex<std::collections::HashSet<String>>,
    /// The announcements of a batch's new commands (their `queued` events and device
    /// states), published by [`Self::pacer`] behind the receive windows' downlinks.
    paced: mpsc::UnboundedSender<(Command, HistoryEntry, u64)>,
    /// Announcements waiting in `paced`: while any wait, events are not confirmed.
    paced_backlog: std::sync::atomic::AtomicU64,
}

/// The most messages the pacer leaves unacknowledged by the broker before it publishes
/// the next announcement: a `command/down` never waits behind more than these.
const PACED_IN_FLIGHT: u64 = 64;
/// And at most one announcement (an event and a state) a millisecond: a broker that
/// shares two cores with the bridge has capacity left for the uplinks' own messages.
const PACED_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

const REQUEST_FIELDS: [&str; 5] = ["id", "command", "args", "ttl_s", "confirmed"];
/// What an MQTT request may say besides: who asks, for the record.
const MQTT_FIELDS: [&str; 1] = ["requested_by"];

/// A queued command in memory: what a window needs to take it.
#[derive(Debug, Clone)]
struct Pending {
    id: String,
    urgent: bool,
    created_at: i64,
    seq: i64,
    expires_at: i64,
    confirmed: bool,
    frame: [u8; device_node::FRAME_LEN],
}

impl Pending {
    fn of(cmd: &Command, urgent: bool, seq: i64) -> Option<Pending> {
        match cmd.frame().encode() {
            Ok(frame) => Some(Pending {
                id: cmd.id.clone(),
                urgent,
                created_at: cmd.created_at,
                seq,
                expires_at: cmd.expires_at,
                confirmed: cmd.confirmed,
                frame,
            }),
            // validated at creation; a stored command that no longer encodes is a bug
            Err(e) => {
                tracing::error!(command = cmd.id, error = %e, "stored command does not encode");
                None
            }
        }
    }

    /// Window order: lock/unlock first, then oldest.
    fn order(&self) -> (bool, i64, i64) {
        (!self.urgent, self.created_at, self.seq)
    }
}

/// A window's commands, taken from memory, for the store.
struct Take {
    seq: u64,
    entry: Entry,
}

/// Windows taken so far, and where they are written first.
struct WindowLog {
    /// `None` when the store keeps no file (in memory) or the journal cannot be
    /// written: windows then wait for the store before their hand-over.
    journal: Option<Journal>,
    taken: u64,
}

impl<S: CommandStore> Commands<S> {
    /// The queue over `store`, with the queued commands loaded into memory.
    pub async fn new(
        store: S,
        clock: Arc<dyn Clock>,
        publisher: Publisher,
        pipeline: Arc<Pipeline>,
        settings: CommandSettings,
    ) -> Result<Arc<Self>, StoreError> {
        // windows handed over before a stop whose store write had not happened yet
        let journal_path = store.journal_path();
        let mut replayed = Vec::new();
        if let Some(path) = &journal_path {
            let entries = Journal::read(path)
                .map_err(|e| StoreError::Corrupt(format!("window journal: {e}")))?;
            for e in &entries {
                let pairs: Vec<(String, String)> = e
                    .commands
                    .iter()
                    .map(|c| (c.clone(), e.downlink.clone()))
                    .collect();
                replayed.extend(store.replay_scheduled(&pairs, e.at).await?);
            }
            if !entries.is_empty() {
                tracing::info!(
                    windows = entries.len(),
                    commands = replayed.len(),
                    "window journal applied to the store"
                );
            }
        }
        let journal = journal_path.and_then(|path| match Journal::create(&path) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the window journal; receive windows will wait for the store");
                None
            }
        });
        let loaded = store.queued_commands().await?;
        let mut queue: HashMap<DeviceId, Vec<Pending>> = HashMap::new();
        let mut max_seq = 0;
        for QueuedCommand {
            command,
            urgent,
            seq,
        } in &loaded
        {
            max_seq = max_seq.max(*seq);
            if let Some(p) = Pending::of(command, *urgent, *seq) {
                queue.entry(command.device.clone()).or_default().push(p);
            }
        }
        let commanded = store
            .devices_with_open_commands()
            .await?
            .into_iter()
            .collect();
        let metrics = pipeline.metrics().clone();
        let (persist, rx) = mpsc::unbounded_channel();
        let (paced, paced_rx) = mpsc::unbounded_channel();
        let commands = Arc::new(Commands {
            store,
            clock,
            publisher,
            pipeline,
            settings,
            metrics,
            queue: Mutex::new(queue),
            next_seq: AtomicI64::new(max_seq + 1),
            persist,
            windows: Mutex::new(WindowLog { journal, taken: 0 }),
            stored: watch::Sender::new(0),
            recorded: watch::Sender::new(0),
            commanded: Mutex::new(commanded),
            due: Mutex::new(HashMap::new()),
            changed_batches: Mutex::new(std::collections::HashSet::new()),
            paced,
            paced_backlog: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(Self::persister(Arc::downgrade(&commands), rx));
        tokio::spawn(Self::pacer(Arc::downgrade(&commands), paced_rx));
        commands.announce_all(&replayed).await;
        Ok(commands)
    }

    /// Publishes the announcements of batches' new commands one by one, each once the
    /// broker has acknowledged all but [`PACED_IN_FLIGHT`] of the messages handed to it:
    /// ten thousand `queued` events and states at once would stand between an uplink and
    /// its `command/down` in the client's queue and the broker's, past the receive window.
    async fn pacer(
        this: Weak<Commands<S>>,
        mut rx: mpsc::UnboundedReceiver<(Command, HistoryEntry, u64)>,
    ) {
        let mut tick = tokio::time::interval(PACED_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while let Some((cmd, entry, pending)) = rx.recv().await {
            tick.tick().await;
            let Some(this) = this.upgrade() else { return };
            loop {
                let (handed, acknowledged) = this.publisher.ledger().counts();
                if handed.saturating_sub(acknowledged) <= PACED_IN_FLIGHT {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            this.announce(&cmd, &entry).await;
            this.pipeline.set_pending(&cmd.device, pending).await;
            this.paced_backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Writes the windows taken from memory to the store: one write for every window
    /// waiting, so under load many windows share a commit (a write costs ~0.3 ms here,
    /// most of it handing the statement to SQLite's thread and back). The windows were
    /// handed over already (the journal holds them): a failed write is retried until the
    /// store takes it.
    async fn persister(this: Weak<Commands<S>>, mut rx: mpsc::UnboundedReceiver<Take>) {
        // the announcements, in order, on a task of their own: the next windows' write
        // does not wait behind them (they may wait for room in the MQTT client)
        let (announce, mut announcements) =
            mpsc::unbounded_channel::<(Vec<(Command, HistoryEntry)>, u64)>();
        let announcer = this.clone();
        tokio::spawn(async move {
            while let Some((changes, last)) = announcements.recv().await {
                let Some(this) = announcer.upgrade() else {
                    return;
                };
                this.announce_all(&changes).await;
                this.stored.send_replace(last);
            }
        });
        while let Some(first) = rx.recv().await {
            let batch = take_batch(first, &mut rx, 500);
            let Some(this) = this.upgrade() else { return };
            let pairs: Vec<(String, String)> = batch
                .iter()
                .flat_map(|t| {
                    t.entry
                        .commands
                        .iter()
                        .map(|c| (c.clone(), t.entry.downlink.clone()))
                })
                .collect();
            let last = batch.last().map_or(0, |t| t.seq);
            let at = batch[0].entry.at;
            let mut backoff = std::time::Duration::from_millis(50);
            let changes = loop {
                match this.store.mark_scheduled(&pairs, at).await {
                    Ok(changes) => break changes,
                    Err(e) => {
                        tracing::error!(windows = batch.len(), error = %e, ?backoff, "store failed recording receive windows; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            };
            if changes.len() < pairs.len() {
                // only a command that left `queued` in the store after the window took
                // it from memory, which the state changes' wait for this write prevents
                tracing::warn!(
                    taken = pairs.len(),
                    scheduled = changes.len(),
                    "windows carried commands the store no longer had queued"
                );
            }
            // the windows may go; their announcements may wait behind other messages
            this.recorded.send_replace(last);
            let _ = announce.send((changes, last));
            let mut log = lock(&this.windows);
            if log.taken == last {
                if let Some(j) = log
                    .journal
                    .as_mut()
                    .filter(|j| j.len() >= journal::CLEAR_AT)
                {
                    if let Err(e) = j.clear() {
                        tracing::warn!(path = %j.path().display(), error = %e, "cannot empty the window journal");
                    }
                }
            }
        }
    }

    /// Waits until the store holds every window taken so far. Whatever reads or moves
    /// a command's state by its store record calls this first, so it never sees a
    /// command that is on its way to the device as still `queued`.
    pub async fn settled(&self) {
        let taken = lock(&self.windows).taken;
        self.stored_up_to(taken).await;
    }

    async fn stored_up_to(&self, seq: u64) {
        let mut rx = self.stored.subscribe();
        let _ = rx.wait_for(|stored| *stored >= seq).await;
    }

    fn requeue(&self, device: &DeviceId, pending: Vec<Pending>) {
        lock(&self.queue)
            .entry(device.clone())
            .or_default()
            .extend(pending);
    }

    /// The store.
    /// Whether the store answers (for /healthz and the systemd watchdog).
    pub async fn store_answers(&self) -> bool {
        self.store.ping().await
    }

    /// The store's housekeeping, off the request path (every second).
    pub async fn maintain(&self) {
        self.store.maintain().await
    }

    /// The adapter of `network` subscribes here to be told when a device's command may
    /// go out now: just created, or back in the queue after a hand-over the network
    /// never confirmed. A device that can take a downlink at any time (LoRaWAN class
    /// B/C) takes it then; the others wait for their next uplink. One subscriber per
    /// network (a second replaces the first).
    pub fn due(&self, network: Network) -> mpsc::UnboundedReceiver<DeviceId> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.due).insert(network, tx);
        rx
    }

    /// Tells the adapter of the device's network that a command of it is due.
    fn announce_due(&self, device: &DeviceId) {
        if let Some(tx) = lock(&self.due).get(&device.network) {
            let _ = tx.send(device.clone());
        }
    }

    /// One command and its history, showing the receive windows already handed over
    /// (their store write is at most a few ms behind).
    pub async fn get(&self, id: &str) -> Result<(Command, Vec<HistoryEntry>), CommandError> {
        self.settled_for_reading().await;
        self.store
            .get(id)
            .await?
            .ok_or_else(|| CommandError::NotFound(id.to_owned()))
    }

    /// A device's commands, newest first (windows already handed over included).
    pub async fn list(
        &self,
        device: &DeviceId,
        state: Option<CommandState>,
        limit: u32,
    ) -> Result<Vec<Command>, CommandError> {
        self.settled_for_reading().await;
        Ok(self.store.list(device, state, limit).await?)
    }

    /// Waits (at most a second) for the windows taken to reach the store; a store that
    /// does not answer is reported by the read itself.
    async fn settled_for_reading(&self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.settled()).await;
    }

    /// Now, by the queue's clock.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Creates a command from a request body (HTTP or MQTT). Returns it and whether it
    /// is new (a known `id` returns the stored command).
    ///
    /// The request is checked and submitted to the store when this is called (see
    /// [`CommandStore::create`]): requests keep the order of the calls, and several
    /// submitted before any is awaited share one commit.
    pub fn create(
        &self,
        device: &DeviceId,
        body: &Value,
        origin: Origin,
    ) -> impl Future<Output = Result<(Command, bool), CommandError>> + Send + use<'_, S> {
        let submitted = match body {
            Value::Object(req) => self
                .new_command(device, req, origin)
                .map(|new| self.store.create(new, self.now())),
            _ => Err(CommandError::Invalid(
                "expected a JSON object such as {\"command\":\"unlock\"}".into(),
            )),
        };
        async move {
            match submitted?.await? {
                Created::Existing(cmd) => Ok((cmd, false)),
                Created::New(cmd, entry, pending) => {
                    self.created(&cmd, &entry, pending).await;
                    Ok((cmd, true))
                }
            }
        }
    }

    /// A command just stored: into the queue in memory, announced, due.
    async fn created(&self, cmd: &Command, entry: &HistoryEntry, pending: u64) {
        self.queue_new(cmd);
        self.announce(cmd, entry).await;
        self.pipeline.set_pending(&cmd.device, pending).await;
        self.announce_due(&cmd.device);
    }

    /// A new command into the queue in memory, counted by origin.
    fn queue_new(&self, cmd: &Command) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = Pending::of(cmd, cmd.command.is_urgent(), seq) {
            self.requeue(&cmd.device, vec![p]);
        }
        lock(&self.commanded).insert(cmd.device.clone());
        if let Some(o) = &cmd.origin {
            self.metrics.commands_created(o.label());
        }
    }

    /// Creates one command per device from one request body, under one batch id, in one
    /// transaction: each with its device's own counter and lifecycle. A batch `id` given
    /// before returns that batch's commands unchanged (`false`: nothing created).
    pub async fn create_batch(
        &self,
        devices: &[DeviceId],
        body: &Value,
        origin: Origin,
    ) -> Result<(String, bool), CommandError> {
        let Value::Object(req) = body else {
            return Err(CommandError::Invalid(
                "expected a JSON object such as {\"command\":\"lock\"}".into(),
            ));
        };
        let first = devices
            .first()
            .ok_or_else(|| CommandError::Invalid("the selection names no device".into()))?;
        let template = self.new_command(first, req, origin)?;
        let batch_id = template
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let news: Vec<NewCommand> = devices
            .iter()
            .map(|d| NewCommand {
                id: None,
                device: d.clone(),
                batch_id: Some(batch_id.clone()),
                ..template.clone()
            })
            .collect();
        let Some(outcomes) = self.store.create_batch(&batch_id, news, self.now()).await? else {
            return Ok((batch_id, false));
        };
        for outcome in outcomes {
            if let Created::New(cmd, entry, pending) = outcome? {
                // queued and due now; announced at the broker's pace (see `pacer`)
                self.queue_new(&cmd);
                self.announce_due(&cmd.device);
                self.paced_backlog.fetch_add(1, Ordering::AcqRel);
                let _ = self.paced.send((cmd, entry, pending));
            }
        }
        tracing::info!(batch = batch_id, commands = devices.len(), "batch created");
        Ok((batch_id, true))
    }

    /// The devices of a batch's commands.
    pub async fn batch_devices(&self, batch_id: &str) -> Result<Vec<DeviceId>, CommandError> {
        Ok(self.store.batch_devices(batch_id).await?)
    }

    /// How many of a batch's commands are in each state; `None`: no such batch.
    pub async fn batch_progress(
        &self,
        batch_id: &str,
    ) -> Result<Option<Vec<(CommandState, u64)>>, CommandError> {
        self.settled().await;
        let counts = self.store.batch_counts(batch_id).await?;
        Ok((!counts.is_empty()).then_some(counts))
    }

    fn new_command(
        &self,
        device: &DeviceId,
        req: &Map<String, Value>,
        mut origin: Origin,
    ) -> Result<NewCommand, CommandError> {
        let bad = |m: String| CommandError::Invalid(m);
        let mqtt = matches!(origin, Origin::Mqtt(_));
        let known = |k: &str| REQUEST_FIELDS.contains(&k) || (mqtt && MQTT_FIELDS.contains(&k));
        if let Some(unknown) = req.keys().find(|k| !known(k)) {
            let also = if mqtt { ", requested_by" } else { "" };
            return Err(bad(format!(
                "{unknown}: unknown field; expected {}{also}",
                REQUEST_FIELDS.join(", ")
            )));
        }
        match req.get("requested_by") {
            None | Some(Value::Null) => {}
            Some(Value::String(who)) if valid_requester(who) => {
                origin = Origin::Mqtt(Some(who.clone()));
            }
            Some(other) => {
                return Err(bad(format!(
                    "requested_by: {} is not a name (1 to 64 printable characters)",
                    crate::device::excerpt(&other.to_string())
                )));
            }
        }
        let id = match req.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if valid_id(s) => Some(s.clone()),
            Some(other) => {
                return Err(bad(format!(
                    "id: {} is not an id (1 to 64 letters, digits, - or _)",
                    crate::device::excerpt(&other.to_string())
                )));
            }
        };
        let command = parse_command(req).map_err(bad)?;
        let ttl_s = match req.get("ttl_s") {
            None | Some(Value::Null) => self.settings.default_ttl_s as u64,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|t| (1..=self.settings.max_ttl_s as u64).contains(t))
                .ok_or_else(|| {
                    bad(format!(
                        "ttl_s: {n} is out of range 1..={}",
                        self.settings.max_ttl_s
                    ))
                })?,
            Some(other) => {
                return Err(bad(format!(
                    "ttl_s: expected a whole number of seconds, found {}",
                    crate::device::excerpt(&other.to_string())
                )));
            }
        };
        let confirmed = match req.get("confirmed") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!(
                    "confirmed: expected true or false, found {other}"
                )));
            }
        };
        Ok(NewCommand {
            id,
            device: device.clone(),
            command,
            confirmed,
            ttl_ms: ttl_s as i64 * 1000,
            origin,
            batch_id: None,
        })
    }

    /// Cancels a command that is still queued, on behalf of `by`.
    pub async fn cancel(&self, id: &str, by: &Origin) -> Result<Command, CommandError> {
        // the store decides; a window that took it from memory meanwhile has it
        // `scheduled` there once settled
        let taken = self.unqueue(None, id);
        self.settled().await;
        let now = self.now();
        match self
            .store
            .cancel(id, by, "cancelled through the API", now)
            .await
        {
            Ok(Some((cmd, entry))) => {
                self.announce(&cmd, &entry).await;
                self.refresh_pending(&cmd.device).await;
                Ok(cmd)
            }
            Ok(None) => match self.store.get(id).await? {
                // not queued in the store (any more): it stays out of memory too
                Some((cmd, _)) => Err(CommandError::NotCancellable {
                    id: id.to_owned(),
                    state: cmd.state,
                }),
                None => Err(CommandError::NotFound(id.to_owned())),
            },
            Err(e) => {
                // nothing changed in the store: it is still queued
                if let Some((device, pending)) = taken {
                    self.requeue(&device, vec![pending]);
                }
                Err(e.into())
            }
        }
    }

    /// An uplink reached the pipeline: its acknowledgement records settle commands, and
    /// the window it opened (if any) is filled.
    pub async fn after_uplink(
        &self,
        device: &DeviceId,
        records: &[Value],
        window: Option<ReceiveWindow>,
    ) -> Option<DownlinkPlan> {
        for r in records {
            if r.get("kind").and_then(Value::as_str) == Some("ack") {
                self.device_ack(device, r).await;
            }
        }
        self.fill_window(device, window?).await
    }

    /// Takes the device's due commands for a window of this size: chosen in memory
    /// (lock/unlock first, then oldest, none past its expiry: the expiry sweep records
    /// those), written to the window journal, and handed over; the store marks them
    /// `scheduled` right behind (see [`journal`]). A `kill -9` after the hand-over never
    /// sends them twice: the journal is applied to the store at start. Without a
    /// journal the window waits for the store instead.
    pub async fn fill_window(
        &self,
        device: &DeviceId,
        window: ReceiveWindow,
    ) -> Option<DownlinkPlan> {
        if window.frames == 0 {
            return None;
        }
        let now = self.now();
        let mut stale = false;
        let (taken, seq, journaled, downlink) = {
            let mut queue = lock(&self.queue);
            let waiting = queue.get_mut(device)?;
            waiting.sort_by_key(Pending::order);
            let mut taken = Vec::new();
            let mut i = 0;
            while i < waiting.len() && taken.len() < window.frames {
                if waiting[i].expires_at > now {
                    taken.push(waiting.remove(i));
                } else {
                    stale = true;
                    i += 1;
                }
            }
            if waiting.iter().all(|p| p.expires_at <= now) {
                queue.remove(device);
            }
            match taken.first() {
                None => (taken, 0, true, String::new()),
                Some(_) => {
                    // still under the queue's lock: whoever finds the command gone from
                    // memory finds this window counted in `settled`
                    let entry = Entry {
                        at: now,
                        downlink: uuid::Uuid::new_v4().to_string(),
                        commands: taken.iter().map(|p| p.id.clone()).collect(),
                    };
                    let mut log = lock(&self.windows);
                    log.taken += 1;
                    let seq = log.taken;
                    let journaled = match log.journal.as_mut().map(|j| j.append(&entry)) {
                        Some(Ok(())) => true,
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "cannot write the window journal; this window waits for the store");
                            false
                        }
                        None => false,
                    };
                    let downlink = entry.downlink.clone();
                    let _ = self.persist.send(Take { seq, entry });
                    (taken, seq, journaled, downlink)
                }
            }
        };
        if stale {
            // a window saw commands past their expiry: record them now, not at the
            // next sweep
            self.expire_due().await;
        }
        if taken.is_empty() {
            return None;
        }
        if !journaled {
            let mut rx = self.recorded.subscribe();
            let _ = rx.wait_for(|recorded| *recorded >= seq).await;
        }
        Some(DownlinkPlan {
            device: device.clone(),
            id: downlink,
            payload: taken.iter().flat_map(|p| p.frame).collect(),
            confirmed: taken.iter().any(|p| p.confirmed),
            expires_at: taken.iter().map(|p| p.expires_at).min().unwrap_or(0),
            commands: taken.iter().map(|p| p.id.clone()).collect(),
        })
    }

    /// Removes a command from the in-memory queue (of `device`, when known); it, with its
    /// device, when it was there.
    fn unqueue(&self, device: Option<&DeviceId>, id: &str) -> Option<(DeviceId, Pending)> {
        let mut queue = lock(&self.queue);
        let (device, i) = match device {
            Some(d) => queue
                .get(d)
                .and_then(|w| w.iter().position(|p| p.id == id))
                .map(|i| (d.clone(), i))?,
            None => queue
                .iter()
                .find_map(|(d, w)| w.iter().position(|p| p.id == id).map(|i| (d.clone(), i)))?,
        };
        let waiting = queue.get_mut(&device)?;
        let pending = waiting.remove(i);
        if waiting.is_empty() {
            queue.remove(&device);
        }
        Some((device, pending))
    }

    fn requeue_from_store(&self, cmd: &Command) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = Pending::of(cmd, cmd.command.is_urgent(), seq) {
            self.requeue(&cmd.device, vec![p]);
        }
    }

    /// Whether any device has commands waiting.
    pub fn any_queued(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// Whether the device has commands waiting for a window.
    pub fn has_queued(&self, device: &DeviceId) -> bool {
        lock(&self.queue).contains_key(device)
    }

    /// Whether the device has commands not yet settled (queued to delivered), i.e.
    /// whether its acknowledgement records can mean anything.
    pub fn has_open(&self, device: &DeviceId) -> bool {
        lock(&self.commanded).contains(device)
    }

    /// A device's acknowledgement record: `executed` or `rejected`.
    async fn device_ack(&self, device: &DeviceId, record: &Value) {
        let (Some(counter), Some(result)) = (
            record.get("counter").and_then(Value::as_u64),
            record.get("result").and_then(Value::as_str),
        ) else {
            return;
        };
        if !lock(&self.commanded).contains(device) {
            tracing::debug!(device = %device, counter, "acknowledgement from a device with no open command");
            return;
        }
        let cmd = match self.store.by_counter(device, counter as u16).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::warn!(device = %device, counter, "acknowledgement of an unknown command counter");
                return;
            }
            Err(e) => {
                tracing::error!(device = %device, error = %e, "store failed reading a command by counter");
                return;
            }
        };
        let opcode = record.get("opcode").and_then(Value::as_u64);
        if opcode.is_some_and(|o| o != cmd.command.opcode() as u64) {
            tracing::warn!(device = %device, counter, ?opcode, command = cmd.id, "acknowledgement opcode does not match the command; ignored");
            return;
        }
        let executed = matches!(result, "executed" | "already_executed");
        let (to, reason) = if executed {
            (CommandState::Executed, None)
        } else {
            (CommandState::Rejected, Some(format!("device: {result}")))
        };
        let from = [
            CommandState::Queued,
            CommandState::Scheduled,
            CommandState::Sent,
            CommandState::Delivered,
        ];
        self.transition(&cmd.id, &from, to, reason.as_deref()).await;
    }

    /// The network transmitted a downlink (ChirpStack txack) of `device`.
    pub async fn network_sent(&self, device: &DeviceId, downlink_id: &str) {
        self.for_downlink(
            device,
            downlink_id,
            &[CommandState::Scheduled],
            CommandState::Sent,
            None,
        )
        .await;
    }

    /// The device's radio acknowledged a downlink, or did not.
    pub async fn network_ack(
        &self,
        device: &DeviceId,
        downlink_id: &str,
        acknowledged: bool,
    ) -> Vec<DeviceId> {
        if acknowledged {
            self.for_downlink(
                device,
                downlink_id,
                &[CommandState::Scheduled, CommandState::Sent],
                CommandState::Delivered,
                None,
            )
            .await;
            return Vec::new();
        }
        self.network_not_delivered(
            device,
            downlink_id,
            "not acknowledged; queued for the next window",
        )
        .await
    }

    /// The network could not deliver a downlink: its commands go back to `queued` for
    /// another window, or end `failed` when the attempts are used up, or `expired`.
    /// Returns the devices with commands queued again.
    pub async fn network_not_delivered(
        &self,
        device: &DeviceId,
        downlink_id: &str,
        reason: &str,
    ) -> Vec<DeviceId> {
        let cmds = self.commands_of(device, downlink_id).await;
        let mut retry = Vec::new();
        for cmd in cmds {
            if !matches!(cmd.state, CommandState::Scheduled | CommandState::Sent) {
                continue;
            }
            let from = [CommandState::Scheduled, CommandState::Sent];
            if cmd.attempts >= self.settings.max_attempts as u32 {
                let why = format!(
                    "{reason} (attempt {} of {}: giving up)",
                    cmd.attempts, self.settings.max_attempts
                );
                let why = if reason.starts_with("not acknowledged") {
                    format!("not acknowledged after {} attempts", cmd.attempts)
                } else {
                    why
                };
                self.transition(&cmd.id, &from, CommandState::Failed, Some(&why))
                    .await;
            } else if cmd.expires_at <= self.now() {
                let why = format!("{reason}; and expired");
                self.transition(&cmd.id, &from, CommandState::Expired, Some(&why))
                    .await;
            } else {
                if self
                    .transition(&cmd.id, &from, CommandState::Queued, Some(reason))
                    .await
                {
                    self.requeue_from_store(&cmd);
                }
                if !retry.contains(&cmd.device) {
                    retry.push(cmd.device.clone());
                }
            }
        }
        retry
    }

    /// The network gave up on a downlink: `expired` or `failed` with its reason.
    pub async fn network_dropped(
        &self,
        device: &DeviceId,
        downlink_id: &str,
        to: CommandState,
        reason: &str,
    ) {
        let from = [CommandState::Scheduled, CommandState::Sent];
        self.for_downlink(device, downlink_id, &from, to, Some(reason))
            .await;
    }

    /// The commands of a downlink of `device`. A network event that names another
    /// device's downlink finds nothing: correlation checks the device, not only the id.
    pub async fn commands_of(&self, device: &DeviceId, downlink_id: &str) -> Vec<Command> {
        self.settled().await;
        let mut cmds = self.store.by_network_ref(downlink_id).await.unwrap_or_else(|e| {
            tracing::error!(downlink_id, error = %e, "store failed reading a downlink's commands");
            Vec::new()
        });
        let before = cmds.len();
        cmds.retain(|c| &c.device == device);
        if cmds.len() < before {
            self.metrics
                .malformed(device.network.name(), "downlink_of_another_device");
            tracing::warn!(device = %device, downlink_id, "network event names a downlink of another device; ignored");
        }
        cmds
    }

    /// A downlink that could not be handed to the network (the connection to it is gone,
    /// or its topic could not be built): its commands go back to `queued` for the next
    /// window, or end `failed` or `expired`, never left `scheduled`.
    pub async fn handover_failed(&self, plan: &DownlinkPlan, reason: &str) -> Vec<DeviceId> {
        self.network_not_delivered(&plan.device, &plan.id, reason)
            .await
    }

    /// Hand-overs the network never confirmed: LoRaWAN commands `scheduled` for longer
    /// than `timeout_ms` without a txack, ack or log event go back to `queued` for the
    /// next window (with their counter: a late copy is refused by the node), or end
    /// `failed` once their attempts are used up. The devices with commands queued again
    /// are announced as due ([`Commands::due`]) and returned.
    pub async fn unconfirmed_handovers(&self, timeout_ms: i64) -> Vec<DeviceId> {
        self.settled().await;
        let cutoff = self.now().saturating_sub(timeout_ms);
        let stale = match self.store.unconfirmed_handovers(cutoff).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "store failed reading unconfirmed hand-overs");
                return Vec::new();
            }
        };
        let reason = format!(
            "the network did not confirm the hand-over within {} s",
            timeout_ms / 1000
        );
        let mut retry = Vec::new();
        for (device, downlink) in stale {
            for d in self
                .network_not_delivered(&device, &downlink, &reason)
                .await
            {
                if !retry.contains(&d) {
                    self.announce_due(&d);
                    retry.push(d);
                }
            }
        }
        retry
    }

    async fn for_downlink(
        &self,
        device: &DeviceId,
        downlink_id: &str,
        from: &[CommandState],
        to: CommandState,
        reason: Option<&str>,
    ) {
        let cmds = self.commands_of(device, downlink_id).await;
        if cmds.is_empty() {
            tracing::debug!(
                downlink_id,
                "network event for a downlink the bridge did not send"
            );
        }
        for cmd in cmds {
            self.transition(&cmd.id, from, to, reason).await;
        }
    }

    /// Moves one command, publishing the event; false when it was not in `from`.
    pub async fn transition(
        &self,
        id: &str,
        from: &[CommandState],
        to: CommandState,
        reason: Option<&str>,
    ) -> bool {
        self.settled().await;
        match self
            .store
            .transition(id, from, to, reason, self.now())
            .await
        {
            Ok(Some((cmd, entry))) => {
                if from.contains(&CommandState::Queued) && to != CommandState::Queued {
                    // e.g. an acknowledgement record for a command still waiting
                    self.unqueue(Some(&cmd.device), &cmd.id);
                }
                self.announce(&cmd, &entry).await;
                self.refresh_pending(&cmd.device).await;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(command = id, error = %e, "store failed on a state change");
                false
            }
        }
    }

    /// Commands of `network` not yet delivered, created at or before `before` (the SMS
    /// fallback's candidates), windows already handed over included.
    pub async fn undelivered_before(&self, network: Network, before: i64) -> Vec<Command> {
        self.settled().await;
        self.store
            .undelivered_before(network, before)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "store failed reading undelivered commands");
                Vec::new()
            })
    }

    /// Records a note in a command's history without changing its state (it must still
    /// be `state`): an SMS copy sent, a cap that held one back. False when it moved on.
    pub async fn note(&self, id: &str, state: CommandState, reason: &str) -> bool {
        self.transition(id, &[state], state, Some(reason)).await
    }

    /// Expires queued commands past their time (run every second).
    pub async fn expire_due(&self) {
        self.settled().await;
        match self.store.expire_due(self.now()).await {
            Ok(expired) => {
                for (cmd, entry) in expired {
                    self.unqueue(Some(&cmd.device), &cmd.id);
                    self.announce(&cmd, &entry).await;
                    self.refresh_pending(&cmd.device).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "store failed expiring commands"),
        }
    }

    async fn announce_all(&self, changes: &[(Command, HistoryEntry)]) {
        for (cmd, entry) in changes {
            self.announce(cmd, entry).await;
        }
    }

    async fn announce(&self, cmd: &Command, entry: &HistoryEntry) {
        let labels = crate::metrics::CommandLabels {
            network: cmd.device.network.name(),
            state: entry.state.name(),
        };
        self.metrics.command_states.get_or_create(&labels).inc();
        if entry.state.is_final() {
            self.metrics
                .command_duration
                .observe((entry.at - cmd.created_at).max(0) as f64 / 1000.0);
        }
        let origin = entry.origin.as_ref().map(Origin::to_stored);
        tracing::info!(command = cmd.id, device = %cmd.device, state = %entry.state, reason = entry.reason.as_deref(), origin, batch = cmd.batch_id.as_deref(), "command state");
        if let Some(b) = &cmd.batch_id {
            lock(&self.changed_batches).insert(b.clone());
        }
        self.publish_event(cmd, entry).await;
    }

    async fn publish_event(&self, cmd: &Command, entry: &HistoryEntry) {
        let topic = format!(
            "{}/command-events",
            self.publisher.device_topic(&cmd.device)
        );
        self.publisher
            .publish_json(&topic, &entry.event_json(&cmd.id), false)
            .await;
    }

    /// Publishes the progress of every batch whose commands changed since the last call
    /// (retained, on `{root}/batches/{batch_id}`; run every second).
    pub async fn publish_batches(&self) {
        let batches: Vec<String> = lock(&self.changed_batches).drain().collect();
        for b in batches {
            match self.store.batch_counts(&b).await {
                Ok(counts) => {
                    let v = progress_json(&b, &counts, self.now());
                    self.publisher
                        .publish_json(&self.publisher.batch_topic(&b), &v, true)
                        .await;
                }
                Err(e) => {
                    tracing::warn!(batch = b, error = %e, "store failed counting a batch; trying again");
                    lock(&self.changed_batches).insert(b);
                }
            }
        }
    }

    /// Records that the broker holds every event up to a little before now, when it has
    /// acknowledged everything handed to it so far (run every few seconds). The margin
    /// covers an event stored but not yet handed to the client when this looks; at
    /// shutdown (`stopped`), once nothing can change a command any more, there is none.
    pub async fn confirm_events(&self, stopped: bool) {
        let paced = self.paced_backlog.load(Ordering::Acquire);
        if !self.publisher.ledger().level() || paced > 0 {
            if stopped {
                let (handed, acknowledged) = self.publisher.ledger().counts();
                tracing::warn!(
                    handed,
                    acknowledged,
                    paced,
                    "stopping with messages the broker has not acknowledged or not been handed: their events go out again at the next start"
                );
            }
            return;
        }
        let through = if stopped {
            self.now() + 1
        } else {
            self.now() - EVENT_MARGIN_MS
        };
        if let Err(e) = self.store.set_events_confirmed_through(through).await {
            tracing::warn!(error = %e, "store failed recording the published events");
        }
    }

    /// Publishes again the command events of every change since the last time the broker
    /// was known to hold them all (see [`Self::confirm_events`]): after a stop with the
    /// broker away, or a `kill -9`, a subscriber gets the events it missed (some perhaps
    /// twice, as QoS 1 allows). Returns the devices whose commands changed meanwhile. A
    /// store that never recorded a time (a new one) owes nothing.
    pub async fn republish_owed_events(&self) -> Vec<DeviceId> {
        let since = match self.store.events_confirmed_through().await {
            Ok(Some(t)) => t,
            Ok(None) => {
                let _ = self.store.set_events_confirmed_through(self.now()).await;
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(error = %e, "store failed reading the published events");
                return Vec::new();
            }
        };
        let owed = match self.store.history_since(since).await {
            Ok(owed) => owed,
            Err(e) => {
                tracing::warn!(error = %e, "store failed reading the events owed");
                return Vec::new();
            }
        };
        let mut devices = Vec::new();
        for (cmd, entry) in &owed {
            self.publish_event(cmd, entry).await;
            if !devices.contains(&cmd.device) {
                devices.push(cmd.device.clone());
            }
        }
        if !owed.is_empty() {
            tracing::info!(
                events = owed.len(),
                devices = devices.len(),
                "command events since the broker last held them all published again"
            );
        }
        devices
    }

    /// How many commands of a device are on their way, from the store.
    pub async fn pending_of(&self, device: &DeviceId) -> Option<u64> {
        self.store.pending_count(device).await.ok()
    }

    /// Publishes a refused MQTT request on the device's command-events topic.
    pub async fn announce_refused(&self, device: &DeviceId, id: Option<&str>, reason: &str) {
        let topic = format!("{}/command-events", self.publisher.device_topic(device));
        let event = serde_json::json!({
            "command_id": id,
            "state": "refused",
            "at": crate::clock::rfc3339(self.now()),
            "reason": reason,
        });
        self.publisher.publish_json(&topic, &event, false).await;
    }

    async fn refresh_pending(&self, device: &DeviceId) {
        if let Ok(n) = self.store.pending_count(device).await {
            self.pipeline.set_pending(device, n).await;
        }
    }
}

/// How far behind now [`Commands::confirm_events`] records the broker holding every
/// event: an event is handed to the client right after its store write, far within this.
const EVENT_MARGIN_MS: i64 = 10_000;

/// A batch's progress: how many of its commands are in each state.
pub fn progress_json(batch_id: &str, counts: &[(CommandState, u64)], now: i64) -> Value {
    let mut states = Map::new();
    for s in CommandState::ALL {
        let n = counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
        states.insert(s.name().into(), n.into());
    }
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let open: u64 = counts
        .iter()
        .filter(|(s, _)| !s.is_final())
        .map(|(_, n)| n)
        .sum();
    serde_json::json!({
        "batch_id": batch_id,
        "total": total,
        "open": open,
        "states": states,
        "at": crate::clock::rfc3339(now),
    })
}

/// A `requested_by`: 1 to 64 characters, none of them a control character.
fn valid_requester(s: &str) -> bool {
    (1..=64).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `first` and whatever else is already waiting on `rx`, up to `max` in all: one write
/// for everything that queued while the last one ran.
pub(crate) fn take_batch<T>(
    first: T,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    max: usize,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(t) => batch.push(t),
            Err(_) => break,
        }
    }
    batch
}
