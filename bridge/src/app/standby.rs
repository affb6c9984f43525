//! Active and standby on PostgreSQL (docs/deployment.md): a bridge waits for the
//! advisory lock, answering `503` on its HTTP port and opening no MQTT session, then
//! takes over; a bridge that can no longer be sure it holds the lock stops at once.
use super::systemd;
use crate::commands::store::PgStore;
use crate::commands::store::postgres::LOCK_POLL;
use crate::http;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The exit status of a bridge that lost its lock (`EX_TEMPFAIL`): systemd's
/// `Restart=on-failure` starts it again, as a standby.
pub const EXIT_LOCK_LOST: i32 = 75;

/// How long a bridge that has just taken the lock waits before it acts: a bridge that
/// lost the lock because its session was ended (not silenced) learns it at its next
/// check, within [`LOCK_POLL`], and must be gone first.
pub const TAKEOVER_GRACE: std::time::Duration =
    std::time::Duration::from_millis(2 * LOCK_POLL.as_millis() as u64);

/// Waits until this bridge holds the lock, serving the standby's answers on a second
/// handle of `listener` meanwhile (the same socket: no gap when the active routes take
/// it over), and telling systemd it is ready as a standby.
pub async fn take_lock(
    pg: &PgStore,
    listener: &TcpListener,
    limits: http::ConnectionLimits,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    if pg.try_lock().await.unwrap_or(false) {
        tokio::time::sleep(TAKEOVER_GRACE).await;
        return Ok(());
    }
    let store = Arc::new(AtomicBool::new(true));
    let second = socket2::SockRef::from(listener).try_clone()?;
    let second: std::net::TcpListener = second.into();
    second.set_nonblocking(true)?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        TcpListener::from_std(second)?,
        http::standby::router(store.clone()),
        limits,
        metrics,
        stop.clone().cancelled_owned(),
    ));
    systemd::notify("READY=1\nSTATUS=standby: another bridge holds the PostgreSQL lock");
    pg.wait_for_lock(|answered| {
        store.store(answered, Ordering::Relaxed);
        // a standby whose database answers is as healthy as it can be
        if answered {
            systemd::notify("WATCHDOG=1");
        }
    })
    .await;
    tokio::time::sleep(TAKEOVER_GRACE).await;
    stop.cancel();
    let _ = server.await;
    tracing::info!("active: this bridge holds the PostgreSQL lock; taking over");
    systemd::notify("STATUS=active");
    Ok(())
}

/// Watches the lock until `stop`; when it is lost, exits the process at once with
/// [`EXIT_LOCK_LOST`]: nothing more is published, before PostgreSQL can hand the lock
/// to another bridge.
pub fn hold_lock(pg: PgStore, stop: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            why = pg.watch_lock() => {
                tracing::error!(%why, "lost the PostgreSQL lock: stopping at once, publishing nothing more");
                std::process::exit(EXIT_LOCK_LOST);
            }
            _ = stop.cancelled() => {}
        }
    });
}
