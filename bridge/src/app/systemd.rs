//! systemd's notification protocol (`Type=notify`): `READY=1` once the broker and the
//! store are up, `WATCHDOG=1` while the bridge is healthy, `STOPPING=1` on shutdown.
//! A datagram to `$NOTIFY_SOCKET`; nothing at all when it is not set.
use crate::commands::Commands;
use crate::mqtt::ConnectionState;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

/// Sends a state string to systemd; false when there is no socket or sending failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // an abstract socket
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    sent.is_ok()
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Reports `READY=1` once the broker connection and the store are up, then pets the
/// watchdog (if systemd asked for one) while the store answers. Runs until aborted.
pub async fn report_health(mqtt: ConnectionState, commands: Arc<Commands>) {
    while !(mqtt.is_connected() && commands.store_answers().await) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    notify("READY=1");
    tracing::info!("ready: connected to the broker, store open");
    let Some(interval) = watchdog_interval() else {
        return;
    };
    loop {
        tokio::time::sleep(interval / 2).await;
        // the broker may come and go (the bridge reconnects by itself); a store that
        // stops answering is what a restart can mend
        if commands.store_answers().await {
            notify("WATCHDOG=1");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn silent_without_a_socket() {
        // the test process has no NOTIFY_SOCKET (systemd sets it for services only)
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!super::notify("READY=1"));
        }
    }
}
