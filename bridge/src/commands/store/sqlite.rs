//! The SQLite store: every trait of [`super`] on one database file.
use super::common::{
    Columns, Creations, EXPIRED_REASON, GroupWriter, PendingCreation, body_of, changed,
    command_from, device_of, devices_of, entry_of, given_ids, group_commits, history_from,
    sms_window,
};
use super::{CommandStore, Created, NewCommand, QueuedCommand, R, StoreError};
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
    (
        1,
        include_str!("../../../migrations/sqlite/0001_commands.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_scheduled_by_time.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_events_owed.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_request_counters.sql"),
    ),
    (5, include_str!("../../../migrations/sqlite/0005_sms.sql")),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_operators.sql"),
    ),
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
                "storage.url: \"{url}\" is not an sqlite:// URL"
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

/// The columns [`command_from`] reads, as a literal so statements stay static strings.
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

impl Columns for SqliteRow {
    fn text(&self, col: &str) -> R<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> R<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> R<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> R<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> R<bool> {
        Ok(self.try_get::<i64, _>(col)? != 0)
    }
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`.
fn id_list(ids: &[&str]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

impl GroupWriter for Arc<tokio::sync::Mutex<SqliteConnection>> {
    async fn commit_group(&self, news: &[(&NewCommand, i64)]) -> R<Vec<R<Created>>> {
        create_group(&mut *self.lock().await, news).await
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
    let ids = given_ids(news);
    let mut stored: HashMap<String, Command> = HashMap::new();
    if !ids.is_empty() {
        let rows = sqlx::query(select_commands!(
            "WHERE id IN (SELECT value FROM json_each(?))"
        ))
        .bind(id_list(&ids))
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let c = command_from(row)?;
            stored.insert(c.id.clone(), c);
        }
    }
    let mut group = Creations::plan(news, &stored);
    let mut pending: HashMap<String, u64> = HashMap::new();
    if !group.fresh.is_empty() {
        // counters: n for a device takes the stored next one and the n - 1 after it (1
        // for a device never commanded); `excluded.next_counter` is 1 + n
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO devices (device, next_counter) \
             SELECT value ->> 0, 1 + (value ->> 1) FROM json_each(?1) WHERE true \
             ON CONFLICT (device) DO UPDATE \
             SET next_counter = (devices.next_counter + excluded.next_counter - 1) % 65536 \
             RETURNING device, next_counter",
        )
        .bind(
            serde_json::to_string(&group.wanted())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )
        .fetch_all(&mut *tx)
        .await?;
        group.number(&rows)?;
        let mut rows_json = Vec::with_capacity(group.fresh.len());
        for cmd in &group.fresh {
            rows_json.push(serde_json::json!([
                cmd.id,
                cmd.device.to_string(),
                body_of(cmd)?,
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
        let devices: Vec<&str> = group.per_device.keys().map(String::as_str).collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT device, COUNT(*) AS n FROM commands \
             WHERE device IN (SELECT value FROM json_each(?)) \
             AND state IN ('queued', 'scheduled', 'sent') GROUP BY device",
        )
        .bind(id_list(&devices))
        .fetch_all(&mut *tx)
        .await?;
        pending.extend(rows.into_iter().map(|(d, n)| (d, n as u64)));
    }
    tx.commit().await?;
    Ok(group.outcomes(&pending))
}

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
        let cmd = command_from(&row)?;
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
        let cmd = command_from(&row)?;
        let rows = sqlx::query("SELECT state, at, reason, attempt, origin FROM command_history WHERE command_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&self.reader)
            .await?;
        let history = rows
            .iter()
            .map(|r| history_from(r, ""))
            .collect::<R<Vec<_>>>()?;
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
        rows.iter().map(command_from).collect()
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
        rows.iter().map(command_from).collect()
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
                    command: command_from(row)?,
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
        devices_of(rows)
    }

    async fn by_network_ref(&self, network_ref: &str) -> R<Vec<Command>> {
        let rows = sqlx::query(select_commands!("WHERE network_ref = ? ORDER BY rowid"))
            .bind(network_ref)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(command_from).collect()
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
        row.as_ref().map(command_from).transpose()
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
                let entry = history_from(row, "h_")?;
                Ok((command_from(row)?, entry))
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
    /// Runs `sql` as it is on the writer (tests set up what no API call does).
    #[cfg(test)]
    pub(crate) async fn execute(&self, sql: &str) -> R<()> {
        use sqlx::Executor;
        let mut w = self.writer.lock().await;
        w.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())))
            .await?;
        Ok(())
    }

    pub(super) async fn write_device_facts(
        &self,
        facts: &[(DeviceId, String, DeviceClass)],
    ) -> R<()> {
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

    pub(super) async fn read_device_facts(
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
    pub(super) async fn take_quota(&self, key: String, day: i64, limit: u32) -> R<bool> {
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

    pub(super) async fn advance_counter(&self, device: &DeviceId, counter: u32) -> R<bool> {
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

    pub(super) async fn advance_sms(&self, device: &DeviceId, counter: u32) -> R<bool> {
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

    pub(super) async fn return_quota(&self, key: String, day: i64) -> R<()> {
        sqlx::query("UPDATE devices SET quota_used = MAX(quota_used - 1, 0) WHERE device = ? AND quota_day = ?")
            .bind(key)
            .bind(day)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }
}

impl SqliteStore {
    /// Every stored group membership: (group, device, source).
    pub(super) async fn read_group_members(&self) -> R<Vec<(String, DeviceId, String)>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT group_name, device, source FROM group_members")
                .fetch_all(&self.reader)
                .await?;
        rows.into_iter()
            .map(|(g, d, s)| Ok((g, device_of(&d)?, s)))
            .collect()
    }

    /// Adds (`present`) or removes a membership from one source.
    pub(super) async fn write_group_member(
        &self,
        group: &str,
        device: &DeviceId,
        source: &str,
        present: bool,
    ) -> R<()> {
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
    }
}
