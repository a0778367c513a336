//! The host a connector instance gets: the router's door, scoped to that instance, so that a
//! connector can only store, read and watch what belongs to it.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_connector::{
    ChannelMessage, ConnectorHost, Cursor, CursorError, EventWatch, HostError, InboundEvent,
    IngestReceipt, MessageRef, TypingSignal,
};

use super::InstanceStatus;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::CursorWrite;

pub struct InstanceHost {
    channel: String,
    router: Arc<Router>,
    bus: Arc<dyn EventBus>,
    status: Arc<InstanceStatus>,
    metrics: Arc<Metrics>,
}

impl InstanceHost {
    pub fn new(
        channel: &str,
        router: Arc<Router>,
        bus: Arc<dyn EventBus>,
        status: Arc<InstanceStatus>,
        metrics: Arc<Metrics>,
    ) -> Arc<InstanceHost> {
        Arc::new(InstanceHost {
            channel: channel.to_string(),
            router,
            bus,
            status,
            metrics,
        })
    }

    fn unavailable(&self, what: &str, error: impl std::fmt::Display) -> HostError {
        tracing::error!(channel = %self.channel, error = %error, "{what} unavailable");
        HostError::Unavailable("storage unavailable".into())
    }
}

#[async_trait]
impl ConnectorHost for InstanceHost {
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn ingest(&self, event: InboundEvent) -> Result<IngestReceipt, HostError> {
        if event.channel != self.channel {
            return Err(HostError::Rejected(format!(
                "the event names channel {:?}, but came in on {:?}",
                event.channel, self.channel
            )));
        }
        let receipt = self.router.ingest(event).await?;
        self.status.inbound();
        Ok(receipt)
    }

    async fn history(&self, thread: &str, limit: u32) -> Result<Vec<ChannelMessage>, HostError> {
        self.router
            .store()
            .history(&self.channel, thread, limit)
            .await
            .map_err(|error| self.unavailable("history", error))
    }

    async fn find_message(
        &self,
        platform_message_id: &str,
    ) -> Result<Option<MessageRef>, HostError> {
        self.router
            .store()
            .find_message(&self.channel, platform_message_id)
            .await
            .map_err(|error| self.unavailable("message look-up", error))
    }

    async fn cursor(&self, key: &str) -> Result<Option<Cursor>, HostError> {
        self.router
            .store()
            .cursor(&self.channel, key)
            .await
            .map_err(|error| self.unavailable("cursor", error))
    }

    async fn set_cursor(
        &self,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> Result<Cursor, CursorError> {
        match self
            .router
            .store()
            .set_cursor(&self.channel, key, expected, value)
            .await
        {
            Ok(CursorWrite::Written(cursor)) => Ok(cursor),
            Ok(CursorWrite::Conflict(current)) => Err(CursorError::Conflict {
                key: key.to_string(),
                current,
            }),
            Err(error) => Err(self.unavailable("cursor", error).into()),
        }
    }

    fn watch(&self, thread: &str) -> EventWatch {
        self.bus.watch_thread(&self.channel, thread)
    }

    fn typing(&self, signal: TypingSignal) {
        self.router.customer_typing(&self.channel, signal);
    }

    fn edge_rejection(&self, reason: &'static str) {
        self.metrics.edge_rejection(reason);
    }
}
