//! Helpers for tests against the project's mail peer (tests/peers/mail/start.sh: Postfix and
//! Dovecot on loopback): fresh mailboxes per test, a channel config for them, and a customer's
//! mail client that sends over SMTP and reads its inbox over IMAP.

use std::time::Duration;

use lettre::AsyncTransport;
use lettre::address::Envelope;
use mail_parser::{MessageParser, MimeHeaders};
use switchboard_connector::{ConnectorError, Secret};

use crate::config::{EmailConfig, TrustSenders};

/// Every test mailbox's password (the peer's Dovecot takes any @test.local user).
pub const PASSWORD: &str = "testpw";
/// The peer's authserv-id in `Authentication-Results`.
pub const AUTHSERV_ID: &str = "mail.test.local";
/// Where mail arrives as from the internet (no AUTH).
pub const MX_PORT: u16 = 2525;

/// A fresh address `<prefix>-<random>@test.local`, a mailbox no other test uses.
pub fn mailbox(prefix: &str) -> String {
    let random: u64 = rand_u64();
    format!("{prefix}-{random:016x}@test.local")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// The channel config of a support mailbox on the peer: IMAP with STARTTLS, submission with
/// STARTTLS and AUTH, the peer's self-signed certificate accepted.
pub fn channel_config(address: &str) -> EmailConfig {
    EmailConfig {
        address: address.to_string(),
        display_name: Some("Shop support".into()),
        imap_url: "imap://127.0.0.1:1143".into(),
        smtp_url: "smtp://127.0.0.1:2587".into(),
        username: address.to_string(),
        password: Secret::new(PASSWORD),
        mailbox: "INBOX".into(),
        sent_mailbox: "Sent".into(),
        import_existing: false,
        idle: true,
        poll_secs: 30,
        trust_senders: TrustSenders::Authenticated,
        authserv_id: AUTHSERV_ID.into(),
        max_message_bytes: 40 * 1024 * 1024,
        accept_invalid_certs: true,
        timeout_secs: 30,
    }
}

/// The same config as a `[[channel]]` table's keys.
pub fn channel_table(name: &str, address: &str) -> serde_json::Map<String, serde_json::Value> {
    let value = serde_json::json!({
        "kind": crate::KIND,
        "name": name,
        "address": address,
        "display_name": "Shop support",
        "imap_url": "imap://127.0.0.1:1143",
        "smtp_url": "smtp://127.0.0.1:2587",
        "username": address,
        "password": PASSWORD,
        "authserv_id": AUTHSERV_ID,
        "accept_invalid_certs": true,
    });
    value.as_object().cloned().expect("an object")
}

/// A mail as the customer's client shows it.
#[derive(Debug, Clone)]
pub struct Received {
    pub uid: u32,
    pub message_id: String,
    pub from: String,
    pub subject: String,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub text: String,
    pub html: Option<String>,
    pub auto_submitted: Option<String>,
    pub raw: Vec<u8>,
}

/// A person with a mailbox on the peer: sends mail to the MX port, reads the inbox over IMAP.
#[derive(Debug, Clone)]
pub struct MailUser {
    pub address: String,
}

impl MailUser {
    pub fn new(prefix: &str) -> MailUser {
        MailUser {
            address: mailbox(prefix),
        }
    }

    /// Hand a raw mail to the MX, as another server would (envelope from this user).
    pub async fn send_raw(&self, to: &str, raw: &[u8]) {
        Mx::new()
            .deliver(&self.address, to, raw)
            .await
            .expect("the MX takes the mail");
    }

    /// Write a plain mail; `answers` is the Message-ID replied to (In-Reply-To and References).
    pub async fn write(
        &self,
        to: &str,
        subject: &str,
        message_id: &str,
        answers: Option<&str>,
        text: &str,
    ) {
        self.write_with(to, subject, message_id, answers, "", text)
            .await;
    }

    /// [`MailUser::write`] with extra header lines (`Name: value\r\n` each).
    pub async fn write_with(
        &self,
        to: &str,
        subject: &str,
        message_id: &str,
        answers: Option<&str>,
        extra_headers: &str,
        text: &str,
    ) {
        let raw = self.compose(to, subject, message_id, answers, extra_headers, text);
        self.send_raw(to, raw.as_bytes()).await;
    }

    /// A plain mail from this user; `answers` is the Message-ID replied to (`In-Reply-To` and
    /// `References`), `extra_headers` are more header lines (`Name: value\r\n` each).
    pub fn compose(
        &self,
        to: &str,
        subject: &str,
        message_id: &str,
        answers: Option<&str>,
        extra_headers: &str,
        text: &str,
    ) -> String {
        let threading = match answers {
            Some(id) => format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"),
            None => String::new(),
        };
        format!(
            "From: Customer <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
             {threading}{extra_headers}Date: Tue, 3 Jun 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
            from = self.address,
        )
    }

    /// Every mail in the inbox, oldest first.
    pub async fn inbox(&self) -> Vec<Received> {
        let mut inbox = self.open_inbox().await.expect("the customer logs in");
        let mails = inbox.new_mails().await.expect("the inbox is read");
        inbox.close().await;
        mails
    }

    /// The inbox held open, read mail by mail as it arrives.
    pub async fn open_inbox(&self) -> Result<Inbox, ConnectorError> {
        let checked = channel_config(&self.address).check("test-client")?;
        let tls =
            crate::tls::client_config(true).map_err(|error| crate::imap::error("tls", error))?;
        let mut session = crate::imap::connect(&checked, &tls).await?;
        crate::imap::select(&mut session, "INBOX", IMAP_LIMIT).await?;
        Ok(Inbox {
            session,
            last_uid: 0,
        })
    }

    /// Wait until the inbox holds at least `count` mails (at most `seconds`), then return it.
    pub async fn wait_for(&self, count: usize, seconds: u64) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let mails = self.inbox().await;
            if mails.len() >= count || tokio::time::Instant::now() > deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const IMAP_LIMIT: Duration = Duration::from_secs(30);

/// A customer's inbox over one IMAP session: [`Inbox::new_mails`] returns what arrived since
/// its last call.
pub struct Inbox {
    session: crate::imap::Session,
    last_uid: u32,
}

impl Inbox {
    /// The mails that arrived since the last call (all of them on the first), oldest first.
    pub async fn new_mails(&mut self) -> Result<Vec<Received>, ConnectorError> {
        // NOOP lets the server report mail delivered since the last command.
        match tokio::time::timeout(IMAP_LIMIT, self.session.noop()).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => return Err(crate::imap::error("noop", failure)),
            Err(_) => return Err(crate::imap::error("noop", "no answer")),
        }
        let uids = crate::imap::uids_after(&mut self.session, self.last_uid, IMAP_LIMIT).await?;
        let mut mails = Vec::new();
        for uid in uids {
            self.last_uid = self.last_uid.max(uid);
            let Some(raw) = crate::imap::raw(&mut self.session, uid, false, IMAP_LIMIT).await?
            else {
                continue;
            };
            if let Some(mail) = received(uid, raw) {
                mails.push(mail);
            }
        }
        Ok(mails)
    }

    pub async fn close(mut self) {
        let _ = self.session.logout().await;
    }
}

/// A mail as the customer's client shows it; `None` if it does not parse.
fn received(uid: u32, raw: Vec<u8>) -> Option<Received> {
    let message = MessageParser::default().parse(&raw)?;
    let ids = |value: &mail_parser::HeaderValue<'_>| -> Vec<String> {
        match value {
            mail_parser::HeaderValue::Text(id) => vec![id.to_string()],
            mail_parser::HeaderValue::TextList(ids) => {
                ids.iter().map(|id| id.to_string()).collect()
            }
            _ => Vec::new(),
        }
    };
    let html = message
        .html_bodies()
        .find(|part| part.is_text_html())
        .and_then(|part| part.text_contents().map(str::to_string));
    Some(Received {
        uid,
        message_id: message.message_id().unwrap_or_default().to_string(),
        from: message
            .from()
            .and_then(|from| from.first())
            .and_then(|addr| addr.address())
            .unwrap_or_default()
            .to_string(),
        subject: message.subject().unwrap_or_default().to_string(),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        text: message
            .body_text(0)
            .map(|text| text.trim().to_string())
            .unwrap_or_default(),
        html,
        auto_submitted: message
            .header_raw("Auto-Submitted")
            .map(|value| value.trim().to_string()),
        raw,
    })
}

/// The peer's MX (port [`MX_PORT`], no AUTH), over pooled SMTP connections: mail handed to it
/// arrives as from the internet.
#[derive(Clone)]
pub struct Mx(lettre::AsyncSmtpTransport<lettre::Tokio1Executor>);

impl Default for Mx {
    fn default() -> Self {
        Mx::new()
    }
}

impl Mx {
    pub fn new() -> Mx {
        Mx(
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(MX_PORT)
                .timeout(Some(Duration::from_secs(60)))
                .build(),
        )
    }

    /// Hand `raw` to the MX with the envelope `from` -> `to`; an error says what went wrong.
    pub async fn deliver(&self, from: &str, to: &str, raw: &[u8]) -> Result<(), String> {
        let envelope = Envelope::new(
            Some(
                from.parse()
                    .map_err(|error| format!("sender {from}: {error}"))?,
            ),
            vec![
                to.parse()
                    .map_err(|error| format!("recipient {to}: {error}"))?,
            ],
        )
        .map_err(|error| format!("envelope: {error}"))?;
        self.0
            .send_raw(&envelope, raw)
            .await
            .map(|_| ())
            .map_err(|error| format!("the MX refused the mail: {error}"))
    }
}

/// The attachment name of each part of a raw mail (for checks on what was received).
pub fn attachment_names(raw: &[u8]) -> Vec<String> {
    MessageParser::default()
        .parse(raw)
        .map(|message| {
            message
                .attachments()
                .filter_map(|part| part.attachment_name().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
