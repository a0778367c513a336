//! Webhooks both ways, signed per the Standard Webhooks spec: `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, with secrets written `whsec_<base64 key>`. Receivers verify our events
//! with the reference `standardwebhooks` libraries, and the back office signs the status
//! updates it pushes the same way; [`parse_status_update`] reads their body.
//!
//! Only bytes in, values out: the server's workflow sends and receives, this crate signs,
//! verifies and parses, and the fuzz targets in `fuzz/` drive it with untrusted input.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

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
        // abs_diff: a timestamp near i64::MIN must not overflow the subtraction.
        if now_secs.abs_diff(timestamp_secs) > tolerance_secs.unsigned_abs() {
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

/// The event type of an inbound status update.
pub const STATUS_EVENT: &str = "task.status";

/// An inbound status update's body: `{"type": "task.status", "data": {...}}`. `S` is the
/// status type of the receiver (the workflow's task status).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusEvent<S> {
    #[serde(rename = "type")]
    kind: String,
    data: StatusUpdate<S>,
}

/// What a status update asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate<S> {
    pub task_id: String,
    pub status: S,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub customer_note: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpdateError {
    /// Not JSON, or not the shape of a status update (the message says where).
    #[error("not a status update: {0}")]
    Body(String),
    #[error("unknown event type {0:?} (known: task.status)")]
    UnknownType(String),
}

/// Read a status update's body (after its signature was verified).
pub fn parse_status_update<S: DeserializeOwned>(
    body: &[u8],
) -> Result<StatusUpdate<S>, UpdateError> {
    let event: StatusEvent<S> =
        serde_json::from_slice(body).map_err(|error| UpdateError::Body(error.to_string()))?;
    if event.kind != STATUS_EVENT {
        return Err(UpdateError::UnknownType(event.kind));
    }
    Ok(event.data)
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

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        for timestamp in [i64::MIN.to_string(), i64::MAX.to_string()] {
            assert_eq!(
                signer.verify(
                    Some("id"),
                    Some(&timestamp),
                    Some("v1,x"),
                    b"{}",
                    1_700_000_000,
                    300
                ),
                Err(SignatureError::Stale)
            );
        }
    }

    #[test]
    fn status_updates_are_read_or_refused_with_a_reason() {
        let update: StatusUpdate<String> = parse_status_update(
            br#"{"type": "task.status", "data": {"task_id": "t1", "status": "done"}}"#,
        )
        .unwrap();
        assert_eq!(update.task_id, "t1");
        assert_eq!(update.status, "done");
        assert_eq!(
            parse_status_update::<String>(
                br#"{"type": "task.created", "data": {"task_id": "t", "status": "x"}}"#
            ),
            Err(UpdateError::UnknownType("task.created".into()))
        );
        assert!(matches!(
            parse_status_update::<String>(br#"{"type": "task.status", "data": {}, "extra": 1}"#),
            Err(UpdateError::Body(_))
        ));
    }
}
