//! Wiring: build every part from [`Settings`], start serving, and stop in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_connector::{ChannelFactory, Connector, ConnectorHost};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::assistant::{self, Assistant};
use crate::channels::host::InstanceHost;
use crate::channels::supervisor::{check_health, supervise};
use crate::channels::{Channels, Instance, Registry};
use crate::config::Settings;
use crate::console::{Console, ConsoleParts};
use crate::events::{EventBus, LocalBus};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::outbox::Delivery;
use crate::router::{Router, RouterParts};
use crate::store::{Backend, Store};
use crate::wiring::actions::WorkflowActions;
use crate::workflow::WorkflowService;

/// What a caller can swap in: tests and the benchmark bring their own assistant, connector
/// factories (for `[[channel]]` kinds of their own) or ready-made connectors.
#[derive(Default)]
pub struct AppOptions {
    pub assistant: Option<Arc<dyn Assistant>>,
    pub factories: Vec<Arc<dyn ChannelFactory>>,
    pub connectors: Vec<Arc<dyn Connector>>,
}

pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    pub channels: Arc<Channels>,
    pub bus: Arc<dyn EventBus>,
    /// The back-office workflow (tasks, policies, approvals).
    pub workflow: Arc<WorkflowService>,
    /// The agent console (accounts, teams, conversation work, reports).
    pub console: Arc<Console>,
    http_stop: CancellationToken,
    connectors_stop: CancellationToken,
    delivery_stop: CancellationToken,
    assign_stop: CancellationToken,
    assign_task: JoinHandle<()>,
    /// Re-reads a shop's own catalogue for the search index.
    catalogue_task: Option<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
    delivery_task: JoinHandle<()>,
    connector_tasks: Vec<JoinHandle<()>>,
    open_sessions: SessionCount,
    grace: Duration,
}

type SessionCount = Arc<dyn Fn() -> usize + Send + Sync>;
use crate::http::DemoPage;

/// What the HTTP layer shows of the web chat instances: their open sessions, and the demo
/// page with the first one's widget.
#[cfg(feature = "channel-webchat")]
fn webchat_views(
    factory: &switchboard_webchat::WebchatFactory,
) -> (SessionCount, Option<DemoPage>) {
    let instances = factory.built();
    let demo_page: Option<DemoPage> = instances.first().cloned().map(|first| {
        let page: DemoPage = Arc::new(move |origin: &str| first.demo_page(origin));
        page
    });
    let open_sessions: SessionCount = Arc::new(move || {
        instances
            .iter()
            .map(|instance| instance.open_sessions())
            .sum()
    });
    (open_sessions, demo_page)
}

/// The database the settings name, with `max_connections`. The data directory is made
/// owner-only first (a SQLite database is created in it, with the password and key hashes),
/// and a SQLite database's files after, for every command that opens the store.
pub(crate) async fn open_store(settings: &Settings, max_connections: u32) -> anyhow::Result<Store> {
    crate::datadir::prepare(&settings.data_dir)?;
    let url = settings.database_url();
    let database = crate::config::DatabaseSettings {
        url: url.clone(),
        max_connections,
        ..settings.database.clone()
    };
    let store = Store::open(&database)
        .await
        .with_context(|| format!("opening database {}", crate::config::redact_url(&url)))?;
    if store.backend() == Backend::Sqlite {
        crate::datadir::restrict_files(&settings.data_dir);
    }
    Ok(store)
}

impl App {
    pub async fn start(settings: Settings, options: AppOptions) -> anyhow::Result<App> {
        // Owner-only before anything is written into it: the channels write their secrets
        // before the store is opened (`open_store` makes sure again, for the other commands).
        crate::datadir::prepare(&settings.data_dir)?;
        // The addresses are taken first, before the slow parts (the model, the indexes): a
        // port in use fails the start at once, and a client that connects meanwhile waits in
        // the backlog until the server answers, instead of being refused.
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
        if settings.demo {
            tracing::warn!(
                "demo mode: web chat instances with a demo_email sign visitors of / in as that customer; never run a deployment like this"
            );
        }
        let mut registry = Registry::builtin();
        #[cfg(feature = "channel-webchat")]
        let webchat = {
            let factory = Arc::new(switchboard_webchat::WebchatFactory::new(settings.demo));
            registry.register(factory.clone());
            factory
        };
        for factory in options.factories {
            registry.register(factory);
        }
        let public_url = Some(settings.http.public_url.as_str()).filter(|url| !url.is_empty());
        let mut channels = registry
            .build(&settings.channel.0, &settings.data_dir, public_url)
            .context("building the channels of [[channel]]")?;
        for connector in options.connectors {
            let limits = connector.limits();
            channels.add(connector, limits);
        }
        let channels = Arc::new(channels);

        let store = open_store(&settings, settings.database.max_connections).await?;
        if store.backend() == Backend::Sqlite {
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
        let bus: Arc<dyn EventBus> = Arc::new(LocalBus::default());

        #[cfg(feature = "channel-webchat")]
        let (open_sessions, demo_page) = webchat_views(&webchat);
        #[cfg(not(feature = "channel-webchat"))]
        let (open_sessions, demo_page): (SessionCount, Option<DemoPage>) = (Arc::new(|| 0), None);

        let delivery = Delivery::new(
            store.clone(),
            channels.clone(),
            metrics.clone(),
            bus.clone(),
            settings.outbox.clone(),
        );
        let workflow =
            WorkflowService::start(store.clone(), &settings.workflow, Some(delivery.clone()))
                .await
                .context("starting the workflow")?;
        // The embedding model is loaded once, for the builtin assistant and the catalogue.
        let embedder = if options.assistant.is_none()
            && matches!(settings.assistant.kind.as_str(), "builtin" | "llm")
        {
            Some(
                settings
                    .assistant
                    .embedder()
                    .await
                    .context("loading the embedding model")?,
            )
        } else {
            None
        };
        let assistant = match options.assistant {
            Some(assistant) => assistant,
            None => assistant::from_settings(&settings, embedder.clone())
                .await
                .context("starting the assistant")?,
        };
        let (products, catalogue_task) =
            crate::catalogue::start(&settings, &workflow, embedder).await?;
        let teams = Console::load_teams(&store, &settings.router.default_queue)
            .await
            .context("loading the console's teams")?;
        let door = Arc::new(WorkflowActions::new(workflow.clone(), products.clone()));
        let router = Router::new(RouterParts {
            store: store.clone(),
            assistant,
            actions: Some(door.clone()),
            shop: Some(door),
            channels: channels.clone(),
            metrics: metrics.clone(),
            delivery: delivery.clone(),
            bus: bus.clone(),
            settings: settings.router.clone(),
            handoff: Some(teams.clone()),
        });
        let console = Console::new(ConsoleParts {
            store: store.clone(),
            router: router.clone(),
            bus: bus.clone(),
            workflow: workflow.clone(),
            teams,
            channels: channels.clone(),
            settings: settings.console.clone(),
            public_url: settings.http.public_url.clone(),
            default_queue: settings.router.default_queue.clone(),
        });
        // Old work first: messages stored before a crash queue ahead of anything new.
        router.recover().await?;
        let delivery_stop = CancellationToken::new();
        let delivery_task = tokio::spawn(delivery.clone().run(delivery_stop.clone()));
        let assign_stop = CancellationToken::new();
        let assign_task = tokio::spawn(crate::console::assign::run(
            console.clone(),
            assign_stop.clone(),
        ));

        let connectors_stop = CancellationToken::new();
        // Cancelled first at shutdown: no new connections, and no new messages from the channels.
        let http_stop = CancellationToken::new();
        let mut connector_tasks = Vec::new();
        let mut hosts: Vec<(Arc<Instance>, Arc<dyn ConnectorHost>)> = Vec::new();
        let healthcheck_every =
            Duration::from_secs(settings.supervisor.healthcheck_interval_secs.max(1));
        for instance in channels.all() {
            let host: Arc<dyn ConnectorHost> = InstanceHost::new(
                instance.name(),
                router.clone(),
                bus.clone(),
                instance.status.clone(),
                metrics.clone(),
            );
            hosts.push((instance.clone(), host.clone()));
            connector_tasks.push(tokio::spawn(supervise(
                instance.clone(),
                host,
                settings.supervisor.clone(),
                connectors_stop.clone(),
                http_stop.clone(),
            )));
            connector_tasks.push(tokio::spawn(check_health(
                instance.clone(),
                healthcheck_every,
                connectors_stop.clone(),
            )));
        }

        let state = AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            open_sessions: open_sessions.clone(),
            workflow: workflow.clone(),
            channels: channels.clone(),
            bus: bus.clone(),
            demo_page,
            console: console.clone(),
            products,
            metrics_token: settings.http.metrics_token.clone(),
            frame_ancestors: settings.http.frame_ancestors.as_str().into(),
            stopping: http::Stopping(http_stop.clone()),
        };
        let (app, metrics_app) = http::router(state, &hosts, &settings.http);
        let addr = listener.local_addr()?;
        let limits = http::serve::ServerLimits {
            header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_secs.max(1)),
            max_connections: settings.http.max_connections,
            max_connections_per_ip: settings.http.max_connections_per_ip,
            client_address_header: settings.http.client_address_header.as_str().into(),
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
        tracing::info!(%addr, database = store.backend().name(), channels = ?channels.names(), "switchboard listening");
        Ok(App {
            addr,
            store,
            router,
            metrics,
            channels,
            bus,
            workflow,
            console,
            http_stop,
            assign_stop,
            assign_task,
            catalogue_task,
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
        self.assign_stop.cancel();
        let _ = self.assign_task.await;
        if let Some(task) = self.catalogue_task {
            task.abort();
        }
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
