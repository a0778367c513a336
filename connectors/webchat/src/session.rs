//! Signed visitor session tokens.
//!
//! A token is `v1.<visitor_id>.<issued_at_secs>.<signature>`, the signature being
//! HMAC-SHA256 over `v1.<visitor_id>.<issued_at_secs>` with the server's secret, base64url.
//! Possession of a token is what lets a browser resume a visitor's conversation, so the web chat
//! identity is verified in the sense the workflow needs: nobody else could have produced it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct SessionSigner {
    secret: Vec<u8>,
    ttl_secs: i64,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSigner")
            .field("secret", &"<redacted>")
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl SessionSigner {
    pub fn new(secret: &[u8], ttl_secs: i64) -> SessionSigner {
        SessionSigner {
            secret: secret.to_vec(),
            ttl_secs,
        }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("hmac takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn issue(&self, visitor_id: &str, now_secs: i64) -> String {
        let payload = format!("v1.{visitor_id}.{now_secs}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The visitor id of a valid, unexpired token.
    pub fn verify(&self, token: &str, now_secs: i64) -> Option<String> {
        if token.len() > 256 {
            return None;
        }
        let (payload, signature) = token.rsplit_once('.')?;
        let mut parts = payload.split('.');
        let (Some("v1"), Some(visitor_id), Some(issued), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let issued_secs: i64 = issued.parse().ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.mac(payload).verify_slice(&signature).ok()?;
        if now_secs - issued_secs > self.ttl_secs || visitor_id.is_empty() {
            return None;
        }
        Some(visitor_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let signer = SessionSigner::new(b"secret", 3600);
        let token = signer.issue("visitor-1", 1000);
        assert_eq!(signer.verify(&token, 1001).as_deref(), Some("visitor-1"));
        let forged = token.replace("visitor-1", "visitor-2");
        assert_eq!(signer.verify(&forged, 1001), None);
        assert_eq!(signer.verify(&token, 1000 + 3601), None, "expired");
        assert_eq!(
            SessionSigner::new(b"other", 3600).verify(&token, 1001),
            None
        );
        assert_eq!(signer.verify("garbage", 1001), None);
        assert_eq!(signer.verify("v1.a.b.c.d", 1001), None);
    }
}
