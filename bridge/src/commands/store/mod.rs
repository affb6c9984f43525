//! The durable store, split by concern into four traits a backend implements:
//! - [`CommandStore`]: the commands, their history and the event bookkeeping (the queue,
//!   [`super::Commands`], is its one user);
//! - [`DeviceFacts`]: how to reach a device (the ChirpStack adapter's application and
//!   LoRaWAN class);
//! - [`Quotas`]: a network's downlink quotas (Sigfox's per day);
//! - [`RequestCounters`]: the last request counter of devices that authenticate their
//!   requests (cellular).
//!
//! Adapters hold only the `dyn` trait they need; the queue is generic over its
//! [`CommandStore`]. [`sqlite`] and [`postgres`] each implement [`CommandStore`] and
//! have the inherent methods behind the other traits; [`Store`], the one `storage.url`
//! chose, implements them all.
mod common;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use super::model::{Command, CommandState, HistoryEntry, Origin};
use crate::device::{DeviceClass, DeviceId, Network};
use std::future::Future;
use std::pin::Pin;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A command to create.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// The client's idempotency key, or `None` for a fresh UUID.
    pub id: Option<String>,
    /// The device.
    pub device: DeviceId,
    /// What it asks.
    pub command: device_node::Command,
    /// Ask for a confirmed downlink.
    pub confirmed: bool,
    /// Time to live, ms.
    pub ttl_ms: i64,
    /// Who asks.
    pub origin: Origin,
    /// The batch it belongs to, when it is one command of a command to a group.
    pub batch_id: Option<String>,
}

/// The outcome of [`CommandStore::create`].
#[derive(Debug, Clone)]
pub enum Created {
    /// Stored now, with the device's pending commands (queued, scheduled or sent) as
    /// the same transaction counted them.
    New(Command, HistoryEntry, u64),
    /// The id was known: the command stored before.
    Existing(Command),
}

/// A queued command as the in-memory queue keeps it.
#[derive(Debug, Clone)]
pub struct QueuedCommand {
    /// The command.
    pub command: Command,
    /// Lock/unlock: goes first.
    pub urgent: bool,
    /// Insertion order, for ties.
    pub seq: i64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    /// A client id already names a command of another device.
    #[error("id \"{id}\" already names a command of {device}")]
    IdConflict {
        /// The id.
        id: String,
        /// The device it belongs to.
        device: String,
    },
    /// A client id already names a different command of the same device.
    #[error("id \"{id}\" already names a different command ({existing}) of this device")]
    IdReused {
        /// The id.
        id: String,
        /// What the stored command is, e.g. "unlock, confirmed".
        existing: String,
    },
    /// A stored row does not read back.
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
    /// `storage.url` names a store this build does not have.
    #[error("{0}")]
    Unsupported(String),
    /// The task that commits creations has stopped (the store is shutting down).
    #[error("store: the creation writer has stopped")]
    Stopped,
}

pub(crate) type R<T> = Result<T, StoreError>;

/// A store call's future, boxed, for the traits adapters hold as `dyn`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = R<T>> + Send + 'a>>;

/// The command store's interface.
pub trait CommandStore: Send + Sync + 'static {
    /// Stores a command with the device's next counter, in state `queued`; a known id
    /// returns the command stored before (idempotency). The creation is submitted when
    /// this is called, not when the future is first polled: creations keep the order of
    /// the calls, and several submitted before any is awaited commit together.
    fn create(
        &self,
        new: NewCommand,
        now: i64,
    ) -> impl Future<Output = R<Created>> + Send + 'static;
    /// One command and its history.
    fn get(&self, id: &str)
    -> impl Future<Output = R<Option<(Command, Vec<HistoryEntry>)>>> + Send;
    /// A device's commands, newest first.
    fn list(
        &self,
        device: &DeviceId,
        state: Option<CommandState>,
        limit: u32,
    ) -> impl Future<Output = R<Vec<Command>>> + Send;
    /// Commands of `network` not yet delivered (`queued`, `scheduled`, `sent`) created
    /// at or before `before`, oldest first.
    fn undelivered_before(
        &self,
        network: Network,
        before: i64,
    ) -> impl Future<Output = R<Vec<Command>>> + Send;
    /// Every `queued` command, to rebuild the in-memory queue at start.
    fn queued_commands(&self) -> impl Future<Output = R<Vec<QueuedCommand>>> + Send;
    /// Marks commands `scheduled` in the downlinks that carry them: (command id,
    /// downlink id) pairs, many windows in one write. Only commands still `queued` move;
    /// returns those with their history entries.
    fn mark_scheduled(
        &self,
        taken: &[(String, String)],
        now: i64,
    ) -> impl Future<Output = R<Vec<(Command, HistoryEntry)>>> + Send;
    /// Applies a window journal entry at start: like [`CommandStore::mark_scheduled`]
    /// at `at`, but only to commands whose record has not changed since (`updated_at <
    /// at`): one put back in the queue after that window (a NACK) stays queued.
    fn replay_scheduled(
        &self,
        taken: &[(String, String)],
        at: i64,
    ) -> impl Future<Output = R<Vec<(Command, HistoryEntry)>>> + Send;
    /// Moves a command to `to` if it is in one of `from`; returns it and the history entry.
    fn transition(
        &self,
        id: &str,
        from: &[CommandState],
        to: CommandState,
        reason: Option<&str>,
        now: i64,
    ) -> impl Future<Output = R<Option<(Command, HistoryEntry)>>> + Send;
    /// Cancels a command still `queued`, recording who did (`changed_by`, and so the
    /// history entry's origin).
    fn cancel(
        &self,
        id: &str,
        by: &Origin,
        reason: &str,
        now: i64,
    ) -> impl Future<Output = R<Option<(Command, HistoryEntry)>>> + Send;
    /// Creates every command of a batch in one transaction (a command to a group):
    /// each with its device's next counter, all or none. `None`: the batch id names
    /// commands already (decided under the write lock, so two requests with one id
    /// create one batch).
    fn create_batch(
        &self,
        batch_id: &str,
        news: Vec<NewCommand>,
        now: i64,
    ) -> impl Future<Output = R<Option<Vec<R<Created>>>>> + Send;
    /// How many commands of a batch are in each state (none: no such batch).
    fn batch_counts(
        &self,
        batch_id: &str,
    ) -> impl Future<Output = R<Vec<(CommandState, u64)>>> + Send;
    /// The devices of a batch's commands.
    fn batch_devices(&self, batch_id: &str) -> impl Future<Output = R<Vec<DeviceId>>> + Send;
    /// The commands a downlink carried.
    fn by_network_ref(&self, network_ref: &str) -> impl Future<Output = R<Vec<Command>>> + Send;
    /// LoRaWAN downlinks (device, downlink id) whose commands are still `scheduled` and
    /// unchanged since before `before`: hand-overs the network never confirmed.
    fn unconfirmed_handovers(
        &self,
        before: i64,
    ) -> impl Future<Output = R<Vec<(DeviceId, String)>>> + Send;
    /// The latest command of a device with this counter.
    fn by_counter(
        &self,
        device: &DeviceId,
        counter: u16,
    ) -> impl Future<Output = R<Option<Command>>> + Send;
    /// Expires every open command past its time.
    fn expire_due(&self, now: i64) -> impl Future<Output = R<Vec<(Command, HistoryEntry)>>> + Send;
    /// Devices with commands not yet in a final state (they may still acknowledge one).
    fn devices_with_open_commands(&self) -> impl Future<Output = R<Vec<DeviceId>>> + Send;
    /// Commands of a device still on their way.
    fn pending_count(&self, device: &DeviceId) -> impl Future<Output = R<u64>> + Send;
    /// The time up to which every command event is known to be published (the broker
    /// acknowledged it); `None` before the first one is recorded.
    fn events_confirmed_through(&self) -> impl Future<Output = R<Option<i64>>> + Send;
    /// Records that every command event up to `at` is published.
    fn set_events_confirmed_through(&self, at: i64) -> impl Future<Output = R<()>> + Send;
    /// Every state change at or after `at`, with its command, in the order they happened.
    fn history_since(
        &self,
        at: i64,
    ) -> impl Future<Output = R<Vec<(Command, HistoryEntry)>>> + Send;
    /// Whether the store answers.
    fn ping(&self) -> impl Future<Output = bool> + Send;
    /// Housekeeping off the request path, run every second.
    fn maintain(&self) -> impl Future<Output = ()> + Send;
    /// Where this bridge's window journal lives (see [`super::journal`]): beside a
    /// database file; `None` (an in-memory database) makes windows wait for the store.
    fn journal_path(&self) -> Option<std::path::PathBuf>;
}

/// How to reach a device: the ChirpStack adapter's application id and LoRaWAN class.
pub trait DeviceFacts: Send + Sync {
    /// Remembers how to reach devices: (device, ChirpStack application, LoRaWAN class),
    /// many in one write.
    fn set_device_facts<'a>(
        &'a self,
        facts: &'a [(DeviceId, String, DeviceClass)],
    ) -> StoreFuture<'a, ()>;
    /// The remembered application id and class of those of `devices` it knows, in one
    /// read.
    fn device_facts<'a>(
        &'a self,
        devices: &'a [DeviceId],
    ) -> StoreFuture<'a, Vec<(DeviceId, String, DeviceClass)>>;
}

/// A network's downlink quotas, counted per device and day.
pub trait Quotas: Send + Sync {
    /// Takes one downlink from a daily quota; false when it is used up.
    fn take_daily_quota<'a>(
        &'a self,
        device: &'a DeviceId,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, bool>;
    /// Gives back a downlink taken from today's quota (the network did not send it).
    fn return_daily_quota<'a>(&'a self, device: &'a DeviceId, day: i64) -> StoreFuture<'a, ()>;
    /// Takes one from a daily quota of no single device (`name`: e.g. every SMS
    /// together); false when it is used up. Kept in the store, so a restart does not
    /// reset it.
    fn take_shared_quota<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, bool>;
    /// Gives back one taken from a shared daily quota.
    fn return_shared_quota<'a>(&'a self, name: &'a str, day: i64) -> StoreFuture<'a, ()>;
}

/// Group memberships that came through the API or ChirpStack's device tags (the
/// configuration's are read from it at start).
pub trait GroupMembers: Send + Sync {
    /// Every stored membership: (group, device, source "api" or "tag").
    fn group_members(&self) -> StoreFuture<'_, Vec<(String, DeviceId, String)>>;
    /// Adds (`present`) or removes a membership from one source.
    fn set_group_member<'a>(
        &'a self,
        group: &'a str,
        device: &'a DeviceId,
        source: &'a str,
        present: bool,
    ) -> StoreFuture<'a, ()>;
}

/// The request counters of devices that authenticate their requests (cellular): each
/// request's counter must be above the last one, across restarts.
pub trait RequestCounters: Send + Sync {
    /// Records `counter` as the device's last request counter when it is above the one
    /// recorded; false (nothing changed) when it is not: a replayed request.
    fn advance_request_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        counter: u32,
    ) -> StoreFuture<'a, bool>;
    /// For the requests a device sends by SMS, counted apart (an SMS may arrive after a
    /// later poll), and taken once each within 32 below the highest: SMS overtake each
    /// other. False: this counter arrived before, or is older than that.
    fn advance_sms_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        counter: u32,
    ) -> StoreFuture<'a, bool>;
}

/// The store `storage.url` names: `sqlite://…` (embedded, the default) or
/// `postgres://…` (`postgresql://…`), shared by an active bridge and its standby.
#[derive(Clone)]
pub enum Store {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

impl Store {
    /// Opens the SQLite store, or connects to PostgreSQL without taking the lock or
    /// migrating (the caller does both: see [`PgStore::wait_for_lock`]).
    pub async fn connect(
        url: &str,
        commits: prometheus_client::metrics::counter::Counter,
    ) -> R<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url, commits).await?))
        } else {
            Ok(Store::Sqlite(
                SqliteStore::open_counting(url, commits).await?,
            ))
        }
    }

    /// Opens either store ready for use (PostgreSQL: once this bridge holds the lock).
    pub async fn open(url: &str) -> R<Store> {
        let store = Store::connect(url, Default::default()).await?;
        if let Store::Postgres(pg) = &store {
            pg.wait_for_lock(|_| {}).await;
            pg.migrate().await?;
        }
        Ok(store)
    }
}

/// `$call` on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

impl CommandStore for Store {
    fn create(
        &self,
        new: NewCommand,
        now: i64,
    ) -> impl Future<Output = R<Created>> + Send + 'static {
        let submitted: Pin<Box<dyn Future<Output = R<Created>> + Send>> =
            each!(self, s => Box::pin(s.create(new, now)));
        submitted
    }
    async fn get(&self, id: &str) -> R<Option<(Command, Vec<HistoryEntry>)>> {
        each!(self, s => s.get(id).await)
    }
    async fn list(
        &self,
        device: &DeviceId,
        state: Option<CommandState>,
        limit: u32,
    ) -> R<Vec<Command>> {
        each!(self, s => s.list(device, state, limit).await)
    }
    async fn undelivered_before(&self, network: Network, before: i64) -> R<Vec<Command>> {
        each!(self, s => s.undelivered_before(network, before).await)
    }
    async fn queued_commands(&self) -> R<Vec<QueuedCommand>> {
        each!(self, s => s.queued_commands().await)
    }
    async fn mark_scheduled(
        &self,
        taken: &[(String, String)],
        now: i64,
    ) -> R<Vec<(Command, HistoryEntry)>> {
        each!(self, s => s.mark_scheduled(taken, now).await)
    }
    async fn replay_scheduled(
        &self,
        taken: &[(String, String)],
        at: i64,
    ) -> R<Vec<(Command, HistoryEntry)>> {
        each!(self, s => s.replay_scheduled(taken, at).await)
    }
    async fn transition(
        &self,
        id: &str,
        from: &[CommandState],
        to: CommandState,
        reason: Option<&str>,
        now: i64,
    ) -> R<Option<(Command, HistoryEntry)>> {
        each!(self, s => s.transition(id, from, to, reason, now).await)
    }
    async fn cancel(
        &self,
        id: &str,
        by: &Origin,
        reason: &str,
        now: i64,
    ) -> R<Option<(Command, HistoryEntry)>> {
        each!(self, s => s.cancel(id, by, reason, now).await)
    }
    async fn create_batch(
        &self,
        batch_id: &str,
        news: Vec<NewCommand>,
        now: i64,
    ) -> R<Option<Vec<R<Created>>>> {
        each!(self, s => s.create_batch(batch_id, news, now).await)
    }
    async fn batch_counts(&self, batch_id: &str) -> R<Vec<(CommandState, u64)>> {
        each!(self, s => s.batch_counts(batch_id).await)
    }
    async fn batch_devices(&self, batch_id: &str) -> R<Vec<DeviceId>> {
        each!(self, s => s.batch_devices(batch_id).await)
    }
    async fn by_network_ref(&self, network_ref: &str) -> R<Vec<Command>> {
        each!(self, s => s.by_network_ref(network_ref).await)
    }
    async fn unconfirmed_handovers(&self, before: i64) -> R<Vec<(DeviceId, String)>> {
        each!(self, s => s.unconfirmed_handovers(before).await)
    }
    async fn by_counter(&self, device: &DeviceId, counter: u16) -> R<Option<Command>> {
        each!(self, s => s.by_counter(device, counter).await)
    }
    async fn expire_due(&self, now: i64) -> R<Vec<(Command, HistoryEntry)>> {
        each!(self, s => s.expire_due(now).await)
    }
    async fn devices_with_open_commands(&self) -> R<Vec<DeviceId>> {
        each!(self, s => s.devices_with_open_commands().await)
    }
    async fn pending_count(&self, device: &DeviceId) -> R<u64> {
        each!(self, s => s.pending_count(device).await)
    }
    async fn events_confirmed_through(&self) -> R<Option<i64>> {
        each!(self, s => s.events_confirmed_through().await)
    }
    async fn set_events_confirmed_through(&self, at: i64) -> R<()> {
        each!(self, s => s.set_events_confirmed_through(at).await)
    }
    async fn history_since(&self, at: i64) -> R<Vec<(Command, HistoryEntry)>> {
        each!(self, s => s.history_since(at).await)
    }
    async fn ping(&self) -> bool {
        each!(self, s => s.ping().await)
    }
    async fn maintain(&self) {
        each!(self, s => s.maintain().await)
    }
    fn journal_path(&self) -> Option<std::path::PathBuf> {
        each!(self, s => s.journal_path())
    }
}

// The adapters' traits are implemented once, here: each backend has the inherent
// methods, and the key of a quota of no single device is made in one place.
impl DeviceFacts for Store {
    fn set_device_facts<'a>(
        &'a self,
        facts: &'a [(DeviceId, String, DeviceClass)],
    ) -> StoreFuture<'a, ()> {
        each!(self, s => Box::pin(s.write_device_facts(facts)))
    }
    fn device_facts<'a>(
        &'a self,
        devices: &'a [DeviceId],
    ) -> StoreFuture<'a, Vec<(DeviceId, String, DeviceClass)>> {
        each!(self, s => Box::pin(s.read_device_facts(devices)))
    }
}

/// The row of a daily quota of no single device (`quota/{name}`): a key no device id
/// can be.
fn shared_quota(name: &str) -> String {
    format!("quota/{name}")
}

impl Quotas for Store {
    fn take_daily_quota<'a>(
        &'a self,
        device: &'a DeviceId,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, bool> {
        each!(self, s => Box::pin(s.take_quota(device.to_string(), day, limit)))
    }
    fn return_daily_quota<'a>(&'a self, device: &'a DeviceId, day: i64) -> StoreFuture<'a, ()> {
        each!(self, s => Box::pin(s.return_quota(device.to_string(), day)))
    }
    fn take_shared_quota<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, bool> {
        each!(self, s => Box::pin(s.take_quota(shared_quota(name), day, limit)))
    }
    fn return_shared_quota<'a>(&'a self, name: &'a str, day: i64) -> StoreFuture<'a, ()> {
        each!(self, s => Box::pin(s.return_quota(shared_quota(name), day)))
    }
}

impl GroupMembers for Store {
    fn group_members(&self) -> StoreFuture<'_, Vec<(String, DeviceId, String)>> {
        each!(self, s => Box::pin(s.read_group_members()))
    }
    fn set_group_member<'a>(
        &'a self,
        group: &'a str,
        device: &'a DeviceId,
        source: &'a str,
        present: bool,
    ) -> StoreFuture<'a, ()> {
        each!(self, s => Box::pin(s.write_group_member(group, device, source, present)))
    }
}

impl RequestCounters for Store {
    fn advance_request_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        counter: u32,
    ) -> StoreFuture<'a, bool> {
        each!(self, s => Box::pin(s.advance_counter(device, counter)))
    }
    fn advance_sms_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        counter: u32,
    ) -> StoreFuture<'a, bool> {
        each!(self, s => Box::pin(s.advance_sms(device, counter)))
    }
}
