//! What both backends share: reading a command row, the history entry a change wrote,
//! deciding a group of creations before anything is written, and the SMS window.
use super::{Created, NewCommand, R, StoreError};
use crate::commands::model::{Command, CommandState, HistoryEntry, Origin};
use crate::device::DeviceId;
use std::collections::HashMap;

/// Why the expiry sweep ends a command.
pub(super) const EXPIRED_REASON: &str = "expired before a receive window opened";

/// A result row of either backend, read by column name.
pub(super) trait Columns {
    fn text(&self, col: &str) -> R<String>;
    fn opt_text(&self, col: &str) -> R<Option<String>>;
    fn int(&self, col: &str) -> R<i64>;
    fn opt_int(&self, col: &str) -> R<Option<i64>>;
    /// A yes/no column (an integer in SQLite, a boolean in PostgreSQL).
    fn flag(&self, col: &str) -> R<bool>;
}

fn state_of(name: String) -> R<CommandState> {
    CommandState::from_name(&name).ok_or(StoreError::Corrupt(name))
}

/// A command from the [`COLUMNS`] of a row.
pub(super) fn command_from(row: &impl Columns) -> R<Command> {
    let device = row.text("device")?;
    let device = DeviceId::parse_path(&device).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let body = row.text("body")?;
    let command =
        serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{body}: {e}")))?;
    Ok(Command {
        id: row.text("id")?,
        device,
        command,
        counter: row.int("counter")? as u16,
        confirmed: row.flag("confirmed")?,
        state: state_of(row.text("state")?)?,
        attempts: row.int("attempts")? as u32,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        network_ref: row.opt_text("network_ref")?,
        reason: row.opt_text("reason")?,
        origin: stored_origin(row.opt_text("origin")?),
        batch_id: row.opt_text("batch_id")?,
    })
}

/// A history entry from columns `{prefix}state`, `at`, `reason`, `attempt`, `origin`.
pub(super) fn history_from(row: &impl Columns, prefix: &str) -> R<HistoryEntry> {
    let col = |name: &str| format!("{prefix}{name}");
    Ok(HistoryEntry {
        state: state_of(row.text(&col("state"))?)?,
        at: row.int(&col("at"))?,
        reason: row.opt_text(&col("reason"))?,
        attempt: row.opt_int(&col("attempt"))?.map(|a| a as u32),
        origin: stored_origin(row.opt_text(&col("origin"))?),
    })
}

pub(super) fn stored_origin(s: Option<String>) -> Option<Origin> {
    s.as_deref().and_then(Origin::from_stored)
}

/// A device read back from a `device` column.
pub(super) fn device_of(path: &str) -> R<DeviceId> {
    DeviceId::parse_path(path).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Devices read back from `device` columns.
pub(super) fn devices_of(rows: Vec<String>) -> R<Vec<DeviceId>> {
    rows.iter().map(|d| device_of(d)).collect()
}

/// The history entry the `command_changed` trigger wrote for a command's last change.
pub(super) fn entry_of(cmd: &Command, at: i64) -> HistoryEntry {
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
pub(super) fn changed<Row: Columns>(rows: &[Row], now: i64) -> R<Vec<(Command, HistoryEntry)>> {
    rows.iter()
        .map(|row| {
            let c = command_from(row)?;
            let e = entry_of(&c, now);
            Ok((c, e))
        })
        .collect()
}

/// What a group decided for one creation before anything is written.
enum Plan {
    /// Stored before this group: the outcome as it is (boxed: a command is large).
    Done(Box<R<Created>>),
    /// New: `fresh[i]`.
    Fresh(usize),
    /// Its id names `fresh[i]`, created earlier in this group.
    SameAs(usize),
}

/// A group of creations, decided: which are new (and for how many commands each device
/// needs counters), which repeat a stored or an earlier one, which are refused.
pub(super) struct Creations {
    plans: Vec<Plan>,
    /// The new commands, in order; counters are set by [`Creations::number`].
    pub fresh: Vec<Command>,
    /// How many new commands each device has, in the order first seen.
    pub per_device: indexmap::IndexMap<String, i64>,
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

/// The ids the group's creations give (to look up as stored commands).
pub(super) fn given_ids<'a>(news: &[(&'a NewCommand, i64)]) -> Vec<&'a str> {
    news.iter().filter_map(|(n, _)| n.id.as_deref()).collect()
}

impl Creations {
    /// Decides each creation in order: a known id (`stored`: the given ids that name
    /// stored commands), an id seen earlier in the group, or new.
    pub fn plan(news: &[(&NewCommand, i64)], stored: &HashMap<String, Command>) -> Creations {
        let conflict = |id: &str, device: &DeviceId| StoreError::IdConflict {
            id: id.to_owned(),
            device: device.to_string(),
        };
        let mut fresh: Vec<Command> = Vec::new();
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut per_device = indexmap::IndexMap::new();
        let mut plans = Vec::with_capacity(news.len());
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
                let earlier: &Command = &fresh[i];
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
        Creations {
            plans,
            fresh,
            per_device,
        }
    }

    /// `(device, n)` for each device with new commands.
    pub fn wanted(&self) -> Vec<(&str, i64)> {
        self.per_device
            .iter()
            .map(|(d, n)| (d.as_str(), *n))
            .collect()
    }

    /// Numbers the new commands from the devices' counters after the upsert took `n`
    /// for each (`after`: each device's next counter as stored now).
    pub fn number(&mut self, after: &[(String, i64)]) -> R<()> {
        let mut next: HashMap<&str, i64> = HashMap::with_capacity(after.len());
        for (device, after) in after {
            let n = self.per_device.get(device).copied().unwrap_or(0);
            // the first counter of this group's commands for the device
            next.insert(device, (after - n).rem_euclid(65536));
        }
        for cmd in &mut self.fresh {
            let device = cmd.device.to_string();
            let counter = next
                .get_mut(device.as_str())
                .ok_or_else(|| StoreError::Corrupt(format!("no counter for {device}")))?;
            cmd.counter = *counter as u16;
            *counter = (*counter + 1) % 65536;
        }
        Ok(())
    }

    /// Each creation's outcome, with the devices' pending counts as the transaction
    /// counted them.
    pub fn outcomes(self, pending: &HashMap<String, u64>) -> Vec<R<Created>> {
        let fresh = self.fresh;
        self.plans
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
            .collect()
    }
}

/// The body column of a command.
pub(super) fn body_of(cmd: &Command) -> R<String> {
    serde_json::to_string(&cmd.command).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The SMS request window: the highest counter and which of the 32 below it arrived
/// (bit i: highest − i). `None`: `counter` arrived before, or is older than the window.
pub(super) fn sms_window(highest: Option<u32>, seen: u32, counter: u32) -> Option<(u32, u32)> {
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

/// A creation waiting for [`group_commits`], and where its outcome goes.
pub(super) struct PendingCreation {
    pub new: NewCommand,
    pub now: i64,
    pub reply: tokio::sync::oneshot::Sender<R<Created>>,
}

/// The most creations one transaction commits: bounds how long other writes (state
/// changes) wait for the writer behind a burst of creations.
pub(super) const MAX_GROUP: usize = 64;

/// Where a backend commits a group of creations.
pub(super) trait GroupWriter: Send + Sync + 'static {
    /// Creates `news` in one transaction, in order. `Ok` holds each creation's outcome
    /// (an id conflict fails that creation alone); `Err` is a database error, and then
    /// none of them is stored.
    fn commit_group(
        &self,
        news: &[(&NewCommand, i64)],
    ) -> impl std::future::Future<Output = R<Vec<R<Created>>>> + Send;
}

/// Commits creations as they arrive, in groups: every creation that queued while one
/// group was being written goes into the next one (up to [`MAX_GROUP`]), one transaction
/// and one durable commit for all. Ends when the store is dropped.
pub(super) async fn group_commits(
    writer: impl GroupWriter,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<PendingCreation>,
    commits: prometheus_client::metrics::counter::Counter,
) {
    while let Some(first) = pending.recv().await {
        let group = crate::commands::take_batch(first, &mut pending, MAX_GROUP);
        let news: Vec<(&NewCommand, i64)> = group.iter().map(|p| (&p.new, p.now)).collect();
        let outcomes = match writer.commit_group(&news).await {
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
                    match writer.commit_group(one).await {
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
        drop(news);
        for (p, outcome) in group.into_iter().zip(outcomes) {
            // a requester that went away finds its command by its id
            let _ = p.reply.send(outcome);
        }
    }
}
