//! Wiring: build every part from [`Settings`], start serving, and stop in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_connector::{Connector, ConnectorHost};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::assistant::{self, Assistant};
use crate::channels::Channels;
use crate::config::Settings;
use crate::http::DemoIdentity;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::outbox::Delivery;
use crate::router::Router;
use crate::store::{Backend, Store};
use crate::workflow::{WorkflowActions, WorkflowService};

/// What a caller can swap in: tests and the benchmark bring their own assistant or channels.
#[derive(Default)]
pub struct AppOptions {
    pub assistant: Option<Arc<dyn Assistant>>,
    pub connectors: Vec<Arc<dyn Connector>>,
}

pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// The back-office workflow (tasks, policies, approvals).
    pub workflow: Arc<WorkflowService>,
    http_stop: CancellationToken,
    connectors_stop: CancellationToken,
    delivery_stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    delivery_task: JoinHandle<()>,
    connector_tasks: Vec<JoinHandle<()>>,
    open_sessions: Arc<dyn Fn() -> usize + Send + Sync>,
    grace: Duration,
}

/// The web chat signing secret: from config, or generated once and kept in the data directory.
fn webchat_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if !settings.webchat.session_secret.is_empty() {
        return Ok(settings.webchat.session_secret.as_bytes().to_vec());
    }
    let path = settings.data_dir.join("webchat.secret");
    if let Ok(secret) = std::fs::read_to_string(&path)
        && secret.trim().len() >= 32
    {
        crate::datadir::check_secret(&path);
        return Ok(secret.trim().as_bytes().to_vec());
    }
    crate::datadir::prepare(&settings.data_dir)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    crate::datadir::write_private(&path, secret.as_bytes()).context("writing webchat secret")?;
    Ok(secret.into_bytes())
}

impl App {
    pub async fn start(settings: Settings, options: AppOptions) -> anyhow::Result<App> {
        crate::datadir::prepare(&settings.data_dir)?;
        let url = settings.database_url();
        let store = Store::connect(&url, settings.database.max_connections)
            .await
            .with_context(|| format!("opening database {}", crate::config::redact_url(&url)))?;
        if store.backend() == Backend::Sqlite {
            crate::datadir::restrict_files(&settings.data_dir);
            // One process owns a SQLite file: reservations left by a killed process are stale.
            let released = store.release_outbox_locks().await?;
            if released > 0 {
                tracing::info!(
                    rows = released,
                    "outbox rows from a previous run will be delivered"
                );
            }
        }
        let metrics = Arc::new(Metrics::default());

        let mut channels = Channels::default();
        let mut open_sessions: Arc<dyn Fn() -> usize + Send + Sync> = Arc::new(|| 0);
        let mut demo_identity = None;
        #[cfg(feature = "channel-webchat")]
        if settings.webchat.enabled {
            let secret = webchat_secret(&settings)?;
            let config = &settings.webchat;
            use switchboard_webchat::limits::Rate;
            let mut webchat = switchboard_webchat::WebchatSettings::new(&secret);
            webchat.signer = switchboard_webchat::session::SessionSigner::new(
                &secret,
                i64::from(config.session_ttl_days) * 24 * 3600,
            );
            webchat.max_frame_bytes = config.max_frame_bytes;
            webchat.max_text_chars = config.max_text_chars;
            webchat.visitor_rate = Rate::new(config.rate_per_minute, config.rate_burst);
            webchat.address_rate = Rate::new(config.ip_rate_per_minute, config.ip_rate_burst);
            webchat.session_rate =
                Rate::new(config.ip_sessions_per_minute, config.ip_sessions_burst);
            webchat.frame_rate = Rate::new(config.frame_rate_per_minute, config.frame_rate_burst);
            webchat.hello_timeout = Duration::from_secs(config.hello_timeout_secs);
            webchat.allowed_origins = config.allowed_origins.clone();
            webchat.client_address_header = settings.http.client_address_header.clone();
            webchat.history_limit = config.history_limit;
            let rejections = metrics.clone();
            webchat.on_rejection = Arc::new(move |reason| rejections.edge_rejection(reason));
            let identity_secret = if config.identity_secret.is_empty() {
                // Only this server signs (the demo page): a key of its own, never shared.
                rand::random::<[u8; 32]>().to_vec()
            } else {
                config.identity_secret.as_bytes().to_vec()
            };
            if config.legacy_identity_signatures {
                tracing::warn!(
                    "web chat accepts legacy identity signatures, which never expire (webchat.legacy_identity_signatures)"
                );
            }
            let identities = switchboard_webchat::session::IdentityVerifier::new(&identity_secret)
                .with_policy(
                    config.identity_max_ttl_secs,
                    config.legacy_identity_signatures,
                );
            if !config.demo_email.is_empty() {
                tracing::warn!(email = %config.demo_email, "demo mode: the demo page at / is signed in as a demo customer (webchat.demo_email)");
                demo_identity = Some(DemoIdentity {
                    verifier: identities.clone(),
                    email: config.demo_email.clone(),
                });
            }
            webchat.identities = Some(identities);
            let connector = switchboard_webchat::WebchatConnector::new(webchat);
            let sessions = connector.clone();
            open_sessions = Arc::new(move || sessions.open_sessions());
            channels.register(connector);
        }
        for connector in options.connectors {
            channels.register(connector);
        }
        let channels = Arc::new(channels);

        let assistant = match options.assistant {
            Some(assistant) => assistant,
            None => assistant::from_settings(&settings)
                .await
                .context("starting the assistant")?,
        };
        let delivery = Delivery::new(
            store.clone(),
            channels.clone(),
            metrics.clone(),
            settings.outbox.clone(),
        );
        let workflow =
            WorkflowService::start(store.clone(), &settings.workflow, Some(delivery.clone()))
                .await
                .context("starting the workflow")?;
        let router = Router::new(
            store.clone(),
            assistant,
            Some(Arc::new(WorkflowActions::new(workflow.clone()))),
            channels.clone(),
            metrics.clone(),
            delivery.clone(),
            settings.router.clone(),
        );
        // Old work first: messages stored before a crash queue ahead of anything new.
        router.recover().await?;
        let delivery_stop = CancellationToken::new();
        let delivery_task = tokio::spawn(delivery.clone().run(delivery_stop.clone()));

        let host: Arc<dyn ConnectorHost> = router.clone();
        let connectors_stop = CancellationToken::new();
        let connector_tasks = channels
            .all()
            .map(|connector| {
                let connector = connector.clone();
                let host = host.clone();
                let stop = connectors_stop.clone();
                tokio::spawn(async move { connector.run(host, stop).await })
            })
            .collect();

        let state = AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            open_sessions: open_sessions.clone(),
            workflow: workflow.clone(),
            demo_identity,
            metrics_token: settings.http.metrics_token.as_str().into(),
            frame_ancestors: settings.http.frame_ancestors.as_str().into(),
        };
        let (app, metrics_app) = http::router(state, &channels, host, &settings.http);
        let metrics_listener = match settings.http.metrics_address.as_str() {
            "" => None,
            address => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the metrics address {address}"))?,
            ),
        };
        let listener =
            tokio::net::TcpListener::bind((settings.http.host.as_str(), settings.http.port))
                .await
                .with_context(|| {
                    format!("binding {}:{}", settings.http.host, settings.http.port)
                })?;
        let addr = listener.local_addr()?;
        let http_stop = CancellationToken::new();
        let limits = http::serve::ServerLimits {
            header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_secs),
            max_connections: settings.http.max_connections,
            max_connections_per_ip: settings.http.max_connections_per_ip,
        };
        let server = tokio::spawn(http::serve::serve(
            listener,
            app,
            limits.clone(),
            metrics.clone(),
            http_stop.clone(),
        ));
        if let Some(metrics_listener) = metrics_listener {
            tokio::spawn(http::serve::serve(
                metrics_listener,
                metrics_app,
                limits,
                metrics.clone(),
                http_stop.clone(),
            ));
        }
        tracing::info!(%addr, database = store.backend().name(), channels = ?channels.kinds(), "switchboard listening");
        Ok(App {
            addr,
            store,
            router,
            metrics,
            workflow,
            http_stop,
            connectors_stop,
            delivery_stop,
            server,
            delivery_task,
            connector_tasks,
            open_sessions,
            grace: Duration::from_secs(settings.http.shutdown_grace_secs),
        })
    }

    /// Stop in order: no new connections, no new messages, finish every turn, deliver what
    /// those turns sent, then close the channels and the database.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: draining in-flight work");
        self.http_stop.cancel();
        let drained = async {
            self.router.drain().await;
            self.delivery_stop.cancel();
            let _ = self.delivery_task.await;
        };
        if tokio::time::timeout(self.grace, drained).await.is_err() {
            tracing::warn!(
                "in-flight work did not finish within the grace period; it resumes on the next start"
            );
        }
        self.connectors_stop.cancel();
        for task in self.connector_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        for _ in 0..100 {
            if (self.open_sessions)() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.store.close().await;
        tracing::info!("shutdown complete");
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
