//! Signed visitor session tokens, and the identity tokens of signed-in customers.
//!
//! A session token is `v1.<visitor_id>.<issued_at_secs>.<signature>`, the signature being
//! HMAC-SHA256 over `v1.<visitor_id>.<issued_at_secs>` with the server's secret, base64url.
//! Possession of a token is what lets a browser resume a visitor's conversation, so the web chat
//! identity is verified in the sense the workflow needs: nobody else could have produced it.
//! A token is good for the channel's idle time after it was issued, and every resume issues a
//! fresh one, so an active visitor keeps their session and a token left unused expires.
//!
//! An identity token is a compact JWT (HS256) that the embedding site's server signs with the
//! identity secret: `{"email", "exp", "aud"}`, `aud` being the origin of the page that embeds
//! the widget. It expires, and it is refused on a socket from any other origin, so a token seen
//! in one page's source is neither a credential forever nor usable elsewhere. JWT because every
//! web stack can sign one with a library it already has.

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
/// server signs an identity token with the secret it shares with Switchboard, and the widget
/// passes it on. The old form (hex HMAC-SHA256 of the trimmed, lower-cased email, with no
/// expiry) is accepted only when `legacy` is on.
#[derive(Clone)]
pub struct IdentityVerifier {
    secret: Vec<u8>,
    /// Longest lifetime a token may claim (`exp` minus now).
    max_ttl_secs: i64,
    legacy: bool,
}

/// The claims of an identity token.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct IdentityClaims {
    email: String,
    exp: i64,
    aud: String,
}

/// Why an identity token was refused; `code` is what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefused {
    #[error("the identity token is not signed by this site")]
    Invalid,
    #[error("the identity token has expired")]
    Expired,
    #[error("the identity token was issued for another origin")]
    WrongOrigin,
    #[error("the identity token claims a lifetime longer than allowed")]
    TooLong,
    #[error("the legacy identity signature is not accepted")]
    LegacyDisabled,
}

impl IdentityRefused {
    pub fn code(self) -> &'static str {
        match self {
            IdentityRefused::Expired => "identity_expired",
            IdentityRefused::WrongOrigin => "identity_wrong_origin",
            IdentityRefused::Invalid
            | IdentityRefused::TooLong
            | IdentityRefused::LegacyDisabled => "invalid_identity",
        }
    }
}

/// Clock skew tolerated between the signing site and this server.
const LEEWAY_SECS: u64 = 30;

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
            max_ttl_secs: 24 * 3600,
            legacy: false,
        }
    }

    /// Tokens may claim at most `max_ttl_secs`; `legacy` also accepts email signatures.
    pub fn with_policy(mut self, max_ttl_secs: i64, legacy: bool) -> IdentityVerifier {
        self.max_ttl_secs = max_ttl_secs;
        self.legacy = legacy;
        self
    }

    /// An identity token for `email`, valid on pages of `origin` until `exp` (Unix seconds).
    pub fn issue_token(&self, email: &str, origin: &str, exp: i64) -> String {
        let claims = IdentityClaims {
            email: normalise_email(email),
            exp,
            aud: normalise_origin(origin),
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
        .expect("HS256 signing cannot fail")
    }

    /// The normalised email of a valid token presented on a socket from `origin`.
    pub fn verify_token(
        &self,
        token: &str,
        origin: Option<&str>,
        now_secs: i64,
    ) -> Result<String, IdentityRefused> {
        use jsonwebtoken::errors::ErrorKind;
        if token.len() > 2048 {
            return Err(IdentityRefused::Invalid);
        }
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "aud"]);
        // The audience is checked below against the socket's own origin.
        validation.validate_aud = false;
        let decoded = jsonwebtoken::decode::<IdentityClaims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => IdentityRefused::Expired,
            _ => IdentityRefused::Invalid,
        })?;
        let claims = decoded.claims;
        if claims.exp + LEEWAY_SECS as i64 <= now_secs {
            return Err(IdentityRefused::Expired);
        }
        if claims.exp - now_secs > self.max_ttl_secs {
            return Err(IdentityRefused::TooLong);
        }
        if origin.map(normalise_origin).as_deref() != Some(normalise_origin(&claims.aud).as_str()) {
            return Err(IdentityRefused::WrongOrigin);
        }
        let email = normalise_email(&claims.email);
        if email.len() > 254 || !is_plausible_email(&email) {
            return Err(IdentityRefused::Invalid);
        }
        Ok(email)
    }

    /// The legacy form: refused unless enabled.
    pub fn verify_legacy(&self, email: &str, signature: &str) -> Result<String, IdentityRefused> {
        if !self.legacy {
            return Err(IdentityRefused::LegacyDisabled);
        }
        self.verify(email, signature)
            .ok_or(IdentityRefused::Invalid)
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

/// `https://Shop.example.com/` as `https://shop.example.com`: origins compare this way.
pub fn normalise_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
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
    fn identity_tokens_expire_and_stay_on_their_origin() {
        let verifier = IdentityVerifier::new(b"shop-secret").with_policy(3600, false);
        let origin = "https://shop.example.com";
        let now = chrono::Utc::now().timestamp();
        let token = verifier.issue_token("Ana@Example.com", origin, now + 600);
        assert_eq!(
            verifier.verify_token(&token, Some("https://Shop.example.com/"), now),
            Ok("ana@example.com".to_string())
        );
        assert_eq!(
            verifier.verify_token(&token, Some("https://evil.example.net"), now),
            Err(IdentityRefused::WrongOrigin)
        );
        assert_eq!(
            verifier.verify_token(&token, None, now),
            Err(IdentityRefused::WrongOrigin)
        );
        let expired = verifier.issue_token("ana@example.com", origin, now - 120);
        assert_eq!(
            verifier.verify_token(&expired, Some(origin), now),
            Err(IdentityRefused::Expired)
        );
        let forever = verifier.issue_token("ana@example.com", origin, now + 10 * 365 * 86400);
        assert_eq!(
            verifier.verify_token(&forever, Some(origin), now),
            Err(IdentityRefused::TooLong)
        );
        let other = IdentityVerifier::new(b"another-secret");
        assert_eq!(
            other.verify_token(&token, Some(origin), now),
            Err(IdentityRefused::Invalid)
        );
        assert_eq!(
            verifier.verify_legacy("ana@example.com", &verifier.sign("ana@example.com")),
            Err(IdentityRefused::LegacyDisabled)
        );
        let legacy = IdentityVerifier::new(b"shop-secret").with_policy(3600, true);
        assert!(
            legacy
                .verify_legacy("ana@example.com", &legacy.sign("ana@example.com"))
                .is_ok()
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
