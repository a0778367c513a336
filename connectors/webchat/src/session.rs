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
use switchboard_connector::{is_plausible_email, normalise_email};

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `payload` keyed with `secret`, ready to finish or verify.
fn keyed(secret: &[u8], payload: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(payload);
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

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
        keyed(&self.secret, payload.as_bytes())
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

/// A shop's signed-in customer, as the page embedding the widget vouches for them: the page's
/// server signs the customer's email with the identity secret it shares with Switchboard
/// (hex HMAC-SHA256 of the trimmed, lower-cased email), and the widget passes both on.
#[derive(Clone)]
pub struct IdentityVerifier {
    secret: Vec<u8>,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityVerifier")
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl IdentityVerifier {
    pub fn new(secret: &[u8]) -> IdentityVerifier {
        IdentityVerifier {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, email: &str) -> HmacSha256 {
        keyed(&self.secret, normalise_email(email).as_bytes())
    }

    /// The signature a page puts beside `email`.
    pub fn sign(&self, email: &str) -> String {
        hex(&self.mac(email).finalize().into_bytes())
    }

    /// The normalised email when `signature` vouches for it.
    pub fn verify(&self, email: &str, signature: &str) -> Option<String> {
        let email = normalise_email(email);
        if email.len() > 254 || !is_plausible_email(&email) || signature.len() != 64 {
            return None;
        }
        let bytes: Vec<u8> = (0..32)
            .map(|index| u8::from_str_radix(signature.get(index * 2..index * 2 + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        self.mac(&email).verify_slice(&bytes).ok()?;
        Some(email)
    }
}

impl SessionSigner {
    /// The visitor id of a signed-in customer: the same on every device, and not guessable
    /// from the email without the server's secret.
    pub fn identity_visitor(&self, email: &str) -> String {
        let digest = self
            .mac(&format!("identity.{}", normalise_email(email)))
            .finalize()
            .into_bytes();
        format!("id-{}", hex(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_verify_only_with_the_secret() {
        let verifier = IdentityVerifier::new(b"shop-secret");
        let signature = verifier.sign(" Ana@Example.com");
        assert_eq!(
            verifier.verify("ana@example.com", &signature).as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(verifier.verify("jordi@example.cat", &signature), None);
        let other = IdentityVerifier::new(b"another-secret");
        assert_eq!(other.verify("ana@example.com", &signature), None);
        assert_eq!(verifier.verify("ana@example.com", "zz"), None);
        assert_eq!(
            verifier.verify("not an email", &verifier.sign("not an email")),
            None
        );
        let signer = SessionSigner::new(b"secret", 3600);
        assert_eq!(
            signer.identity_visitor("ANA@example.com"),
            signer.identity_visitor("ana@example.com")
        );
        assert_ne!(
            signer.identity_visitor("ana@example.com"),
            SessionSigner::new(b"other", 3600).identity_visitor("ana@example.com")
        );
    }

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
