//! Channel instances: built from the `[[channel]]` tables of the config by the connector
//! factories compiled in, each with its outbound limits and its supervised state.
//!
//! Which kinds exist is decided by cargo features (`channel-webchat`, ...): each connector
//! crate registers its factory in [`Registry::builtin`]. Any number of named instances of a
//! kind can run; the instance name is the `channel` of every conversation and message it
//! carries, so replies leave through the instance a conversation came in on.

pub mod host;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use switchboard_connector::{
    ChannelFactory, ChannelTable, Connector, InstanceConfig, OutboundLimits, TableError,
};
use tokio::sync::Semaphore;

use crate::store::now_ms;
pub use supervisor::{InstanceState, InstanceStatus, StatusView};

#[derive(Debug, thiserror::Error)]
pub enum ChannelConfigError {
    /// The keys every kind shares (kind, name, enabled, outbound_*), or `${VAR}`.
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(
        "channel {name:?}: no connector of kind {kind:?} in this build (kinds compiled in: {available})"
    )]
    UnknownKind {
        name: String,
        kind: String,
        available: String,
    },
    #[error("two channels are named {0:?}: instance names must be unique")]
    Duplicate(String),
    #[error("channel {name:?}: {message}")]
    Invalid { name: String, message: String },
    #[error(transparent)]
    Connector(#[from] switchboard_connector::ConnectorError),
}

/// The connector factories compiled in, keyed by kind.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn ChannelFactory>>,
}

impl Registry {
    /// The factories of the connector crates enabled by cargo features.
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        #[cfg(feature = "channel-webchat")]
        registry.register(Arc::new(switchboard_webchat::WebchatFactory::default()));
        #[cfg(feature = "channel-api")]
        registry.register(Arc::new(switchboard_api_channel::ApiChannelFactory));
        #[cfg(feature = "channel-email")]
        registry.register(Arc::new(switchboard_email::EmailFactory));
        #[cfg(feature = "channel-telegram")]
        registry.register(Arc::new(switchboard_telegram::TelegramFactory));
        #[cfg(feature = "channel-discord")]
        registry.register(Arc::new(switchboard_discord::DiscordFactory));
        registry
    }

    pub fn register(&mut self, factory: Arc<dyn ChannelFactory>) {
        self.factories.insert(factory.kind(), factory);
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// The factory of `kind`, if compiled in.
    pub fn factory(&self, kind: &str) -> Option<&Arc<dyn ChannelFactory>> {
        self.factories.get(kind)
    }

    /// Build every enabled instance of `tables`.
    pub fn build(
        &self,
        tables: &[serde_json::Map<String, Value>],
        data_dir: &Path,
        public_url: Option<&str>,
    ) -> Result<Channels, ChannelConfigError> {
        let mut channels = Channels::default();
        for (index, table) in tables.iter().enumerate() {
            let ChannelTable {
                kind,
                name,
                enabled,
                outbound,
                settings,
            } = ChannelTable::read(index + 1, table, &|variable| std::env::var(variable).ok())?;
            if channels.instances.contains_key(&name) {
                return Err(ChannelConfigError::Duplicate(name));
            }
            if !enabled {
                tracing::info!(channel = %name, kind = %kind, "channel disabled in config");
                continue;
            }
            let factory = self.factories.get(kind.as_str()).ok_or_else(|| {
                ChannelConfigError::UnknownKind {
                    name: name.clone(),
                    kind: kind.clone(),
                    available: self.kinds().join(", "),
                }
            })?;
            let connector = factory.build(InstanceConfig {
                kind: kind.clone(),
                name: name.clone(),
                data_dir: data_dir.to_path_buf(),
                public_url: public_url.map(str::to_string),
                settings,
            })?;
            if connector.name() != name || connector.kind() != kind {
                return Err(ChannelConfigError::Invalid {
                    name: name.clone(),
                    message: format!(
                        "the {kind} factory built an instance that calls itself {:?} of kind {}",
                        connector.name(),
                        connector.kind()
                    ),
                });
            }
            channels.add(connector.clone(), connector.limits().tightened(outbound));
        }
        Ok(channels)
    }
}

/// One running channel instance.
pub struct Instance {
    pub connector: Arc<dyn Connector>,
    pub limits: OutboundLimits,
    pub status: Arc<InstanceStatus>,
    rate: Option<DefaultDirectRateLimiter>,
    in_flight: Option<Semaphore>,
    /// Until when (ms) the platform asked this instance to stop sending.
    paused_until_ms: AtomicI64,
}

impl Instance {
    fn new(connector: Arc<dyn Connector>, limits: OutboundLimits) -> Instance {
        let rate = limits.per_second.map(|per_second| {
            let burst = std::num::NonZeroU32::new(limits.burst.max(1)).expect("at least one");
            let period = Duration::from_secs_f64(1.0 / per_second.max(1e-3));
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(burst);
            RateLimiter::direct(quota)
        });
        Instance {
            status: Arc::new(InstanceStatus::new(connector.kind(), connector.name())),
            rate,
            in_flight: limits.concurrency.map(Semaphore::new),
            paused_until_ms: AtomicI64::new(0),
            connector,
            limits,
        }
    }

    pub fn name(&self) -> &str {
        self.connector.name()
    }

    pub fn kind(&self) -> &'static str {
        self.connector.kind()
    }

    /// The platform asked for a pause (a 429's `retry_after`): nothing leaves this instance
    /// until then. Other instances are not affected.
    pub fn pause(&self, pause: Duration) {
        let until = now_ms() + pause.as_millis() as i64;
        self.paused_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    /// When the pause ends, if the instance is paused now.
    pub fn paused_until(&self) -> Option<i64> {
        let until = self.paused_until_ms.load(Ordering::SeqCst);
        (until > now_ms()).then_some(until)
    }

    /// Wait for this instance's rate and concurrency limits; hold the returned permit for the
    /// duration of the send.
    pub async fn ready(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = match &self.in_flight {
            Some(semaphore) => Some(semaphore.acquire().await.expect("never closed")),
            None => None,
        };
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        permit
    }
}

/// The channel instances of this process, by name.
#[derive(Default)]
pub struct Channels {
    instances: BTreeMap<String, Arc<Instance>>,
}

impl Channels {
    /// Add an instance built outside the registry (tests, the benchmark).
    pub fn add(&mut self, connector: Arc<dyn Connector>, limits: OutboundLimits) {
        let name = connector.name().to_string();
        self.instances
            .insert(name, Arc::new(Instance::new(connector, limits)));
    }

    pub fn get(&self, name: &str) -> Result<&Arc<Instance>, UnknownChannel> {
        self.instances.get(name).ok_or_else(|| UnknownChannel {
            name: name.to_string(),
            available: self.names().join(", "),
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.instances.keys().map(String::as_str).collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.instances.values()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no channel instance named {name:?} (running: {available})")]
pub struct UnknownChannel {
    pub name: String,
    pub available: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn an_unknown_kind_lists_the_kinds_compiled_in() {
        let registry = Registry::builtin();
        let error = registry
            .build(
                &[table(json!({"kind": "telegrm", "name": "shop-bot"}))],
                Path::new("data"),
                None,
            )
            .err()
            .expect("unknown kind refused");
        let message = error.to_string();
        assert!(message.contains("\"telegrm\""), "{message}");
        assert!(message.contains("webchat"), "{message}");
    }

    #[test]
    fn names_must_be_unique_and_url_safe() {
        let registry = Registry::builtin();
        let twice = [
            table(json!({"kind": "webchat", "name": "web"})),
            table(json!({"kind": "webchat", "name": "web"})),
        ];
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            registry.build(&twice, dir.path(), None),
            Err(ChannelConfigError::Duplicate(_))
        ));
        let bad = [table(json!({"kind": "webchat", "name": "Web Chat"}))];
        assert!(matches!(
            registry.build(&bad, dir.path(), None),
            Err(ChannelConfigError::Table(TableError::BadName(_)))
        ));
        let missing = [table(json!({"kind": "webchat"}))];
        assert!(matches!(
            registry.build(&missing, dir.path(), None),
            Err(ChannelConfigError::Table(TableError::Missing {
                key: "name",
                ..
            }))
        ));
    }
}
