//! The connector registry: which channels this instance runs, keyed by kind.
//!
//! The app knows connectors only through [`Connector`]; which ones exist is decided by cargo
//! features (`channel-webchat`, ...) and the config file.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchboard_connector::Connector;

#[derive(Debug, thiserror::Error)]
#[error("no connector for channel {kind:?} (available: {available})")]
pub struct UnknownChannel {
    pub kind: String,
    pub available: String,
}

#[derive(Default)]
pub struct Channels {
    connectors: BTreeMap<&'static str, Arc<dyn Connector>>,
}

impl Channels {
    pub fn register(&mut self, connector: Arc<dyn Connector>) {
        self.connectors.insert(connector.kind(), connector);
    }

    pub fn get(&self, kind: &str) -> Result<Arc<dyn Connector>, UnknownChannel> {
        self.connectors
            .get(kind)
            .cloned()
            .ok_or_else(|| UnknownChannel {
                kind: kind.to_string(),
                available: self.kinds().join(", "),
            })
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.connectors.keys().copied().collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }
}
