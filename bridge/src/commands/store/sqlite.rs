//! The SQLite store: every trait of [`super`] on one database file.
use super::{
    CommandStore, Created, DeviceFacts, GroupMembers, NewCommand, QueuedCommand, Quotas, R,
    RequestCounters, StoreError, StoreFuture,
};
use crate::commands::model::{Command, CommandState, HistoryEntry, Origin};
use crate::device::{DeviceClass, DeviceId, Network};
use prometheus_client::metrics::counter::Counter;
use sqlx::ConnectOptions;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/0001_commands.sql")),
    (
        2,
        include_str!("../../../migrations/0002_scheduled_by_time.sql"),
    ),
    (3, include_str!("../../../migrations/0003_events_owed.sql")),
    (
        4,
        include_str!("../../../migrations/0004_request_counters.sql"),
    ),
    (5, include_str!("../../../migrations/0005_sms.sql")),
    (6, include_str!("../../../migrations/0006_operators.sql")),
];

/// SQLite in WAL mode: creations commit with `synchronous = FULL`, in groups
/// ([`group_commits`]), state changes with `NORMAL`; one connection writes, the others
/// read. Why: docs/architecture.md, "The store decides, the radio protects", "Group
/// commit for creations" and "One SQLite writer, three readers".
#[derive(Clone)]
pub struct SqliteStore {
    /// The one writing connection, held directly: a pool of one hands a released
    /// connection back through a spawned task, ~130 µs before the next write may start.
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    reader: SqlitePool,
    /// Checkpoints the WAL into the database (see [`CommandStore::maintain`]).
    checkpointer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    /// The database file, unless it is in memory.
    file: Option<std::path::PathBuf>,
    /// Creations waiting for the next group commit.
    creations: tokio::sync::mpsc::UnboundedSender<PendingCreation>,
    /// Transactions that created commands (a batch's one included).
    commits: Counter,
}

/// A creation waiting for [`group_commits`], and where its outcome goes.
struct PendingCreation {
    new: NewCommand,
    now: i64,
    reply: tokio::sync::oneshot::Sender<R<Created>>,
}

/// The most creations one transaction commits: bounds how long other writes (state
/// changes) wait for the writer behind a burst of creations.
const MAX_GROUP: usize = 64;

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the database at
    /// `url` (`sqlite:///path/to.db`).
    pub async fn open(url: &str) -> R<Self> {
        Self::open_counting(url, Counter::default()).await
    }

    /// [`Self::open`], counting the transactions that create commands on `commits`.
    pub async fn open_counting(url: &str, commits: Counter) -> R<Self> {
        let Some(path) = url.strip_prefix("sqlite://") else {
            return Err(StoreError::Unsupported(format!(
                "storage.url: \"{url}\" is not an sqlite:// URL; no other store is supported"
            )));
        };
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // no checkpoint inside a commit: the one that crosses 1000 WAL pages would
            // make a receive window wait for the fsyncs (tens of ms here); `maintain`
            // checkpoints from its own connection every second instead
            .pragma("wal_autocheckpoint", "0");
        // Every write is one statement guarded by its WHERE clause, except `create`,
        // which takes the write lock up front; busy_timeout covers other processes.
        let writer = Arc::new(tokio::sync::Mutex::new(options.connect().await?));
        let (creations, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_commits(writer.clone(), pending, commits.clone()));
        let mut store = SqliteStore {
            writer,
            creations,
            commits,
            reader: SqlitePoolOptions::new().connect_lazy_with(options.clone()),
            checkpointer: Arc::new(tokio::sync::Mutex::new(options.connect().await?)),
            file: (!url.contains(":memory:") && !url.contains("mode=memory"))
                .then(|| options.get_filename().to_owned()),
        };
        store.migrate().await?;
        // the readers open now, on the migrated database, not on the first uplinks
        store.reader = SqlitePoolOptions::new()
            .max_connections(3)
            .min_connections(3)
            // no ping before each acquire: with SQLite it is one more round trip to the
            // connection's thread for every statement, and a local file does not drop
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        Ok(store)
    }

    /// `mark_scheduled`, and with `unchanged_since` only for records older than `now`.
    async fn schedule(
        &self,
        taken: &[(String, String)],
        now: i64,
        unchanged_since: bool,
    ) -> R<Vec<(Command, HistoryEntry)>> {
        let json = serde_json::to_string(taken).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // json_each has an `id` column too: every column of commands is qualified
        let rows = sqlx::query(
            "UPDATE commands SET state = 'scheduled', attempts = attempts + 1, \
             network_ref = t.value ->> 1, reason = NULL, updated_at = ?2 \
             FROM json_each(?1) AS t WHERE commands.id = t.value ->> 0 AND commands.state = 'queued' \
             AND (?3 = 0 OR commands.updated_at < ?2) \
             RETURNING commands.id AS id, commands.device AS device, commands.body AS body, \
             commands.counter AS counter, commands.confirmed AS confirmed, commands.state AS state, \
             commands.attempts AS attempts, commands.created_at AS created_at, \
             commands.expires_at AS expires_at, commands.network_ref AS network_ref, \
             commands.reason AS reason, commands.origin AS origin, commands.batch_id AS batch_id",
        )
        .bind(json)
        .bind(now)
        .bind(unchanged_since)
        .fetch_all(&mut *self.writer.lock().await)
        .await?;
        changed(&rows, now)
    }

    async fn migrate(&self) -> R<()> {
        use sqlx::Connection;
        let mut w = self.writer.lock().await;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            .execute(&mut *w)
            .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *w)
                    .await?;
            if done.is_none() {
                let mut tx = w.begin().await?;
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version, "store migrated");
            }
        }
        Ok(())
    }
}

/// The columns [`row_to_command`] reads, as a literal so statements stay static strings.
macro_rules! cols {
    () => {
        "id, device, body, counter, confirmed, state, attempts, created_at, expires_at, network_ref, reason, origin, batch_id"
    };
}

/// `SELECT <cols> FROM commands <rest>`.
macro_rules! select_commands {
    ($rest:literal) => {
        concat!("SELECT ", cols!(), " FROM commands ", $rest)
    };
}

fn row_to_command(row: &SqliteRow) -> R<Command> {
    let device: String = row.try_get("device")?;
    let device = DeviceId::parse_path(&device).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let body: String = row.try_get("body")?;
    let command =
        serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{body}: {e}")))?;
    let state: String = row.try_get("state")?;
    Ok(Command {
        id: row.try_get("id")?,
        device,
        command,
        counter: row.try_get::<i64, _>("counter")? as u16,
        confirmed: row.try_get::<i64, _>("confirmed")? != 0,
        state: CommandState::from_name(&state).ok_or_else(|| StoreError::Corrupt(state.clone()))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        network_ref: row.try_get("network_ref")?,
        reason: row.try_get("reason")?,
        origin: stored_origin(row.try_get("origin")?),
        batch_id: row.try_get("batch_id")?,
    })
}

fn stored_origin(s: Option<String>) -> Option<Origin> {
    s.as_deref().and_then(Origin::from_stored)
}

/// The history entry the `command_changed` trigger wrote for a command's last change.
fn entry_of(cmd: &Command, at: i64) -> HistoryEntry {
    let counted = matches!(
        cmd.state,
        CommandState::Queued
            | CommandState::Scheduled
            | CommandState::Sent
            | CommandState::Delivered
    );
    HistoryEntry {
        state: cmd.state,
        at,
        reason: cmd.reason.clone(),
        attempt: (counted && cmd.attempts > 0).then_some(cmd.attempts),
        origin: None,
    }
}

/// The commands an `UPDATE … RETURNING` changed at `now`, with their history entries.
fn changed(rows: &[SqliteRow], now: i64) -> R<Vec<(Command, HistoryEntry)>> {
    rows.iter()
        .map(|row| {
            let c = row_to_command(row)?;
            let e = entry_of(&c, now);
            Ok((c, e))
        })
        .collect()
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`.
fn id_list(ids: &[&str]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// Commits creations as they arrive, in groups: every creation that queued while one
/// group was being written goes into the next one (up to [`MAX_GROUP`]), one transaction
/// and one fsync for all. Ends when the store is dropped.
async fn group_commits(
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<PendingCreation>,
    commits: Counter,
) {
    while let Some(first) = pending.recv().await {
        let group = crate::commands::take_batch(first, &mut pending, MAX_GROUP);
        let mut conn = writer.lock().await;
        let news: Vec<(&NewCommand, i64)> = group.iter().map(|p| (&p.new, p.now)).collect();
        let outcomes = match create_group(&mut conn, &news).await {
            Ok(outcomes) => {
                commits.inc();
                outcomes
            }
            // a database error fails the whole transaction: each creation alone, so
            // that only the one at fault fails
            Err(e) if group.len() > 1 => {
                tracing::debug!(error = %e, creations = group.len(), "group commit failed; committing one by one");
                let mut outcomes = Vec::with_capacity(group.len());
                for one in news.chunks(1) {
                    match create_group(&mut conn, one).await {
                        Ok(outcome) => {
                            commits.inc();
                            outcomes.extend(outcome);
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                outcomes
            }
            Err(e) => vec![Err(e)],
        };
        drop(conn);
        for (p, outcome) in group.into_iter().zip(outcomes) {
            // a requester that went away finds its command by its id
            let _ = p.reply.send(outcome);
        }
    }
}

/// Creates `news` in one transaction with `synchronous = FULL`, in order. `Ok` holds
/// each creation's outcome (an id conflict fails that creation alone); `Err` is a
/// database error, and then none of them is stored.
async fn create_group(
    conn: &mut SqliteConnection,
    news: &[(&NewCommand, i64)],
) -> R<Vec<R<Created>>> {
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut *conn)
        .await?;
    let result = create_all(conn, news).await;
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&mut *conn)
        .await?;
    result
}

/// What the group decided for one creation before anything is written.
enum Plan {
    /// Stored before this group: the outcome as it is (boxed: a command is large).
    Done(Box<R<Created>>),
    /// New: `fresh[i]`.
    Fresh(usize),
    /// Its id names `fresh[i]`, created earlier in this group.
    SameAs(usize),
}

/// Whether a request repeats the one that created a stored command (the command with
/// its arguments, and `confirmed`; the time to live counts from each request's arrival,
/// so a retry cannot repeat its expiry).
fn same_request(command: device_node::Command, confirmed: bool, new: &NewCommand) -> bool {
    command == new.command && confirmed == new.confirmed
}

fn reused(existing: &Command) -> StoreError {
    let confirmed = if existing.confirmed {
        "confirmed"
    } else {
        "unconfirmed"
    };
    StoreError::IdReused {
        id: existing.id.clone(),
        existing: format!("{}, {confirmed}", existing.command.name()),
    }
}

/// Creates `news` in the caller's connection, in one transaction of five statements
/// however many there are: the ids already stored, the counters of every device (one
/// upsert), the commands (one insert; their history rows come from the trigger), the
/// devices' pending counts, and the commit.
async fn create_all(
    conn: &mut SqliteConnection,
    news: &[(&NewCommand, i64)],
) -> R<Vec<R<Created>>> {
    use sqlx::Connection;
    use std::collections::HashMap;
    // IMMEDIATE: two deferred transactions upgrading to writers at once would fail
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;

    // the given ids that name stored commands
    let ids: Vec<&str> = news.iter().filter_map(|(n, _)| n.id.as_deref()).collect();
    let mut stored: HashMap<String, Command> = HashMap::new();
    if !ids.is_empty() {
        let rows = sqlx::query(select_commands!(
            "WHERE id IN (SELECT value FROM json_each(?))"
        ))
        .bind(id_list(&ids))
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let c = row_to_command(row)?;
            stored.insert(c.id.clone(), c);
        }
    }

    // each creation in order: a known id, an id seen earlier in the group, or new
    let conflict = |id: &str, device: &DeviceId| StoreError::IdConflict {
        id: id.to_owned(),
        device: device.to_string(),
    };
    let mut fresh: Vec<Command> = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut per_device: indexmap::IndexMap<String, i64> = indexmap::IndexMap::new();
    let mut plans = Vec::with_capacity(news.len());
    let mut pending: HashMap<String, u64> = HashMap::new();
    for (new, now) in news {
        let id = new.id.as_deref();
        if let Some(existing) = id.and_then(|id| stored.get(id)) {
            plans.push(Plan::Done(Box::new(if existing.device != new.device {
                Err(conflict(&existing.id, &existing.device))
            } else if !same_request(existing.command, existing.confirmed, new) {
                Err(reused(existing))
            } else {
                Ok(Created::Existing(existing.clone()))
            })));
            continue;
        }
        if let Some(&i) = id.and_then(|id| by_id.get(id)) {
            let earlier = &fresh[i];
            plans.push(if earlier.device != new.device {
                Plan::Done(Box::new(Err(conflict(&earlier.id, &earlier.device))))
            } else if !same_request(earlier.command, earlier.confirmed, new) {
                Plan::Done(Box::new(Err(reused(earlier))))
            } else {
                Plan::SameAs(i)
            });
            continue;
        }
        *per_device.entry(new.device.to_string()).or_default() += 1;
        plans.push(Plan::Fresh(fresh.len()));
        if let Some(id) = id {
            by_id.insert(id, fresh.len());
        }
        fresh.push(Command {
            id: id.map_or_else(|| uuid::Uuid::new_v4().to_string(), Into::into),
            device: new.device.clone(),
            command: new.command,
            counter: 0,
            confirmed: new.confirmed,
            state: CommandState::Queued,
            attempts: 0,
            created_at: *now,
            expires_at: now + new.ttl_ms,
            network_ref: None,
            reason: None,
            origin: Some(new.origin.clone()),
            batch_id: new.batch_id.clone(),
        });
    }

    if !fresh.is_empty() {
        // counters: n for a device takes the stored next one and the n - 1 after it (1
        // for a device never commanded); `excluded.next_counter` is 1 + n
        let wanted: Vec<(&str, i64)> = per_device.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let rows = sqlx::query(
            "INSERT INTO devices (device, next_counter) \
             SELECT value ->> 0, 1 + (value ->> 1) FROM json_each(?1) WHERE true \
             ON CONFLICT (device) DO UPDATE \
             SET next_counter = (devices.next_counter + excluded.next_counter - 1) % 65536 \
             RETURNING device, next_counter",
        )
        .bind(serde_json::to_string(&wanted).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .fetch_all(&mut *tx)
        .await?;
        let mut next: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let device: String = row.try_get("device")?;
            let after: i64 = row.try_get("next_counter")?;
            let n = per_device.get(&device).copied().unwrap_or(0);
            // the first counter of this group's commands for the device
            next.insert(device, (after - n).rem_euclid(65536));
        }
        let mut rows_json = Vec::with_capacity(fresh.len());
        for cmd in &mut fresh {
            let device = cmd.device.to_string();
            let counter = next
                .get_mut(&device)
                .ok_or_else(|| StoreError::Corrupt(format!("no counter for {device}")))?;
            cmd.counter = *counter as u16;
            *counter = (*counter + 1) % 65536;
            let body = serde_json::to_string(&cmd.command)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            rows_json.push(serde_json::json!([
                cmd.id,
                device,
                body,
                cmd.counter,
                cmd.command.is_urgent() as i64,
                cmd.confirmed as i64,
                cmd.created_at,
                cmd.expires_at,
                cmd.origin.as_ref().map(Origin::to_stored),
                cmd.batch_id,
            ]));
        }
        // rows in array order: rowids, and so ties in the queue, follow arrival
        sqlx::query(
            "INSERT INTO commands (id, device, body, counter, urgent, confirmed, state, attempts, created_at, expires_at, updated_at, origin, batch_id) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
             'queued', 0, value ->> 6, value ->> 7, value ->> 6, value ->> 8, value ->> 9 FROM json_each(?) ORDER BY key",
        )
        .bind(serde_json::Value::Array(rows_json).to_string())
        .execute(&mut *tx)
        .await?;
        // each device's pending count, in the same transaction: the state this
        // creation publishes needs no read of its own
        let devices: Vec<&str> = per_device.keys().map(String::as_str).collect();
        let rows = sqlx::query(
            "SELECT device, COUNT(*) AS n FROM commands \
             WHERE device IN (SELECT value FROM json_each(?)) \
             AND state IN ('queued', 'scheduled', 'sent') GROUP BY device",
        )
        .bind(id_list(&devices))
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let n: i64 = row.try_get("n")?;
            pending.insert(row.try_get("device")?, n as u64);
        }
    }
    tx.commit().await?;

    Ok(plans
        .into_iter()
        .map(|plan| match plan {
            Plan::Done(outcome) => *outcome,
            Plan::Fresh(i) => {
                let cmd = fresh[i].clone();
                let mut entry = entry_of(&cmd, cmd.created_at);
                entry.origin = cmd.origin.clone();
                let n = pending.get(&cmd.device.to_string()).copied();
                Ok(Created::New(cmd, entry, n.unwrap_or(1)))
            }
            Plan::SameAs(i) => Ok(Created::Existing(fresh[i].clone())),
        })
        .collect())
}

const EXPIRED_REASON: &str = "expired before a receive window opened";

impl SqliteStore {
    /// Moves a command to `to` if it is in one of `from`; `by`: who asked (recorded as
    /// `changed_by`, so the history entry carries it).
    async fn move_state(
        &self,
        id: &str,
        from: &[CommandState],
        to: CommandState,
        reason: Option<&str>,
        by: Option<&Origin>,
        now: i64,
    ) -> R<Option<(Command, HistoryEntry)>> {
        let from: Vec<&str> = from.iter().map(|s| s.name()).collect();
        let row = sqlx::query(concat!(
            "UPDATE commands SET state = ?1, reason = ?2, updated_at = ?3, ",
            "network_ref = CASE WHEN ?1 = 'queued' THEN NULL ELSE network_ref END, ",
            "changed_by = COALESCE(?6, changed_by) ",
            "WHERE id = ?4 AND state IN (SELECT value FROM json_each(?5)) RETURNING ",
            cols!()
        ))
        .bind(to.name())
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(id_list(&from))
        .bind(by.map(Origin::to_stored))
        .fetch_optional(&mut *self.writer.lock().await)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let cmd = row_to_command(&row)?;
        let mut e = entry_of(&cmd, now);
        e.origin = by.cloned();
        Ok(Some((cmd, e)))
    }
}

impl CommandStore for SqliteStore {
    fn create(
        &self,
        new: NewCommand,
        now: i64,
    ) -> impl Future<Output = R<Created>> + Send + 'static {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let submitted = self.creations.send(PendingCreation { new, now, reply });
        async move {
            submitted.map_err(|_| StoreError::Stopped)?;
            outcome.await.map_err(|_| StoreError::Stopped)?
        }
    }

    async fn get(&self, id: &str) -> R<Option<(Command, Vec<HistoryEntry>)>> {
        let Some(row) = sqlx::query(select_commands!("WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
        else {
            return Ok(None);
        };
        let cmd = row_to_command(&row)?;
        let rows = sqlx::query("SELECT state, at, reason, attempt, origin FROM command_history WHERE command_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&self.reader)
            .await?;
        let mut history = Vec::with_capacity(rows.len());
        for r in rows {
            let state: String = r.try_get("state")?;
            history.push(HistoryEntry {
                state: CommandState::from_name(&state)
                    .ok_or_else(|| StoreError::Corrupt(state.clone()))?,
                at: r.try_get("at")?,
                reason: r.try_get("reason")?,
                attempt: r.try_get::<Option<i64>, _>("attempt")?.map(|a| a as u32),
                origin: stored_origin(r.try_get("origin")?),
            });
        }
        Ok(Some((cmd, history)))
    }

    async fn list(
        &self,
        device: &DeviceId,
        state: Option<CommandState>,
        limit: u32,
    ) -> R<Vec<Command>> {
        let rows = sqlx::query(select_commands!(
            "WHERE device = ? AND (? IS NULL OR state = ?) ORDER BY created_at DESC, rowid DESC LIMIT ?"
        ))
        .bind(device.to_string())
        .bind(state.map(|s| s.name()))
        .bind(state.map(|s| s.name()))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(row_to_command).collect()
    }

    async fn undelivered_before(&self, network: Network, before: i64) -> R<Vec<Command>> {
        let rows = sqlx::query(select_commands!(
            "WHERE state IN ('queued', 'scheduled', 'sent') AND created_at <= ? \
             AND device >= ? AND device < ? ORDER BY created_at, rowid"
        ))
        .bind(before)
        .bind(format!("{}/", network.name()))
        .bind(format!("{}0", network.name()))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(row_to_command).collect()
    }

    async fn queued_commands(&self) -> R<Vec<QueuedCommand>> {
        let rows = sqlx::query(concat!(
            "SELECT urgent, rowid AS seq, ",
            cols!(),
            " FROM commands WHERE state = 'queued'"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueuedCommand {
                    command: row_to_command(row)?,
                    urgent: row.try_get::<i64, _>("urgent")? != 0,
                    seq: row.try_get("seq")?,
                })
            })
            .collect()
    }

    async fn mark_scheduled(
        &self,
        taken: &[(String, String)],
        now: i64,
    ) -> R<Vec<(Command, HistoryEntry)>> {
        self.schedule(taken, now, false).await
    }

    async fn replay_scheduled(
        &self,
        taken: &[(String, String)],
        at: i64,
    ) -> R<Vec<(Command, HistoryEntry)>> {
        self.schedule(taken, at, true).await
    }

    async fn transition(
        &self,
        id: &str,
        from: &[CommandState],
        to: CommandState,
        reason: Option<&str>,
        now: i64,
    ) -> R<Option<(Command, HistoryEntry)>> {
        self.move_state(id, from, to, reason, None, now).await
    }

    async fn cancel(
        &self,
        id: &str,
        by: &Origin,
        reason: &str,
        now: i64,
    ) -> R<Option<(Command, HistoryEntry)>> {
        let queued = [CommandState::Queued];
        let to = CommandState::Cancelled;
        self.move_state(id, &queued, to, Some(reason), Some(by), now)
            .await
    }

    async fn create_batch(
        &self,
        batch_id: &str,
        news: Vec<NewCommand>,
        now: i64,
    ) -> R<Option<Vec<R<Created>>>> {
        let mut conn = self.writer.lock().await;
        // the one writer holds its lock from this read to the commit
        let known: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM commands WHERE batch_id = ? LIMIT 1")
                .bind(batch_id)
                .fetch_optional(&mut *conn)
                .await?;
        if known.is_some() {
            return Ok(None);
        }
        let news: Vec<(&NewCommand, i64)> = news.iter().map(|n| (n, now)).collect();
        let outcomes = create_group(&mut conn, &news).await?;
        self.commits.inc();
        Ok(Some(outcomes))
    }

    async fn batch_counts(&self, batch_id: &str) -> R<Vec<(CommandState, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM commands WHERE batch_id = ? GROUP BY state",
        )
        .bind(batch_id)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|(state, n)| {
                let s = CommandState::from_name(&state).ok_or(StoreError::Corrupt(state))?;
                Ok((s, n as u64))
            })
            .collect()
    }

    async fn batch_devices(&self, batch_id: &str) -> R<Vec<DeviceId>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT device FROM commands WHERE batch_id = ? ORDER BY device")
                .bind(batch_id)
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|d| DeviceId::parse_path(d).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    async fn by_network_ref(&self, network_ref: &str) -> R<Vec<Command>> {
        let rows = sqlx::query(select_commands!("WHERE network_ref = ? ORDER BY rowid"))
            .bind(network_ref)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(row_to_command).collect()
    }

    async fn unconfirmed_handovers(&self, before: i64) -> R<Vec<(DeviceId, String)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT device, network_ref FROM commands WHERE state = 'scheduled' \
             AND updated_at < ? AND network_ref IS NOT NULL AND device LIKE 'lorawan/%'",
        )
        .bind(before)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(d, r)| Some((DeviceId::parse_path(&d).ok()?, r)))
            .collect())
    }

    async fn by_counter(&self, device: &DeviceId, counter: u16) -> R<Option<Command>> {
        let row = sqlx::query(select_commands!(
            "WHERE device = ? AND counter = ? ORDER BY created_at DESC, rowid DESC LIMIT 1"
        ))
        .bind(device.to_string())
        .bind(counter as i64)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(row_to_command).transpose()
    }

    async fn expire_due(&self, now: i64) -> R<Vec<(Command, HistoryEntry)>> {
        let rows = sqlx::query(concat!(
            "UPDATE commands SET state = 'expired', reason = ?, updated_at = ? WHERE state = 'queued' AND expires_at <= ? RETURNING ",
            cols!()
        ))
        .bind(EXPIRED_REASON)
        .bind(now)
        .bind(now)
        .fetch_all(&mut *self.writer.lock().await)
        .await?;
        changed(&rows, now)
    }

    async fn devices_with_open_commands(&self) -> R<Vec<DeviceId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT device FROM commands WHERE state IN ('queued', 'scheduled', 'sent', 'delivered')",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|d| DeviceId::parse_path(d).ok())
            .collect())
    }

    async fn pending_count(&self, device: &DeviceId) -> R<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE device = ? AND state IN ('queued', 'scheduled', 'sent')")
            .bind(device.to_string())
            .fetch_one(&self.reader)
            .await?;
        Ok(n as u64)
    }

    fn journal_path(&self) -> Option<std::path::PathBuf> {
        let file = self.file.as_ref()?;
        let mut name = file.file_name()?.to_owned();
        name.push("-windows");
        Some(file.with_file_name(name))
    }

    async fn maintain(&self) {
        // PASSIVE: copies what no reader still needs, never waits for the writer
        let r = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut *self.checkpointer.lock().await)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }

    async fn events_confirmed_through(&self) -> R<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT value FROM bridge_meta WHERE key = 'events_confirmed_through'",
        )
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn set_events_confirmed_through(&self, at: i64) -> R<()> {
        sqlx::query(
            "INSERT INTO bridge_meta (key, value) VALUES ('events_confirmed_through', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        )
        .bind(at)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    async fn history_since(&self, at: i64) -> R<Vec<(Command, HistoryEntry)>> {
        let rows = sqlx::query(concat!(
            "SELECT h.state AS h_state, h.at AS h_at, h.reason AS h_reason, h.attempt AS h_attempt, h.origin AS h_origin, ",
            "c.id AS id, c.device AS device, c.body AS body, c.counter AS counter, c.confirmed AS confirmed, ",
            "c.state AS state, c.attempts AS attempts, c.created_at AS created_at, c.expires_at AS expires_at, ",
            "c.network_ref AS network_ref, c.reason AS reason, c.origin AS origin, c.batch_id AS batch_id ",
            "FROM command_history h JOIN commands c ON c.id = h.command_id ",
            "WHERE h.at >= ? ORDER BY h.at, h.rowid"
        ))
        .bind(at)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("h_state")?;
                let entry = HistoryEntry {
                    state: CommandState::from_name(&state)
                        .ok_or_else(|| StoreError::Corrupt(state.clone()))?,
                    at: row.try_get("h_at")?,
                    reason: row.try_get("h_reason")?,
                    attempt: row
                        .try_get::<Option<i64>, _>("h_attempt")?
                        .map(|a| a as u32),
                    origin: stored_origin(row.try_get("h_origin")?),
                };
                Ok((row_to_command(row)?, entry))
            })
            .collect()
    }

    async fn ping(&self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut *self.writer.lock().await)
            .await
            .is_ok()
    }
}

impl SqliteStore {
    async fn write_device_facts(&self, facts: &[(DeviceId, String, DeviceClass)]) -> R<()> {
        let rows: Vec<(String, &str, &str)> = facts
            .iter()
            .map(|(d, a, c)| (d.to_string(), a.as_str(), c.as_str()))
            .collect();
        let json = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // `WHERE true`: SQLite's upsert after a SELECT needs it to parse
        sqlx::query(
            "INSERT INTO devices (device, next_counter, application_id, class) \
             SELECT value ->> 0, 1, value ->> 1, value ->> 2 FROM json_each(?) WHERE true \
             ON CONFLICT (device) DO UPDATE SET application_id = excluded.application_id, class = excluded.class",
        )
        .bind(json)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    async fn read_device_facts(
        &self,
        devices: &[DeviceId],
    ) -> R<Vec<(DeviceId, String, DeviceClass)>> {
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let json = serde_json::to_string(&names).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT device, application_id, class FROM devices \
             WHERE device IN (SELECT value FROM json_each(?)) \
             AND application_id IS NOT NULL AND class IS NOT NULL",
        )
        .bind(json)
        .fetch_all(&self.reader)
        .await?;
        let mut facts = Vec::with_capacity(rows.len());
        for r in rows {
            let device: String = r.try_get("device")?;
            let app: String = r.try_get("application_id")?;
            let class: String = r.try_get("class")?;
            let device = DeviceId::parse_path(&device)
                .map_err(|e| StoreError::Corrupt(format!("devices.device \"{device}\": {e}")))?;
            let class = DeviceClass::from_letter(&class).ok_or_else(|| {
                StoreError::Corrupt(format!("devices.class of {device}: \"{class}\""))
            })?;
            facts.push((device, app, class));
        }
        Ok(facts)
    }

    /// `key`: a device (`{network}/{id}`), or a quota of no device (`quota/{name}`, a
    /// row of its own in `devices` that no device id can name).
    async fn take_quota(&self, key: String, day: i64, limit: u32) -> R<bool> {
        // one statement: reset on a new day, count up while under the limit
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO devices (device, next_counter, quota_day, quota_used) VALUES (?1, 1, ?2, 1) \
             ON CONFLICT (device) DO UPDATE SET \
                 quota_used = CASE WHEN quota_day IS ?2 THEN quota_used + 1 ELSE 1 END, quota_day = ?2 \
             WHERE quota_day IS NOT ?2 OR quota_used < ?3 \
             RETURNING quota_used",
        )
        .bind(key)
        .bind(day)
        .bind(limit as i64)
        .fetch_optional(&mut *self.writer.lock().await)
        .await?;
        Ok(taken.is_some_and(|used| used <= limit as i64))
    }

    async fn advance_counter(&self, device: &DeviceId, counter: u32) -> R<bool> {
        // one statement: only a counter above the stored one moves it
        let moved: Option<i64> = sqlx::query_scalar(
            "INSERT INTO devices (device, next_counter, request_counter) VALUES (?1, 1, ?2) \
             ON CONFLICT (device) DO UPDATE SET request_counter = ?2 \
             WHERE request_counter IS NULL OR request_counter < ?2 \
             RETURNING request_counter",
        )
        .bind(device.to_string())
        .bind(counter as i64)
        .fetch_optional(&mut *self.writer.lock().await)
        .await?;
        Ok(moved.is_some())
    }

    async fn advance_sms(&self, device: &DeviceId, counter: u32) -> R<bool> {
        // read and write under the one writer: nothing else moves the window between
        let mut writer = self.writer.lock().await;
        let row: Option<(Option<i64>, i64)> =
            sqlx::query_as("SELECT sms_counter, sms_seen FROM devices WHERE device = ?")
                .bind(device.to_string())
                .fetch_optional(&mut *writer)
                .await?;
        let (highest, seen) = row.map_or((None, 0), |(h, s)| (h.map(|h| h as u32), s as u32));
        let Some((highest, seen)) = sms_window(highest, seen, counter) else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO devices (device, next_counter, sms_counter, sms_seen) VALUES (?1, 1, ?2, ?3) \
             ON CONFLICT (device) DO UPDATE SET sms_counter = ?2, sms_seen = ?3",
        )
        .bind(device.to_string())
        .bind(highest as i64)
        .bind(seen as i64)
        .execute(&mut *writer)
        .await?;
        Ok(true)
    }

    async fn return_quota(&self, key: String, day: i64) -> R<()> {
        sqlx::query("UPDATE devices SET quota_used = MAX(quota_used - 1, 0) WHERE device = ? AND quota_day = ?")
            .bind(key)
            .bind(day)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }
}

/// The SMS request window: the highest counter and which of the 32 below it arrived
/// (bit i: highest − i). `None`: `counter` arrived before, or is older than the window.
fn sms_window(highest: Option<u32>, seen: u32, counter: u32) -> Option<(u32, u32)> {
    match highest {
        None => Some((counter, 1)),
        Some(h) if counter > h => {
            let shift = counter - h;
            Some((counter, seen.checked_shl(shift).unwrap_or(0) | 1))
        }
        Some(h) => {
            let bit = 1u32.checked_shl(h - counter)?;
            (seen & bit == 0).then_some((h, seen | bit))
        }
    }
}

impl DeviceFacts for SqliteStore {
    fn set_device_facts<'a>(
        &'a self,
        facts: &'a [(DeviceId, String, DeviceClass)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.write_device_facts(facts))
    }

    fn device_facts<'a>(
        &'a self,
        devices: &'a [DeviceId],
    ) -> StoreFuture<'a, Vec<(DeviceId, String, DeviceClass)>> {
        Box::pin(self.read_device_facts(devices))
    }
}

impl GroupMembers for SqliteStore {
    fn group_members(&self) -> StoreFuture<'_, Vec<(String, DeviceId, String)>> {
        Box::pin(async move {
            let rows: Vec<(String, String, String)> =
                sqlx::query_as("SELECT group_name, device, source FROM group_members")
                    .fetch_all(&self.reader)
                    .await?;
            rows.into_iter()
                .map(|(g, d, s)| {
                    let d =
                        DeviceId::parse_path(&d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Ok((g, d, s))
                })
                .collect()
        })
    }

    fn set_group_member<'a>(
        &'a self,
        group: &'a str,
        device: &'a DeviceId,
        source: &'a str,
        present: bool,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let sql = if present {
                "INSERT INTO group_members (group_name, device, source) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM group_members WHERE group_name = ? AND device = ? AND source = ?"
            };
            sqlx::query(sql)
                .bind(group)
                .bind(device.to_string())
                .bind(source)
                .execute(&mut *self.writer.lock().await)
                .await?;
            Ok(())
        })
    }
}

impl Quotas for SqliteStore {
    fn take_daily_quota<'a>(
        &'a self,
        device: &'a DeviceId,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.take_quota(device.to_string(), day, limit))
    }

    fn return_daily_quota<'a>(&'a self, device: &'a DeviceId, day: i64) -> StoreFuture<'a, ()> {
        Box::pin(self.return_quota(device.to_string(), day))
    }

    fn take_shared_quota<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.take_quota(format!("quota/{name}"), day, limit))
    }

    fn return_shared_quota<'a>(&'a self, name: &'a str, day: i64) -> StoreFuture<'a, ()> {
        Box::pin(self.return_quota(format!("quota/{name}"), day))
    }
}

impl RequestCounters for SqliteStore {
    fn advance_request_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        counter: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.advance_counter(device, counter))
    }

    fn advance_sms_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        counter: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.advance_sms(device, counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_node::Command as C;

    #[tokio::test]
    async fn a_request_counter_only_moves_up() {
        let (s, _dir) = store().await;
        let d = DeviceId::parse("cellular", "cafe01").unwrap();
        assert!(s.advance_request_counter(&d, 5).await.unwrap());
        assert!(!s.advance_request_counter(&d, 5).await.unwrap());
        assert!(!s.advance_request_counter(&d, 4).await.unwrap());
        assert!(s.advance_request_counter(&d, 6).await.unwrap());
        assert!(s.advance_request_counter(&d, u32::MAX).await.unwrap());
        let other = DeviceId::parse("cellular", "cafe02").unwrap();
        assert!(s.advance_request_counter(&other, 1).await.unwrap());
        // an SMS's counter is checked apart: a late SMS is not a replay of a later poll;
        // SMS overtaking each other are taken once each, within 32 counters
        assert!(s.advance_sms_counter(&d, 3).await.unwrap());
        assert!(!s.advance_sms_counter(&d, 3).await.unwrap());
        assert!(s.advance_sms_counter(&d, 9).await.unwrap());
        assert!(
            s.advance_sms_counter(&d, 7).await.unwrap(),
            "overtaken by 9"
        );
        assert!(!s.advance_sms_counter(&d, 7).await.unwrap());
        assert!(!s.advance_sms_counter(&d, 9).await.unwrap());
        assert!(s.advance_sms_counter(&d, 40).await.unwrap());
        assert!(
            s.advance_sms_counter(&d, 10).await.unwrap(),
            "30 below, never seen: taken"
        );
        assert!(
            !s.advance_sms_counter(&d, 9).await.unwrap(),
            "31 below, seen: still remembered"
        );
        assert!(
            !s.advance_sms_counter(&d, 8).await.unwrap(),
            "32 below: too old"
        );
    }

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bridge.db", dir.path().display());
        (SqliteStore::open(&url).await.unwrap(), dir)
    }

    fn dev(id: &str) -> DeviceId {
        DeviceId::parse("lorawan", id).unwrap()
    }

    fn new(device: &DeviceId, command: C, id: Option<&str>) -> NewCommand {
        NewCommand {
            id: id.map(Into::into),
            device: device.clone(),
            command,
            confirmed: true,
            ttl_ms: 60_000,
            origin: Origin::Token("test".into()),
            batch_id: None,
        }
    }

    #[tokio::test]
    async fn counters_increase_per_device_and_ids_are_idempotent() {
        let (s, _dir) = store().await;
        let a = dev("0000000000000001");
        let b = dev("0000000000000002");
        let Created::New(c1, e, 1) = s.create(new(&a, C::Locate, None), 1000).await.unwrap() else {
            panic!()
        };
        assert_eq!((c1.counter, e.state), (1, CommandState::Queued));
        let Created::New(c2, _, 2) = s.create(new(&a, C::Lock, Some("k1")), 1001).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(c2.counter, 2);
        let Created::New(c3, _, 1) = s.create(new(&b, C::Lock, None), 1002).await.unwrap() else {
            panic!()
        };
        assert_eq!(c3.counter, 1, "counters are per device");
        let Created::Existing(again) = s.create(new(&a, C::Lock, Some("k1")), 1003).await.unwrap()
        else {
            panic!("the same id twice created two commands")
        };
        assert_eq!(again, c2);
        assert!(matches!(
            s.create(new(&b, C::Lock, Some("k1")), 1004).await,
            Err(StoreError::IdConflict { .. })
        ));
        // the same id for another command of the same device is refused, not answered
        // with the stored one
        assert!(matches!(
            s.create(new(&a, C::Reboot { delay_s: 1 }, Some("k1")), 1005)
                .await,
            Err(StoreError::IdReused { .. })
        ));
        assert_eq!(s.pending_count(&a).await.unwrap(), 2);
    }

    /// A store counting its creation commits.
    async fn counting_store() -> (SqliteStore, Counter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bridge.db", dir.path().display());
        let commits = Counter::default();
        let s = SqliteStore::open_counting(&url, commits.clone()).await;
        (s.unwrap(), commits, dir)
    }

    /// Every future's output, in order; each is first polled in order, in one pass.
    async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
        use std::task::Poll;
        let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut all = true;
            for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
                if out.is_none() {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => *out = Some(v),
                        Poll::Pending => all = false,
                    }
                }
            }
            if all { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        outputs.into_iter().map(Option::unwrap).collect()
    }

    // The tests below run on tokio's current-thread runtime: `join_all` sends every
    // creation before the commit task first runs, so they all arrive as one group.

    #[tokio::test]
    async fn creations_arriving_together_share_one_commit_and_keep_every_rule() {
        let (s, commits, dir) = counting_store().await;
        let a = dev("0000000000000001");
        let b = dev("0000000000000002");
        let mut news: Vec<NewCommand> = (0..40).map(|_| new(&a, C::Locate, None)).collect();
        news.push(new(&a, C::Lock, Some("k1")));
        // the same id again in the same group: the command stored a moment before
        news.push(new(&a, C::Lock, Some("k1")));
        // the same id for another device: refused, and nothing else is
        news.push(new(&b, C::Lock, Some("k1")));
        news.push(new(&b, C::Lock, None));
        let outcomes = join_all(news.into_iter().map(|n| s.create(n, 1000))).await;
        assert_eq!(
            commits.get(),
            1,
            "44 creations arriving together took {} commits",
            commits.get()
        );

        // the device's pending count as the group's transaction saw it: all 41
        let counters: Vec<u16> = outcomes[..41]
            .iter()
            .map(|o| match o {
                Ok(Created::New(c, _, 41)) => c.counter,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            counters,
            (1..=41).collect::<Vec<u16>>(),
            "counters in arrival order"
        );
        let Ok(Created::Existing(again)) = &outcomes[41] else {
            panic!("{:?}", outcomes[41])
        };
        assert_eq!((again.id.as_str(), again.counter), ("k1", 41));
        assert!(matches!(&outcomes[42], Err(StoreError::IdConflict { .. })));
        let Ok(Created::New(lone, _, 1)) = &outcomes[43] else {
            panic!("{:?}", outcomes[43])
        };
        assert_eq!(lone.counter, 1);

        // on disk: reopened, every stored command is there
        drop(s);
        let url = format!("sqlite://{}/bridge.db", dir.path().display());
        let s = SqliteStore::open(&url).await.unwrap();
        assert_eq!(s.pending_count(&a).await.unwrap(), 41);
        assert_eq!(s.pending_count(&b).await.unwrap(), 1);
        assert_eq!(s.get("k1").await.unwrap().unwrap().0.command, C::Lock);
    }

    #[tokio::test]
    async fn counters_wrap_at_65536_inside_a_group_and_go_on_after_it() {
        let (s, commits, _dir) = counting_store().await;
        let a = dev("0000000000000001");
        sqlx::query("INSERT INTO devices (device, next_counter) VALUES (?, 65534)")
            .bind(a.to_string())
            .execute(&mut *s.writer.lock().await)
            .await
            .unwrap();
        let counter = |o: &R<Created>| match o {
            Ok(Created::New(c, _, _)) => c.counter,
            other => panic!("{other:?}"),
        };
        let group = join_all((0..4).map(|_| s.create(new(&a, C::Locate, None), 1000))).await;
        assert_eq!(commits.get(), 1);
        let counters: Vec<u16> = group.iter().map(counter).collect();
        assert_eq!(counters, [65534, 65535, 0, 1]);
        let after = s.create(new(&a, C::Locate, None), 1001).await;
        assert_eq!(counter(&after), 2);
    }

    #[tokio::test]
    async fn a_creation_the_database_refuses_fails_alone() {
        let (s, commits, _dir) = counting_store().await;
        // a database error for one id only, raised inside the group's transaction
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON commands WHEN NEW.id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned command'); END",
        )
        .execute(&mut *s.writer.lock().await)
        .await
        .unwrap();
        let a = dev("0000000000000001");
        let ids = ["c1", "c2", "poison", "c3"];
        let creations = ids
            .iter()
            .map(|id| s.create(new(&a, C::Locate, Some(id)), 1000));
        let outcomes = join_all(creations).await;
        let Err(StoreError::Db(e)) = &outcomes[2] else {
            panic!("{:?}", outcomes[2])
        };
        assert!(e.to_string().contains("poisoned command"), "{e}");
        // one by one: each counts the device's pending commands after itself
        for (i, id, pending) in [(0, "c1", 1), (1, "c2", 2), (3, "c3", 3)] {
            let Ok(Created::New(c, _, n)) = &outcomes[i] else {
                panic!("{id}: {:?}", outcomes[i])
            };
            assert_eq!((c.id.as_str(), *n), (id, pending));
            assert!(s.get(id).await.unwrap().is_some(), "{id} is not stored");
        }
        assert!(s.get("poison").await.unwrap().is_none());
        // the group failed as a whole, then each was committed alone
        assert_eq!(commits.get(), 3);
        assert_eq!(s.pending_count(&a).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_journal_entry_moves_only_commands_unchanged_since_its_window() {
        let (s, _dir) = store().await;
        let a = dev("0000000000000001");
        s.create(new(&a, C::Locate, Some("nacked")), 1000)
            .await
            .unwrap();
        s.create(new(&a, C::Lock, Some("lost")), 1000)
            .await
            .unwrap();
        let pair = |id: &str| [(id.to_owned(), id.to_owned())];
        // "nacked": its window was stored, then a NACK put it back in the queue
        s.mark_scheduled(&pair("nacked"), 2000).await.unwrap();
        let back = [CommandState::Scheduled];
        s.transition("nacked", &back, CommandState::Queued, None, 3000)
            .await
            .unwrap()
            .unwrap();
        assert!(
            s.replay_scheduled(&pair("nacked"), 2000)
                .await
                .unwrap()
                .is_empty(),
            "a stale journal entry moved a command queued again after its window"
        );
        // "lost": its window was handed over and never stored
        let done = s.replay_scheduled(&pair("lost"), 2500).await.unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].0.state, done[0].1.at),
            (CommandState::Scheduled, 2500)
        );
        assert!(
            s.replay_scheduled(&pair("lost"), 2600)
                .await
                .unwrap()
                .is_empty(),
            "applied twice"
        );
        let (nacked, _) = s.get("nacked").await.unwrap().unwrap();
        assert_eq!(nacked.state, CommandState::Queued);
    }

    #[tokio::test]
    async fn device_facts_are_read_for_many_devices_at_once() {
        let (s, _dir) = store().await;
        let (a, b, c) = (
            dev("70b3d57e00000001"),
            dev("70b3d57e00000002"),
            dev("70b3d57e00000003"),
        );
        s.set_device_facts(&[
            (a.clone(), "app-1".into(), DeviceClass::C),
            (b.clone(), "app-2".into(), DeviceClass::A),
        ])
        .await
        .unwrap();
        let mut got = s.device_facts(&[a.clone(), b.clone(), c]).await.unwrap();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                (a, "app-1".to_owned(), DeviceClass::C),
                (b, "app-2".to_owned(), DeviceClass::A)
            ]
        );
        assert!(s.device_facts(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn queued_commands_load_and_scheduling_is_guarded_by_state() {
        let (s, _dir) = store().await;
        let a = dev("0000000000000001");
        let b = dev("0000000000000002");
        for (d, c, id) in [
            (&a, C::Locate, "locate"),
            (&a, C::Unlock { auto_relock_s: 0 }, "unlock"),
            (&b, C::Lock, "lock"),
        ] {
            s.create(new(d, c, Some(id)), 1000).await.unwrap();
        }
        let q = s.queued_commands().await.unwrap();
        let mut ids: Vec<(&str, bool)> = q
            .iter()
            .map(|c| (c.command.id.as_str(), c.urgent))
            .collect();
        ids.sort();
        assert_eq!(ids, [("locate", false), ("lock", true), ("unlock", true)]);
        assert!(q.iter().all(|c| c.seq > 0));

        s.transition(
            "lock",
            &[CommandState::Queued],
            CommandState::Cancelled,
            None,
            1500,
        )
        .await
        .unwrap();
        let taken = [
            ("unlock".to_owned(), "unlock".to_owned()),
            ("locate".to_owned(), "unlock".to_owned()),
            ("lock".to_owned(), "lock".to_owned()),
        ];
        let done = s.mark_scheduled(&taken, 2000).await.unwrap();
        let mut ids: Vec<&str> = done.iter().map(|(c, _)| c.id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["locate", "unlock"],
            "a cancelled command stays cancelled"
        );
        assert!(done.iter().all(|(c, e)| c.state == CommandState::Scheduled
            && c.network_ref.as_deref() == Some("unlock")
            && c.attempts == 1
            && e.attempt == Some(1)));
        assert!(
            s.mark_scheduled(&taken, 2001).await.unwrap().is_empty(),
            "only queued commands move"
        );
        assert_eq!(s.by_network_ref("unlock").await.unwrap().len(), 2);
        assert!(s.queued_commands().await.unwrap().is_empty());
        let (_, history) = s.get("locate").await.unwrap().unwrap();
        assert_eq!(
            history.iter().map(|h| h.state).collect::<Vec<_>>(),
            [CommandState::Queued, CommandState::Scheduled]
        );
    }

    #[tokio::test]
    async fn transitions_are_guarded_and_kept_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/bridge.db", dir.path().display());
        let a = dev("0000000000000001");
        {
            let s = SqliteStore::open(&url).await.unwrap();
            s.create(new(&a, C::Lock, Some("x")), 1).await.unwrap();
            assert!(
                s.transition("x", &[CommandState::Scheduled], CommandState::Sent, None, 2)
                    .await
                    .unwrap()
                    .is_none()
            );
            let (c, e) = s
                .transition(
                    "x",
                    &[CommandState::Queued],
                    CommandState::Cancelled,
                    Some("by the API"),
                    3,
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (c.state, e.reason.as_deref()),
                (CommandState::Cancelled, Some("by the API"))
            );
        }
        let s = SqliteStore::open(&url).await.unwrap();
        let (c, history) = s.get("x").await.unwrap().unwrap();
        assert_eq!(c.state, CommandState::Cancelled);
        assert_eq!(history.len(), 2);
        assert_eq!(
            s.list(&a, Some(CommandState::Cancelled), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            s.list(&a, Some(CommandState::Queued), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn daily_quota() {
        let (s, _dir) = store().await;
        let d = DeviceId::parse("sigfox", "1a2b3c").unwrap();
        assert!(s.take_daily_quota(&d, 100, 2).await.unwrap());
        assert!(s.take_daily_quota(&d, 100, 2).await.unwrap());
        assert!(!s.take_daily_quota(&d, 100, 2).await.unwrap());
        s.return_daily_quota(&d, 100).await.unwrap();
        assert!(s.take_daily_quota(&d, 100, 2).await.unwrap());
        assert!(
            s.take_daily_quota(&d, 101, 2).await.unwrap(),
            "a new day, a new quota"
        );
    }
}
