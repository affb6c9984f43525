//! The running service: wires the MQTT connection, the adapters, the pipeline, the
//! command queue and the HTTP server together, and shuts them down in order.
//!
//! [`run`] takes the shutdown as a future, as mini-redis's server does; `main` passes
//! the first SIGTERM or SIGINT ([`run_until_signal`]). Every task watches one
//! [`CancellationToken`]; the periodic jobs are tracked by one [`TaskTracker`]. The
//! order of the shutdown is written once, in [`Bridge::start_with_clock`]: the HTTP
//! server and the dispatcher stop taking work (the broker keeps what is left for the
//! next session), receive windows in flight finish, the store catches up, pending
//! states are flushed, `offline` is published, and the client disconnects once the
//! broker has acknowledged everything.
pub mod dispatcher;
pub mod restore;
pub mod standby;
pub mod systemd;

use crate::clock::{Clock, SystemClock};
use crate::commands::Commands;
use crate::commands::model::CommandState;
use crate::commands::mqtt_api;
use crate::commands::store::Store;
use crate::device::Network;
use crate::http::{self, Areas};
use crate::metrics::Metrics;
use crate::mqtt::{self, ConnectionState, Publisher};
use crate::networks::cellular::{CellularAdapter, DeviceKeys};
use crate::networks::chirpstack::ChirpstackAdapter;
use crate::networks::sigfox::SigfoxAdapter;
use crate::networks::sms::SmsAdapter;
use crate::operators::Operators;
use crate::pipeline::{CodecTable, Pipeline};
use anyhow::Context;
use dispatcher::Routes;
use gateway_config::Settings;
use rumqttc::AsyncClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a clean shutdown may take before the bridge stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running bridge.
pub struct Bridge {
    http_addr: SocketAddr,
    cellular_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    pipeline: Arc<Pipeline>,
    commands: Arc<Commands>,
    mqtt: ConnectionState,
    sms: Option<Arc<SmsAdapter>>,
}

impl Bridge {
    /// Starts every part of the bridge on the system clock.
    pub async fn start(settings: Settings) -> anyhow::Result<Bridge> {
        Self::start_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Starts every part of the bridge; `clock` decides expiry and quotas (tests move it
    /// by hand). It connects to the broker in the background and keeps trying until it
    /// can.
    pub async fn start_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Bridge> {
        // ring as the TLS provider; a second call (several bridges in one test) is a no-op
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        metrics.start_at_zero(
            &[Network::Lorawan, Network::Sigfox, Network::Cellular].map(Network::name),
            &CommandState::ALL.map(CommandState::name),
        );
        let url = &redacted(&settings.storage.url);
        let store = Store::connect(&settings.storage.url, metrics.creation_commits.clone())
            .await
            .with_context(|| format!("storage.url: cannot open {url}"))?;
        let listener = tokio::net::TcpListener::bind(&settings.http.bind)
            .await
            .with_context(|| format!("http.bind: cannot listen on {}", settings.http.bind))?;
        let http_addr = listener.local_addr()?;
        let limits = http::ConnectionLimits::new(&settings.http);
        let stop = CancellationToken::new();
        if let Store::Postgres(pg) = &store {
            // a standby until this bridge holds the lock; then it watches the lock
            standby::take_lock(pg, &listener, limits, metrics.clone()).await?;
            standby::hold_lock(pg.clone(), stop.clone());
            pg.migrate()
                .await
                .with_context(|| format!("storage.url: cannot migrate {url}"))?;
        }
        let cellular_listener = match settings.cellular.bind.as_str() {
            "" => None,
            bind => Some(
                http::cellular::listen(bind)
                    .await
                    .with_context(|| format!("cellular.bind: cannot listen on {bind}"))?,
            ),
        };
        let cellular_addr = match &cellular_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let c = &settings.cellular;
        let cellular_tls = match c.tls_cert.is_empty() {
            true => None,
            false => Some(tokio_rustls::TlsAcceptor::from(http::tls::server_config(
                &c.tls_cert,
                &c.tls_key,
                &c.tls_ticket_keys_file,
            )?)),
        };

        let options = mqtt::options(&settings.mqtt)?;
        let (client, mut eventloop) = AsyncClient::new(options, 4096);
        mqtt::no_delay(&mut eventloop);
        let root = settings.mqtt.topic_root.clone();
        let publisher = Publisher::new(client.clone(), &root);
        let pipeline = Arc::new(Pipeline::new(
            publisher.clone(),
            CodecTable::new(&settings.codecs),
            metrics.clone(),
            Duration::from_millis(settings.mqtt.state_min_interval_ms as u64),
        ));
        let shared = Arc::new(store.clone());
        let commands = Commands::new(
            store,
            clock,
            publisher,
            pipeline.clone(),
            settings.commands.clone(),
        )
        .await
        .context("reading the command queue")?;

        // who may do what, and the device groups (the API's and the tags' are stored)
        let operators = Arc::new(
            Operators::new(&settings.http, &settings.operators, Some(shared.clone()))
                .context("operators.tokens_file")?,
        );
        operators
            .load_members()
            .await
            .context("reading the device groups")?;
        if !settings.http.api_tokens.is_empty() {
            tracing::warn!(
                tokens = settings.http.api_tokens.len(),
                "http.api_tokens are deprecated: each has every scope over every device; name them in [operators.token]"
            );
        }

        // the networks
        let chirpstack = ChirpstackAdapter::start(
            &settings.chirpstack,
            pipeline.clone(),
            commands.clone(),
            shared.clone(),
            metrics.clone(),
            operators.clone(),
        );
        let sigfox = Arc::new(SigfoxAdapter::new(
            &settings.sigfox,
            pipeline.clone(),
            commands.clone(),
            shared.clone(),
        ));

        let jobs = TaskTracker::new();
        operators.watch(&jobs, &stop);
        // the devices' keys (and numbers), read once for the cellular and SMS adapters
        let keys = match cellular_listener.is_some() || !settings.sms.server.is_empty() {
            true => {
                let keys = Arc::new(DeviceKeys::load(&settings.cellular.keys_file)?);
                keys.watch(&jobs, &stop);
                Some(keys)
            }
            false => None,
        };
        let cellular = match cellular_listener {
            None => None,
            Some(listener) => {
                let adapter = CellularAdapter::start(
                    &settings.cellular,
                    keys.clone().context("cellular.keys_file")?,
                    pipeline.clone(),
                    commands.clone(),
                    shared.clone(),
                    metrics.clone(),
                    &jobs,
                    &stop,
                );
                Some(tokio::spawn(http::cellular::serve(
                    listener,
                    adapter,
                    cellular_tls,
                    http::cellular::ListenerSettings::new(&settings.cellular),
                    metrics.clone(),
                    stop.clone(),
                )))
            }
        };
        let sms = match settings.sms.server.as_str() {
            "" => None,
            _ => Some(SmsAdapter::start(
                &settings.sms,
                keys.clone().context("cellular.keys_file")?,
                pipeline.clone(),
                commands.clone(),
                shared.clone(),
                metrics.clone(),
                &jobs,
                &stop,
            )?),
        };
        let routes = Arc::new(Routes {
            chirpstack: chirpstack.clone(),
            commands: commands.clone(),
            metrics: metrics.clone(),
            root: root.clone(),
            max_message_bytes: settings.mqtt.max_message_bytes as usize,
            oversized_logged: std::sync::Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let connection_state = ConnectionState::default();
        let status_topic = mqtt::status_topic(&root);
        let connection = tokio::spawn(mqtt::run_connection(
            eventloop,
            client.clone(),
            vec![chirpstack.subscription(), mqtt_api::subscription(&root)],
            status_topic.clone(),
            tx,
            {
                let cs = chirpstack.clone();
                let max = settings.mqtt.max_message_bytes as usize;
                Arc::new(move |p: &rumqttc::Publish, received| {
                    p.payload.len() <= max && cs.early(&p.topic, &p.payload, received)
                })
            },
            stop.clone(),
            connection_state.clone(),
            metrics.clone(),
            Duration::from_millis(settings.mqtt.reconnect_max_ms as u64),
            pipeline.publisher().ledger().clone(),
        ));
        let dispatcher = tokio::spawn(dispatcher::dispatch(
            rx,
            stop.clone(),
            client.clone(),
            routes,
        ));
        every(&jobs, &stop, pipeline.state_flush_period(), {
            let p = pipeline.clone();
            move || {
                let p = p.clone();
                async move { p.flush_states(false).await }
            }
        });
        // events a stop left unpublished, then every 2 s: how far the broker holds them all
        jobs.spawn({
            let (c, p, m) = (commands.clone(), pipeline.clone(), settings.mqtt.clone());
            stop.clone().run_until_cancelled_owned(async move {
                let devices = c.republish_owed_events().await;
                restore::correct_retained_states(&m, &p, &c, devices).await;
            })
        });
        every(&jobs, &stop, Duration::from_secs(2), {
            let c = commands.clone();
            move || {
                let c = c.clone();
                async move { c.confirm_events(false).await }
            }
        });
        let handover_timeout_ms = settings.chirpstack.handover_timeout_s as i64 * 1000;
        every(&jobs, &stop, Duration::from_secs(1), {
            let c = commands.clone();
            move || {
                let c = c.clone();
                async move {
                    c.expire_due().await;
                    // back in the queue, and announced to the adapters as due
                    c.unconfirmed_handovers(handover_timeout_ms).await;
                    c.maintain().await;
                    c.publish_batches().await;
                }
            }
        });
        jobs.close();

        let app = http::router(
            &settings,
            Areas {
                commands: commands.clone(),
                pipeline: pipeline.clone(),
                sigfox,
                metrics: metrics.clone(),
                mqtt: connection_state.clone(),
                operators,
            },
        );
        let server = tokio::spawn(http::serve(
            listener,
            app,
            limits,
            metrics.clone(),
            stop.clone().cancelled_owned(),
        ));
        tracing::info!(http = %http_addr, cellular = ?cellular_addr, mqtt = settings.mqtt.server, storage = url, "longproto-bridge started");

        let stopping = stop.clone();
        let flush_pipeline = pipeline.clone();
        let queue = commands.clone();
        let task = tokio::spawn(async move {
            stopping.cancelled().await;
            let orderly = async {
                let _ = server.await;
                if let Some(cellular) = cellular {
                    let _ = cellular.await;
                }
                let _ = dispatcher.await;
                chirpstack.settle().await;
                // every window handed over is in the store, its events published
                queue.settled().await;
                jobs.wait().await;
                flush_pipeline.flush_states(true).await;
                let publisher = flush_pipeline.publisher();
                let _ = publisher
                    .try_publish(&status_topic, b"offline".to_vec(), true)
                    .await;
                // every message acknowledged before DISCONNECT; then, if the broker holds
                // every event, nothing is owed at the next start
                publisher.ledger().settle(Duration::from_secs(2)).await;
                queue.confirm_events(true).await;
                let _ = client.disconnect().await;
                let _ = connection.await;
            };
            if tokio::time::timeout(SHUTDOWN_GRACE, orderly).await.is_err() {
                tracing::warn!(
                    "shutdown did not finish within {SHUTDOWN_GRACE:?}; stopping anyway"
                );
            }
        });
        Ok(Bridge {
            http_addr,
            cellular_addr,
            stop,
            task,
            metrics,
            pipeline,
            commands,
            mqtt: connection_state,
            sms,
        })
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Whether the SMPP bind is up (`None` without `[sms]`).
    pub fn sms_bound(&self) -> Option<bool> {
        self.sms.as_ref().map(|s| s.bound())
    }

    /// The address the cellular listener listens on, when `[cellular] bind` is set.
    pub fn cellular_addr(&self) -> Option<SocketAddr> {
        self.cellular_addr
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The command queue.
    pub fn commands(&self) -> &Arc<Commands> {
        &self.commands
    }

    /// Whether the broker connection and the store are up.
    pub async fn healthy(&self) -> bool {
        self.mqtt.is_connected() && self.commands.store_answers().await
    }

    /// Stops taking messages and requests, finishes the ones in flight, publishes
    /// `offline`, disconnects, and returns when all of it is done.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
        tracing::info!("longproto-bridge stopped");
    }
}

/// `url` without its password, for logs and errors.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Runs `job` every `period` on `jobs` until `stop`.
fn every<F, Fut>(jobs: &TaskTracker, stop: &CancellationToken, period: Duration, job: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = stop.clone();
    jobs.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            job().await;
        }
    });
}

/// Runs the service until `shutdown` resolves, then stops it in order.
///
/// Under systemd (`Type=notify`) it reports `READY=1` once the broker and the store are
/// up, pets the watchdog while the store answers, and reports `STOPPING=1` on the way
/// out.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // a standby waits in `start` for the lock; a stop while it waits ends it there
    tokio::pin!(shutdown);
    let bridge = tokio::select! {
        bridge = Bridge::start(settings) => bridge?,
        _ = &mut shutdown => {
            tracing::info!("stopped while standing by");
            return Ok(());
        }
    };
    let health = tokio::spawn(systemd::report_health(
        bridge.mqtt.clone(),
        bridge.commands.clone(),
    ));
    shutdown.await;
    systemd::notify("STOPPING=1");
    health.abort();
    let _ = health.await;
    tracing::info!("stopping: finishing messages in flight (a second signal exits at once)");
    bridge.shutdown().await;
    Ok(())
}

/// [`run`] until SIGTERM or SIGINT; a second signal exits at once.
pub async fn run_until_signal(settings: Settings) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    run(settings, async move {
        signals.recv().await;
        tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
    })
    .await
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
