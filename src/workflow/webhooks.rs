//! Webhooks both ways, signed per the Standard Webhooks spec: `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, with secrets written `whsec_<base64 key>`. Receivers can verify our
//! events with the reference `standardwebhooks` libraries, and the back office signs the
//! status updates it pushes in the same way.
//!
//! Outbound events are outbox rows of kind `webhook` (written with the task change that caused
//! them); [`WebhookSender`] is what the outbox worker calls to deliver one. The `webhook-id` is
//! the task event's id, stable across retries, so receivers can drop repeats.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use switchboard_connector::ConnectorError;

use super::settings::WebhookEndpoint;
use crate::outbox::RowSender;
use crate::store::OutboxRow;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the secret must be whsec_ followed by base64")]
    BadSecret,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is too far from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Signs and verifies with one `whsec_` secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    pub fn new(secret: &str) -> Result<Signer, SignatureError> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or(SignatureError::BadSecret)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::BadSecret)?;
        if key.is_empty() {
            return Err(SignatureError::BadSecret);
        }
        Ok(Signer { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(format!("{id}.{timestamp_secs}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Check the three headers against `body`: the timestamp within `tolerance_secs` of
    /// `now_secs`, and one of the space-separated `v1,` signatures matching (in constant time).
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now_secs: i64,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
        let signatures = signatures.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
        let timestamp_secs: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if (now_secs - timestamp_secs).abs() > tolerance_secs {
            return Err(SignatureError::Stale);
        }
        for candidate in signatures.split(' ') {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                continue;
            };
            let Ok(signature) = STANDARD.decode(encoded) else {
                continue;
            };
            let mut mac = self.mac();
            mac.update(format!("{id}.{timestamp_secs}.").as_bytes());
            mac.update(body);
            if mac.verify_slice(&signature).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }
}

/// A new random secret in the Standard Webhooks format.
pub fn generate_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_reference_implementation() {
        // The example of the Standard Webhooks spec's reference test suite.
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let header = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            signer.verify(
                Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                Some("1614265330"),
                Some(&format!("v1,bm90IHRoaXM= {header}")),
                body,
                1614265331,
                300
            ),
            Ok(())
        );
        assert_eq!(
            signer.verify(
                Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                Some("1614265330"),
                Some(&header),
                br#"{"test": 2432232315}"#,
                1614265331,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signer.verify(
                Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                Some("1614265330"),
                Some(&header),
                body,
                1614265330 + 301,
                300
            ),
            Err(SignatureError::Stale)
        );
        assert!(Signer::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Signer::new(&generate_secret()).is_ok());
    }
}
