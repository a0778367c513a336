//! Outbound webhooks, signed per the Standard Webhooks spec by `switchboard_webhooks` (the
//! signing, verification and status-update parsing live in that small crate of their own, so
//! the fuzz targets reach them without building the server).
//!
//! Outbound events are outbox rows of kind `webhook` (written with the task change that caused
//! them); [`WebhookSender`] is what the outbox worker calls to deliver one. The `webhook-id` is
//! the task event's id, stable across retries, so receivers can drop repeats.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_connector::ConnectorError;

use super::settings::WebhookEndpoint;
use crate::outbox::RowSender;
use crate::store::OutboxRow;

pub use switchboard_webhooks::{SignatureError, Signer, generate_secret};

/// What an outbox row of kind `webhook` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// The endpoint's name in `[[workflow.webhooks]]`.
    pub endpoint: String,
    /// The `webhook-id`.
    pub id: String,
    /// The exact body to send (signed as is).
    pub body: String,
}

/// Delivers `webhook` outbox rows to the configured endpoints.
pub struct WebhookSender {
    client: reqwest::Client,
    endpoints: BTreeMap<String, (WebhookEndpoint, Signer)>,
}

impl WebhookSender {
    pub fn new(endpoints: &[WebhookEndpoint], timeout: Duration) -> Result<WebhookSender, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| error.to_string())?;
        let mut configured = BTreeMap::new();
        for endpoint in endpoints {
            let signer = Signer::new(&endpoint.secret)
                .map_err(|error| format!("webhook endpoint {:?}: {error}", endpoint.name))?;
            configured.insert(endpoint.name.clone(), (endpoint.clone(), signer));
        }
        Ok(WebhookSender {
            client,
            endpoints: configured,
        })
    }
}

#[async_trait]
impl RowSender for WebhookSender {
    async fn send(&self, row: &OutboxRow) -> Result<(), ConnectorError> {
        let payload: WebhookPayload = serde_json::from_str(&row.payload).map_err(|error| {
            ConnectorError::Permanent(format!("webhook row is not readable: {error}"))
        })?;
        let Some((endpoint, signer)) = self.endpoints.get(&payload.endpoint) else {
            return Err(ConnectorError::Permanent(format!(
                "no webhook endpoint named {:?} is configured",
                payload.endpoint
            )));
        };
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signer.sign(&payload.id, timestamp, payload.body.as_bytes());
        let response = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &payload.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload.body.clone())
            .send()
            .await
            .map_err(|error| ConnectorError::retriable(error.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // 410 Gone is the receiver saying "stop"; anything else may pass with time.
        if status == reqwest::StatusCode::GONE {
            return Err(ConnectorError::Permanent(format!(
                "endpoint {} answered {status}",
                endpoint.name
            )));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(ConnectorError::Retriable {
            message: format!("endpoint {} answered {status}", endpoint.name),
            retry_after,
        })
    }
}
