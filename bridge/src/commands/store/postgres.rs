//! The PostgreSQL store: every trait of [`super`] on one PostgreSQL database, shared by
//! an active bridge and its standby (docs/deployment.md).
//!
//! As with SQLite, one writer at a time: every write takes [`PgStore::writer`] and runs
//! as one statement (creations: one transaction per group), so that creations, windows
//! and state changes of one bridge never wait on each other's row locks or deadlock;
//! reads go to the pool. Creations commit with `synchronous_commit = on` (on the
//! server's disk before their `202`), everything else with `off` (on the server, where
//! a standby reads it, when the statement returns), as the SQLite store's `FULL` and
//! `NORMAL`. There is no window journal: a window waits for its store write (see
//! docs/architecture.md, "With PostgreSQL, a window is in the database before its
//! hand-over").
//!
//! Which bridge is active is decided by a session-level advisory lock, held by a
//! session of its own ([`PgStore::wait_for_lock`], [`PgStore::watch_lock`]).
use super::common::{
    Columns, Creations, EXPIRED_REASON, GroupWriter, PendingCreation, body_of, changed,
    command_from, device_of, devices_of, entry_of, given_ids, group_commits, history_from,
    sms_window,
};
use super::{CommandStore, Created, NewCommand, QueuedCommand, R, StoreError};
use crate::commands::model::{Command, CommandState, HistoryEntry, Origin};
use crate::device::{DeviceClass, DeviceId, Network};
use prometheus_client::metrics::counter::Counter;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../../migrations/postgres/0001_schema.sql"),
)];

/// The advisory lock the active bridge holds ("longprot" in ASCII). Advisory locks are
/// per database: one active bridge per database.
pub const LOCK_KEY: i64 = 0x6c6f_6e67_7072_6f74;

/// How often the active bridge checks its lock session, and the standby tries the lock.
pub const LOCK_POLL: Duration = Duration::from_millis(250);

/// An active bridge whose lock session has not answered for this long stops at once.
/// PostgreSQL ends a silent session only after [`SERVER_RELEASE`], and only then can
/// another bridge take the lock.
pub const LEASE: Duration = Duration::from_millis(1500);

/// How soon PostgreSQL ends the lock session of a bridge that went silent (host lost,
/// network cut), from the session's keepalive settings below: 2 s idle, then two probes
/// 1 s apart; 4 s without an acknowledgement of what it sent.
pub const SERVER_RELEASE: Duration = Duration::from_secs(4);

/// Every column of `commands` [`command_from`] reads, qualified by `c`.
macro_rules! c_cols {
    () => {
        "c.id AS id, c.device AS device, c.body AS body, c.counter AS counter, \
         c.confirmed AS confirmed, c.state AS state, c.attempts AS attempts, \
         c.created_at AS created_at, c.expires_at AS expires_at, c.network_ref AS network_ref, \
         c.reason AS reason, c.origin AS origin, c.batch_id AS batch_id"
    };
}

/// `SELECT <cols> FROM commands c <rest>`.
macro_rules! select_commands {
    ($rest:literal) => {
        concat!("SELECT ", c_cols!(), " FROM commands c ", $rest)
    };
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Taken by every write: one writer at a time, as with SQLite.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The session that holds (or waits for) the advisory lock.
    lock: Arc<tokio::sync::Mutex<Option<PgConnection>>>,
    /// For the lock session (boxed: the options are most of the store's size).
    options: Arc<PgConnectOptions>,
    /// Creations waiting for the next group commit.
    creations: tokio::sync::mpsc::UnboundedSender<PendingCreation>,
    /// Transactions that created commands (a batch's one included).
    commits: Counter,
}

/// The group-commit task's handle on the store.
struct Writer {
    pool: PgPool,
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl GroupWriter for Writer {
    async fn commit_group(&self, news: &[(&NewCommand, i64)]) -> R<Vec<R<Created>>> {
        let _w = self.writer.lock().await;
        create_all(&self.pool, news).await
    }
}

impl Columns for PgRow {
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
        Ok(self.try_get(col)?)
    }
}

impl PgStore {
    /// Connects, takes the lock (waiting while another bridge holds it) and migrates:
    /// a store ready for use, as [`super::SqliteStore::open`] gives.
    pub async fn open(url: &str) -> R<Self> {
        let store = Self::connect(url, Counter::default()).await?;
        store.wait_for_lock(|_| {}).await;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to the database at `url` (`postgres://…`), without taking the lock or
    /// migrating (see [`Self::wait_for_lock`], [`Self::migrate`]).
    pub async fn connect(url: &str, commits: Counter) -> R<Self> {
        // state changes and windows commit without waiting for PostgreSQL's disk, as
        // SQLite's `synchronous = NORMAL`: on the server, where a standby reads them,
        // when the statement returns; creations wait for the disk (`create_all`)
        let options = PgConnectOptions::from_str(url)?
            .application_name("longproto-bridge")
            // notices such as "relation already exists, skipping" are not worth a log line
            .options([
                ("synchronous_commit", "off"),
                ("client_min_messages", "warning"),
            ])
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            // no ping before each statement: a connection that broke fails its statement,
            // which its caller retries or answers 503 for, and is not handed out again
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let (creations, pending) = tokio::sync::mpsc::unbounded_channel();
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        tokio::spawn(group_commits(
            Writer {
                pool: pool.clone(),
                writer: writer.clone(),
            },
            pending,
            commits.clone(),
        ));
        Ok(PgStore {
            pool,
            writer,
            lock: Arc::new(tokio::sync::Mutex::new(None)),
            options: Arc::new(options),
            creations,
            commits,
        })
    }

    /// A new lock session: PostgreSQL ends it [`SERVER_RELEASE`] after it goes silent.
    async fn lock_session(&self) -> R<PgConnection> {
        let options = PgConnectOptions::clone(&self.options)
            .application_name("longproto-bridge lock")
            .options([
                ("tcp_keepalives_idle", "2"),
                ("tcp_keepalives_interval", "1"),
                ("tcp_keepalives_count", "2"),
                ("tcp_user_timeout", "4000"),
            ]);
        Ok(options.connect().await?)
    }

    /// Tries the lock once on the lock session (opened again if it failed); true when
    /// this bridge holds it now.
    pub async fn try_lock(&self) -> R<bool> {
        let mut session = self.lock.lock().await;
        if session.is_none() {
            *session = Some(self.lock_session().await?);
        }
        let Some(conn) = session.as_mut() else {
            return Ok(false);
        };
        let held = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *conn)
            .await;
        match held {
            Ok(held) => Ok(held),
            Err(e) => {
                *session = None;
                Err(e.into())
            }
        }
    }

    /// Waits until this bridge holds the lock, trying every [`LOCK_POLL`]; `waiting` is
    /// told after each try whether the database answered.
    pub async fn wait_for_lock(&self, waiting: impl Fn(bool)) {
        let mut said = false;
        loop {
            match self.try_lock().await {
                Ok(true) => return,
                Ok(false) => {
                    if !said {
                        tracing::info!(
                            "standby: another bridge holds the lock; taking over when it goes"
                        );
                        said = true;
                    }
                    waiting(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "standby: cannot reach PostgreSQL to try the lock");
                    waiting(false);
                }
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Checks the lock session every [`LOCK_POLL`] while it holds the lock; returns why
    /// as soon as it no longer can be sure it does (an error, or no answer within
    /// [`LEASE`] of the last one): the caller must stop publishing at once.
    pub async fn watch_lock(&self) -> String {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(LOCK_POLL).await;
            let left = LEASE.saturating_sub(last.elapsed());
            let check = async {
                let mut session = self.lock.lock().await;
                let conn = session.as_mut().ok_or(StoreError::Stopped)?;
                let alive = sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(&mut *conn)
                    .await;
                if alive.is_err() {
                    *session = None;
                }
                Ok::<_, StoreError>(alive?)
            };
            match tokio::time::timeout(left, check).await {
                Ok(Ok(_)) => last = Instant::now(),
                Ok(Err(e)) => return format!("the lock session failed: {e}"),
                Err(_) => {
                    return format!(
                        "PostgreSQL has not answered the lock session for {:?}",
                        last.elapsed()
                    );
                }
            }
        }
    }

    /// Applies the migrations not applied yet; call while holding the lock.
    pub async fn migrate(&self) -> R<()> {
        let _w = self.writer.lock().await;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *conn)
            .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if done.is_none() {
                let mut tx = conn.begin().await?;
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version, "store migrated (PostgreSQL)");
            }
        }
        Ok(())
    }

    /// `mark_scheduled`, and with `unchanged_since` only for records older than `now`.
    async fn schedule(
        &self,
        taken: &[(String, String)],
        now: i64,
        unchanged_since: bool,
    ) -> R<Vec<(Command, HistoryEntry)>> {
        let (ids, refs): (Vec<&str>, Vec<&str>) =
            taken.iter().map(|(c, d)| (c.as_str(), d.as_str())).unzip();
        let _w = self.writer.lock().await;
        let rows = sqlx::query(concat!(
            "UPDATE commands c SET state = 'scheduled', attempts = c.attempts + 1, ",
            "network_ref = t.ref, reason = NULL, updated_at = $3 ",
            "FROM UNNEST($1::text[], $2::text[]) AS t(id, ref) ",
            "WHERE c.id = t.id AND c.state = 'queued' AND (NOT $4 OR c.updated_at < $3) ",
            "RETURNING ",
            c_cols!()
        ))
        .bind(ids)
        .bind(refs)
        .bind(now)
        .bind(unchanged_since)
        .fetch_all(&self.pool)
        .await?;
        changed(&rows, now)
    }

    /// Moves a command to `to` if it is in one of `from`; `by`: who asked.
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
        let _w = self.writer.lock().await;
        let row = sqlx::query(concat!(
            "UPDATE commands c SET state = $1, reason = $2, updated_at = $3, ",
            "network_ref = CASE WHEN $1 = 'queued' THEN NULL ELSE c.network_ref END, ",
            "changed_by = COALESCE($6, c.changed_by) ",
            "WHERE c.id = $4 AND c.state = ANY($5) RETURNING ",
            c_cols!()
        ))
        .bind(to.name())
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(from)
        .bind(by.map(Origin::to_stored))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let cmd = command_from(&row)?;
        let mut e = entry_of(&cmd, now);
        e.origin = by.cloned();
        Ok(Some((cmd, e)))
    }

    /// `key`: a device, or a quota of no device (`quota/{name}`).
    pub(super) async fn take_quota(&self, key: String, day: i64, limit: u32) -> R<bool> {
        let _w = self.writer.lock().await;
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO devices (device, next_counter, quota_day, quota_used) VALUES ($1, 1, $2, 1) \
             ON CONFLICT (device) DO UPDATE SET \
                 quota_used = CASE WHEN devices.quota_day IS NOT DISTINCT FROM $2 \
                     THEN devices.quota_used + 1 ELSE 1 END, quota_day = $2 \
             WHERE devices.quota_day IS DISTINCT FROM $2 OR devices.quota_used < $3 \
             RETURNING quota_used",
        )
        .bind(key)
        .bind(day)
        .bind(limit as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some_and(|used| used <= limit as i64))
    }

    pub(super) async fn return_quota(&self, key: String, day: i64) -> R<()> {
        let _w = self.writer.lock().await;
        sqlx::query(
            "UPDATE devices SET quota_used = GREATEST(quota_used - 1, 0) \
             WHERE device = $1 AND quota_day = $2",
        )
        .bind(key)
        .bind(day)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn advance_counter(&self, device: &DeviceId, counter: u32) -> R<bool> {
        let _w = self.writer.lock().await;
        let moved: Option<i64> = sqlx::query_scalar(
            "INSERT INTO devices (device, next_counter, request_counter) VALUES ($1, 1, $2) \
             ON CONFLICT (device) DO UPDATE SET request_counter = $2 \
             WHERE devices.request_counter IS NULL OR devices.request_counter < $2 \
             RETURNING request_counter",
        )
        .bind(device.to_string())
        .bind(counter as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(moved.is_some())
    }

    pub(super) async fn advance_sms(&self, device: &DeviceId, counter: u32) -> R<bool> {
        // read and write under the one writer: nothing else moves the window between
        let _w = self.writer.lock().await;
        let row: Option<(Option<i64>, i64)> =
            sqlx::query_as("SELECT sms_counter, sms_seen FROM devices WHERE device = $1")
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let (highest, seen) = row.map_or((None, 0), |(h, s)| (h.map(|h| h as u32), s as u32));
        let Some((highest, seen)) = sms_window(highest, seen, counter) else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO devices (device, next_counter, sms_counter, sms_seen) VALUES ($1, 1, $2, $3) \
             ON CONFLICT (device) DO UPDATE SET sms_counter = $2, sms_seen = $3",
        )
        .bind(device.to_string())
        .bind(highest as i64)
        .bind(seen as i64)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// Runs `sql` as it is (tests set up what no API call does).
    #[cfg(test)]
    pub(crate) async fn execute(&self, sql: &str) -> R<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Creates `news` in one transaction of five statements however many there are, as
/// the SQLite store does: the ids already stored, the counters of every device (one
/// upsert, in device order so that two transactions cannot deadlock), the commands (one
/// insert; their history rows come from the trigger), the devices' pending counts, and
/// the commit.
async fn create_all(pool: &PgPool, news: &[(&NewCommand, i64)]) -> R<Vec<R<Created>>> {
    let mut tx = pool.begin().await?;
    // a `202` promises the command: on the server's disk before it
    sqlx::query("SET LOCAL synchronous_commit = on")
        .execute(&mut *tx)
        .await?;
    let ids = given_ids(news);
    let mut stored: HashMap<String, Command> = HashMap::new();
    if !ids.is_empty() {
        let rows = sqlx::query(select_commands!("WHERE c.id = ANY($1)"))
            .bind(&ids)
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
        let (devices, counts): (Vec<String>, Vec<i64>) = group
            .wanted()
            .into_iter()
            .map(|(d, n)| (d.to_owned(), n))
            .unzip();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO devices (device, next_counter) \
             SELECT d, 1 + n FROM UNNEST($1::text[], $2::bigint[]) AS t(d, n) ORDER BY d \
             ON CONFLICT (device) DO UPDATE \
             SET next_counter = (devices.next_counter + excluded.next_counter - 1) % 65536 \
             RETURNING device, next_counter",
        )
        .bind(&devices)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?;
        group.number(&rows)?;
        let f = &group.fresh;
        let bodies = f.iter().map(body_of).collect::<R<Vec<String>>>()?;
        sqlx::query(
            "INSERT INTO commands (id, device, body, counter, urgent, confirmed, state, attempts, \
             created_at, expires_at, updated_at, origin, batch_id) \
             SELECT id, device, body, counter, urgent, confirmed, 'queued', 0, created_at, \
             expires_at, created_at, origin, batch_id \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bool[], $6::bool[], \
             $7::bigint[], $8::bigint[], $9::text[], $10::text[]) WITH ORDINALITY \
             AS t(id, device, body, counter, urgent, confirmed, created_at, expires_at, origin, batch_id, n) \
             ORDER BY n",
        )
        .bind(f.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
        .bind(f.iter().map(|c| c.device.to_string()).collect::<Vec<_>>())
        .bind(bodies)
        .bind(f.iter().map(|c| c.counter as i64).collect::<Vec<_>>())
        .bind(f.iter().map(|c| c.command.is_urgent()).collect::<Vec<_>>())
        .bind(f.iter().map(|c| c.confirmed).collect::<Vec<_>>())
        .bind(f.iter().map(|c| c.created_at).collect::<Vec<_>>())
        .bind(f.iter().map(|c| c.expires_at).collect::<Vec<_>>())
        .bind(
            f.iter()
                .map(|c| c.origin.as_ref().map(Origin::to_stored))
                .collect::<Vec<_>>(),
        )
        .bind(f.iter().map(|c| c.batch_id.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT device, COUNT(*) FROM commands WHERE device = ANY($1) \
             AND state IN ('queued', 'scheduled', 'sent') GROUP BY device",
        )
        .bind(&devices)
        .fetch_all(&mut *tx)
        .await?;
        pending.extend(rows.into_iter().map(|(d, n)| (d, n as u64)));
    }
    tx.commit().await?;
    Ok(group.outcomes(&pending))
}

impl CommandStore for PgStore {
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
        let Some(row) = sqlx::query(select_commands!("WHERE c.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let cmd = command_from(&row)?;
        let rows = sqlx::query(
            "SELECT state, at, reason, attempt, origin FROM command_history \
             WHERE command_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
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
            "WHERE c.device = $1 AND ($2::text IS NULL OR c.state = $2) \
             ORDER BY c.created_at DESC, c.seq DESC LIMIT $3"
        ))
        .bind(device.to_string())
        .bind(state.map(|s| s.name()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_from).collect()
    }

    async fn undelivered_before(&self, network: Network, before: i64) -> R<Vec<Command>> {
        let rows = sqlx::query(select_commands!(
            "WHERE c.state IN ('queued', 'scheduled', 'sent') AND c.created_at <= $1 \
             AND starts_with(c.device, $2) ORDER BY c.created_at, c.seq"
        ))
        .bind(before)
        .bind(format!("{}/", network.name()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_from).collect()
    }

    async fn queued_commands(&self) -> R<Vec<QueuedCommand>> {
        let rows = sqlx::query(concat!(
            "SELECT c.urgent AS urgent, c.seq AS seq, ",
            c_cols!(),
            " FROM commands c WHERE c.state = 'queued'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueuedCommand {
                    command: command_from(row)?,
                    urgent: row.flag("urgent")?,
                    seq: row.int("seq")?,
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
        // the writer is held from this read to the commit
        let _w = self.writer.lock().await;
        let known: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM commands WHERE batch_id = $1 LIMIT 1")
                .bind(batch_id)
                .fetch_optional(&self.pool)
                .await?;
        if known.is_some() {
            return Ok(None);
        }
        let news: Vec<(&NewCommand, i64)> = news.iter().map(|n| (n, now)).collect();
        let outcomes = create_all(&self.pool, &news).await?;
        self.commits.inc();
        Ok(Some(outcomes))
    }

    async fn batch_counts(&self, batch_id: &str) -> R<Vec<(CommandState, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM commands WHERE batch_id = $1 GROUP BY state",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(state, n)| {
                let s = CommandState::from_name(&state).ok_or(StoreError::Corrupt(state))?;
                Ok((s, n as u64))
            })
            .collect()
    }

    async fn batch_devices(&self, batch_id: &str) -> R<Vec<DeviceId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT device FROM commands WHERE batch_id = $1 ORDER BY device COLLATE \"C\"",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        devices_of(rows)
    }

    async fn by_network_ref(&self, network_ref: &str) -> R<Vec<Command>> {
        let rows = sqlx::query(select_commands!("WHERE c.network_ref = $1 ORDER BY c.seq"))
            .bind(network_ref)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(command_from).collect()
    }

    async fn unconfirmed_handovers(&self, before: i64) -> R<Vec<(DeviceId, String)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT device, network_ref FROM commands WHERE state = 'scheduled' \
             AND updated_at < $1 AND network_ref IS NOT NULL AND starts_with(device, 'lorawan/')",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(d, r)| Some((DeviceId::parse_path(&d).ok()?, r)))
            .collect())
    }

    async fn by_counter(&self, device: &DeviceId, counter: u16) -> R<Option<Command>> {
        let row = sqlx::query(select_commands!(
            "WHERE c.device = $1 AND c.counter = $2 ORDER BY c.created_at DESC, c.seq DESC LIMIT 1"
        ))
        .bind(device.to_string())
        .bind(counter as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(command_from).transpose()
    }

    async fn expire_due(&self, now: i64) -> R<Vec<(Command, HistoryEntry)>> {
        let _w = self.writer.lock().await;
        let rows = sqlx::query(concat!(
            "UPDATE commands c SET state = 'expired', reason = $1, updated_at = $2 ",
            "WHERE c.state = 'queued' AND c.expires_at <= $2 RETURNING ",
            c_cols!()
        ))
        .bind(EXPIRED_REASON)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        changed(&rows, now)
    }

    async fn devices_with_open_commands(&self) -> R<Vec<DeviceId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT device FROM commands \
             WHERE state IN ('queued', 'scheduled', 'sent', 'delivered')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|d| DeviceId::parse_path(d).ok())
            .collect())
    }

    async fn pending_count(&self, device: &DeviceId) -> R<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM commands WHERE device = $1 \
             AND state IN ('queued', 'scheduled', 'sent')",
        )
        .bind(device.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn events_confirmed_through(&self) -> R<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT value FROM bridge_meta WHERE key = 'events_confirmed_through'",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn set_events_confirmed_through(&self, at: i64) -> R<()> {
        let _w = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO bridge_meta (key, value) VALUES ('events_confirmed_through', $1) \
             ON CONFLICT (key) DO UPDATE SET value = GREATEST(bridge_meta.value, excluded.value)",
        )
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn history_since(&self, at: i64) -> R<Vec<(Command, HistoryEntry)>> {
        let rows = sqlx::query(concat!(
            "SELECT h.state AS h_state, h.at AS h_at, h.reason AS h_reason, ",
            "h.attempt AS h_attempt, h.origin AS h_origin, ",
            c_cols!(),
            " FROM command_history h JOIN commands c ON c.id = h.command_id ",
            "WHERE h.at >= $1 ORDER BY h.at, h.hid"
        ))
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((command_from(row)?, history_from(row, "h_")?)))
            .collect()
    }

    async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    async fn maintain(&self) {
        // PostgreSQL's autovacuum does the housekeeping
    }

    fn journal_path(&self) -> Option<std::path::PathBuf> {
        // the journal would be local to this host: windows wait for the database instead
        None
    }
}

impl PgStore {
    /// Remembers how to reach devices, many in one write.
    pub(super) async fn write_device_facts(
        &self,
        facts: &[(DeviceId, String, DeviceClass)],
    ) -> R<()> {
        let devices: Vec<String> = facts.iter().map(|(d, _, _)| d.to_string()).collect();
        let apps: Vec<&str> = facts.iter().map(|(_, a, _)| a.as_str()).collect();
        let classes: Vec<&str> = facts.iter().map(|(_, _, c)| c.as_str()).collect();
        let _w = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO devices (device, next_counter, application_id, class) \
             SELECT d, 1, a, k FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(d, a, k) \
             ORDER BY d \
             ON CONFLICT (device) DO UPDATE \
             SET application_id = excluded.application_id, class = excluded.class",
        )
        .bind(devices)
        .bind(apps)
        .bind(classes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The remembered application id and class of those of `devices` it knows.
    pub(super) async fn read_device_facts(
        &self,
        devices: &[DeviceId],
    ) -> R<Vec<(DeviceId, String, DeviceClass)>> {
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT device, application_id, class FROM devices WHERE device = ANY($1) \
             AND application_id IS NOT NULL AND class IS NOT NULL",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(device, app, class)| {
                let device = device_of(&device)?;
                let class = DeviceClass::from_letter(&class).ok_or_else(|| {
                    StoreError::Corrupt(format!("devices.class of {device}: \"{class}\""))
                })?;
                Ok((device, app, class))
            })
            .collect()
    }

    /// Every stored group membership: (group, device, source).
    pub(super) async fn read_group_members(&self) -> R<Vec<(String, DeviceId, String)>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT group_name, device, source FROM group_members")
                .fetch_all(&self.pool)
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
            "INSERT INTO group_members (group_name, device, source) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM group_members WHERE group_name = $1 AND device = $2 AND source = $3"
        };
        let _w = self.writer.lock().await;
        sqlx::query(sql)
            .bind(group)
            .bind(device.to_string())
            .bind(source)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
