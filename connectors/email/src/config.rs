//! The keys of an email channel's `[[channel]]` table, and the server addresses they name.

use serde::Deserialize;
use switchboard_connector::{ConnectorError, Secret, is_plausible_email, normalise_email};

/// One mailbox: where mail comes in (IMAP) and how replies leave (SMTP submission).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The support address: replies come from it, and mail from it is ours (never answered).
    pub address: String,
    /// The name shown beside the address in replies ("Shop support").
    #[serde(default)]
    pub display_name: Option<String>,
    /// `imaps://host:993` (TLS) or `imap://host:143` (STARTTLS, required).
    pub imap_url: String,
    /// `smtps://host:465` (TLS) or `smtp://host:587` (STARTTLS, required).
    pub smtp_url: String,
    pub username: String,
    pub password: Secret,
    /// The IMAP mailbox read for customer mail.
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// Where sent replies are filed (as a mail client does), which also lets a send repeated
    /// after a crash find the copy and not mail the customer twice. Empty: not filed (for
    /// servers that file submitted mail themselves, as Gmail does).
    #[serde(default = "default_sent_mailbox")]
    pub sent_mailbox: String,
    /// On the first connection, mail already in the mailbox is not answered; true: it is
    /// stored as history (never answered either).
    #[serde(default)]
    pub import_existing: bool,
    /// Wait for new mail with IMAP IDLE when the server offers it; false: poll.
    #[serde(default = "default_true")]
    pub idle: bool,
    /// Seconds between polls without IDLE, and the longest an IDLE waits before checking anyway.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// Whose From address is taken as proven, so that the assistant may act on that customer's
    /// orders: "authenticated" (an `Authentication-Results` header from `authserv_id`, your own
    /// receiving server, says DMARC passed, or DKIM passed for the From domain), "none", or
    /// "any" (only for a mailbox that receives solely from a relay that authenticates senders).
    #[serde(default = "default_trust")]
    pub trust_senders: TrustSenders,
    /// The authserv-id your receiving server writes in `Authentication-Results`
    /// (`mx.shop.example`). Empty: no header is trusted.
    #[serde(default)]
    pub authserv_id: String,
    /// Mail larger than this many bytes is not downloaded: it is stored with a note, and the
    /// raw message stays viewable from the mailbox.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// true only for a local test server with a self-signed certificate.
    #[serde(default)]
    pub accept_invalid_certs: bool,
    /// Seconds an SMTP or IMAP command may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustSenders {
    Authenticated,
    None,
    Any,
}

fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_sent_mailbox() -> String {
    "Sent".into()
}
fn default_true() -> bool {
    true
}
fn default_poll_secs() -> u64 {
    60
}
fn default_trust() -> TrustSenders {
    TrustSenders::Authenticated
}
fn default_max_message_bytes() -> u64 {
    40 * 1024 * 1024
}
fn default_timeout_secs() -> u64 {
    30
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (imaps, smtps).
    Tls,
    /// A plain connection upgraded with STARTTLS before anything else is said.
    StartTls,
}

/// A server named by an `imap(s)://` or `smtp(s)://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

impl Server {
    /// Parse `scheme://host[:port][/]`; `tls_scheme` and `plain_scheme` are the two accepted
    /// schemes with their default ports.
    pub fn parse(
        url: &str,
        tls_scheme: (&str, u16),
        plain_scheme: (&str, u16),
    ) -> Result<Server, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a URL"))?;
        let (security, default_port) = if scheme.eq_ignore_ascii_case(tls_scheme.0) {
            (Security::Tls, tls_scheme.1)
        } else if scheme.eq_ignore_ascii_case(plain_scheme.0) {
            (Security::StartTls, plain_scheme.1)
        } else {
            return Err(format!(
                "{url:?}: the scheme must be {} or {}",
                tls_scheme.0, plain_scheme.0
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '@', '?']) {
            return Err(format!(
                "{url:?}: give only the host and port (credentials are separate keys)"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?}: bad port {port:?}"))?;
                (host, port)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Server {
            host: host.to_string(),
            port,
            security,
        })
    }
}

/// Everything the connector needs, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: EmailConfig,
    /// The support address, normalised.
    pub address: String,
    /// Its domain: outbound Message-IDs are `<id@domain>`.
    pub domain: String,
    pub imap: Server,
    pub smtp: Server,
}

impl EmailConfig {
    pub fn check(self, name: &str) -> Result<Checked, ConnectorError> {
        let bad = |message: String| ConnectorError::Config(format!("channel {name:?}: {message}"));
        let address = normalise_email(&self.address);
        if !is_plausible_email(&address) {
            return Err(bad(format!(
                "address {:?} is not an email address",
                self.address
            )));
        }
        let domain = address
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_string())
            .unwrap_or_default();
        let imap = Server::parse(&self.imap_url, ("imaps", 993), ("imap", 143))
            .map_err(|error| bad(format!("imap_url: {error}")))?;
        let smtp = Server::parse(&self.smtp_url, ("smtps", 465), ("smtp", 587))
            .map_err(|error| bad(format!("smtp_url: {error}")))?;
        if self.username.is_empty() || self.password.is_empty() {
            return Err(bad("username and password are required".into()));
        }
        if self.mailbox.is_empty() {
            return Err(bad("mailbox must not be empty".into()));
        }
        if self.trust_senders == TrustSenders::Authenticated && self.authserv_id.is_empty() {
            tracing::warn!(
                channel = name,
                "trust_senders is \"authenticated\" but authserv_id is empty: no sender is \
                 taken as proven"
            );
        }
        Ok(Checked {
            address,
            domain,
            imap,
            smtp,
            config: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let imap = |url| Server::parse(url, ("imaps", 993), ("imap", 143));
        assert_eq!(
            imap("imaps://imap.shop.example").unwrap(),
            Server {
                host: "imap.shop.example".into(),
                port: 993,
                security: Security::Tls
            }
        );
        assert_eq!(
            imap("imap://127.0.0.1:1143/").unwrap(),
            Server {
                host: "127.0.0.1".into(),
                port: 1143,
                security: Security::StartTls
            }
        );
        assert_eq!(imap("imaps://[::1]:993").unwrap().host, "::1");
        for bad in [
            "imap.shop.example",
            "pop3://x",
            "imaps://user:pw@host",
            "imaps://host:99999",
            "imaps://",
        ] {
            assert!(imap(bad).is_err(), "{bad}");
        }
    }
}
