//! Supervision of channel instances: a connector's long-running work is restarted with
//! exponential backoff and jitter when it fails, its platform is health-checked at start and
//! periodically, and its state is kept for `/readyz`, `/metrics` and the logs.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use switchboard_connector::{ConnectorError, ConnectorHost};
use tokio_util::sync::CancellationToken;

use super::Instance;
use crate::store::now_ms;

/// `[supervisor]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorSettings {
    /// First restart delay after a connector's run fails; doubles up to `restart_max_ms`.
    pub restart_base_ms: u64,
    pub restart_max_ms: u64,
    /// A run that stayed up this long before failing starts the backoff over.
    pub healthy_after_secs: u64,
    /// How often each instance's platform is health-checked.
    pub healthcheck_interval_secs: u64,
}

impl Default for SupervisorSettings {
    fn default() -> SupervisorSettings {
        SupervisorSettings {
            restart_base_ms: 1_000,
            restart_max_ms: 60_000,
            healthy_after_secs: 120,
            healthcheck_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Running,
    /// The run failed; it restarts at `retry_at_ms`.
    BackingOff,
    /// Misconfigured: not restarted until the config is fixed.
    Failed,
    Stopped,
}

#[derive(Debug)]
struct Inner {
    state: InstanceState,
    retry_at_ms: Option<i64>,
    last_error: Option<String>,
    restarts: u32,
    healthy: Option<bool>,
    health_error: Option<String>,
}

/// The supervised state of one instance.
#[derive(Debug)]
pub struct InstanceStatus {
    kind: &'static str,
    name: String,
    inner: Mutex<Inner>,
    last_inbound_ms: AtomicI64,
}

/// What `/readyz` shows of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub kind: &'static str,
    pub name: String,
    pub state: InstanceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_inbound_at_ms: Option<i64>,
    pub restarts: u32,
    /// The last healthcheck's verdict (None: not checked yet).
    pub healthy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_error: Option<String>,
}

impl InstanceStatus {
    pub fn new(kind: &'static str, name: &str) -> InstanceStatus {
        InstanceStatus {
            kind,
            name: name.to_string(),
            inner: Mutex::new(Inner {
                state: InstanceState::Starting,
                retry_at_ms: None,
                last_error: None,
                restarts: 0,
                healthy: None,
                health_error: None,
            }),
            last_inbound_ms: AtomicI64::new(0),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Inner)) {
        change(&mut self.inner.lock().expect("status lock"));
    }

    /// An inbound event of this instance was stored.
    pub fn inbound(&self) {
        self.last_inbound_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn state(&self) -> InstanceState {
        self.inner.lock().expect("status lock").state
    }

    /// Whether the instance is working: running, and its platform not known to be down.
    pub fn is_up(&self) -> bool {
        let inner = self.inner.lock().expect("status lock");
        inner.state == InstanceState::Running && inner.healthy != Some(false)
    }

    pub fn view(&self) -> StatusView {
        let inner = self.inner.lock().expect("status lock");
        let last_inbound = self.last_inbound_ms.load(Ordering::Relaxed);
        StatusView {
            kind: self.kind,
            name: self.name.clone(),
            state: inner.state,
            retry_at_ms: inner.retry_at_ms,
            last_error: inner.last_error.clone(),
            last_inbound_at_ms: (last_inbound > 0).then_some(last_inbound),
            restarts: inner.restarts,
            healthy: inner.healthy,
            health_error: inner.health_error.clone(),
        }
    }
}

/// The delay before restart number `attempt` (from 1): exponential, capped, with jitter over
/// its upper half so that instances failing together do not restart in lockstep.
fn restart_delay(settings: &SupervisorSettings, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let capped = settings
        .restart_base_ms
        .saturating_mul(1 << exponent)
        .min(settings.restart_max_ms)
        .max(1);
    Duration::from_millis(rand::rng().random_range(capped / 2..=capped))
}

/// Run `instance` until `stop`, restarting its work when it fails. Once `draining` is cancelled
/// (the app takes no new messages while it finishes its work), a failure ends the instance's
/// intake instead: the connector fails because the app refused what it brought, which stays on
/// the platform for the next start. Sending goes on until `stop`.
pub async fn supervise(
    instance: Arc<Instance>,
    host: Arc<dyn ConnectorHost>,
    settings: SupervisorSettings,
    stop: CancellationToken,
    draining: CancellationToken,
) {
    let status = instance.status.clone();
    let (kind, name) = (instance.kind(), instance.name().to_string());
    let mut attempt = 0u32;
    loop {
        status.update(|inner| {
            inner.state = InstanceState::Running;
            inner.retry_at_ms = None;
        });
        let started = Instant::now();
        let result = instance
            .connector
            .run(host.clone(), stop.child_token())
            .await;
        if stop.is_cancelled() {
            if let Err(error) = &result {
                tracing::debug!(kind, channel = %name, error = %error, "channel stopped with an error during shutdown");
            }
            status.update(|inner| inner.state = InstanceState::Stopped);
            return;
        }
        if draining.is_cancelled() {
            let reason = match &result {
                Ok(()) => "returned".to_string(),
                Err(error) => error.to_string(),
            };
            tracing::info!(kind, channel = %name, reason, "channel stopped taking messages for the shutdown");
            status.update(|inner| inner.state = InstanceState::Stopped);
            stop.cancelled().await;
            return;
        }
        let error = match result {
            Ok(()) => ConnectorError::retriable("the connector's run returned before shutdown"),
            Err(error) => error,
        };
        if let ConnectorError::Config(_) = &error {
            tracing::error!(kind, channel = %name, error = %error, "channel misconfigured; it stays stopped until the config is fixed");
            status.update(|inner| {
                inner.state = InstanceState::Failed;
                inner.last_error = Some(error.to_string());
            });
            return;
        }
        if started.elapsed() >= Duration::from_secs(settings.healthy_after_secs) {
            attempt = 0;
        }
        attempt += 1;
        let delay = restart_delay(&settings, attempt);
        tracing::warn!(kind, channel = %name, error = %error, attempt, retry_in_ms = delay.as_millis() as u64, "channel failed, restarting");
        status.update(|inner| {
            inner.state = InstanceState::BackingOff;
            inner.retry_at_ms = Some(now_ms() + delay.as_millis() as i64);
            inner.last_error = Some(error.to_string());
            inner.restarts += 1;
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {
                status.update(|inner| inner.state = InstanceState::Stopped);
                return;
            }
        }
    }
}

/// Health-check `instance` now and then every `interval` until `stop`; log changes only.
pub async fn check_health(instance: Arc<Instance>, interval: Duration, stop: CancellationToken) {
    let (kind, name) = (instance.kind(), instance.name().to_string());
    loop {
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), instance.connector.healthcheck())
                .await
                .unwrap_or_else(|_| Err(ConnectorError::retriable("healthcheck timed out")));
        let healthy = outcome.is_ok();
        let was = instance.status.view().healthy;
        match &outcome {
            Err(error) if was != Some(false) => {
                tracing::warn!(kind, channel = %name, error = %error, "channel healthcheck failed");
            }
            Ok(()) if was == Some(false) => {
                tracing::info!(kind, channel = %name, "channel healthy again");
            }
            _ => {}
        }
        instance.status.update(|inner| {
            inner.healthy = Some(healthy);
            inner.health_error = outcome.err().map(|error| error.to_string());
        });
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use switchboard_connector::contract::RecordingHost;
    use switchboard_connector::{Connector, OutboundLimits, OutboundMessage, SendReceipt};

    use super::*;

    /// A connector whose every run fails at once, as one does when the app refuses its messages.
    #[derive(Default)]
    struct Refused {
        runs: AtomicUsize,
    }

    #[async_trait]
    impl Connector for Refused {
        fn kind(&self) -> &'static str {
            "refused"
        }

        fn name(&self) -> &str {
            "refused-1"
        }

        async fn run(
            &self,
            _host: Arc<dyn ConnectorHost>,
            _shutdown: CancellationToken,
        ) -> Result<(), ConnectorError> {
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(ConnectorError::retriable(
                "update not stored: shutting down",
            ))
        }

        async fn send(&self, _message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
            Ok(SendReceipt::default())
        }
    }

    async fn runs_within(draining: bool, wait: Duration) -> (usize, InstanceState) {
        let connector = Arc::new(Refused::default());
        let instance = Arc::new(Instance::new(connector.clone(), OutboundLimits::default()));
        let (stop, drain) = (CancellationToken::new(), CancellationToken::new());
        if draining {
            drain.cancel();
        }
        let settings = SupervisorSettings {
            restart_base_ms: 2,
            restart_max_ms: 2,
            ..SupervisorSettings::default()
        };
        let task = tokio::spawn(supervise(
            instance.clone(),
            RecordingHost::new("refused-1"),
            settings,
            stop.clone(),
            drain,
        ));
        tokio::time::sleep(wait).await;
        let seen = (
            connector.runs.load(std::sync::atomic::Ordering::SeqCst),
            instance.status.state(),
        );
        stop.cancel();
        task.await.unwrap();
        seen
    }

    #[tokio::test]
    async fn a_connector_failing_while_the_app_drains_is_not_restarted() {
        let wait = Duration::from_millis(300);
        let (runs, state) = runs_within(false, wait).await;
        assert!(runs > 2, "restarted while running: {runs} runs");
        assert_ne!(state, InstanceState::Stopped);
        let (runs, state) = runs_within(true, wait).await;
        assert_eq!(runs, 1, "not restarted while draining");
        assert_eq!(state, InstanceState::Stopped);
    }

    #[test]
    fn restart_delays_grow_exponentially_and_are_capped() {
        let settings = SupervisorSettings {
            restart_base_ms: 100,
            restart_max_ms: 1_000,
            ..SupervisorSettings::default()
        };
        for (attempt, bound) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (30, 1_000),
        ] {
            let delay = restart_delay(&settings, attempt).as_millis() as u64;
            assert!(
                (bound / 2..=bound).contains(&delay),
                "attempt {attempt}: {delay} ms not within [{}, {bound}]",
                bound / 2
            );
        }
    }
}
