//! The email channel: a mailbox read over IMAP, replies sent by SMTP submission.
//!
//! ```toml
//! [[channel]]
//! kind = "email"
//! name = "support"
//! address = "support@shop.example"
//! imap_url = "imaps://imap.shop.example:993"   # or imap://host:143 with STARTTLS
//! smtp_url = "smtps://smtp.shop.example:465"   # or smtp://host:587 with STARTTLS
//! username = "support@shop.example"
//! password = "${SUPPORT_MAIL_PASSWORD}"
//! ```
//!
//! - **In** ([`inbound`]): IDLE where the server offers it, polling otherwise. UIDVALIDITY and
//!   the last UID are a durable cursor; the first connection answers nothing already there.
//!   Every mail's Message-ID is its platform id (a stable one is made for mail without), so a
//!   repeat is stored once.
//! - **Threads** ([`thread`]): `In-Reply-To`/`References` find the conversation through the ids
//!   we stored and sent; otherwise sender and subject name the thread.
//! - **Content** ([`parse`], [`clean`]): MIME and charsets by mail-parser, HTML-only mail as
//!   text, quoted history and signatures cut from what the assistant and agents read. The raw
//!   mail stays viewable: every message carries it as its first attachment, `message.eml`
//!   (`message/rfc822`), fetched from the mailbox on demand like the mail's own attachments
//!   (`GET /api/v1/messages/{id}/attachments/{n}`); the [`EmailFields`] extension holds the
//!   headers that matter.
//! - **Loops**: auto-replies, bounces and list mail are recorded, never answered (the app's
//!   `RecordOnly`); our own bot replies say `Auto-Submitted: auto-replied`.
//! - **Out** ([`smtp`]): one mail per reply, `Re:` the thread's subject, with `Message-ID`
//!   `<message id@our domain>`, `In-Reply-To`, `References`, a text and an HTML part. A repeat
//!   of a delivered message is not mailed again: the connector remembers what it sent and, with
//!   `sent_mailbox`, files each reply there and looks for it before sending.

pub mod clean;
pub mod config;
pub mod imap;
pub mod inbound;
pub mod parse;
pub mod smtp;
#[cfg(feature = "testing")]
pub mod testing;
pub mod thread;
mod tls;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lettre::AsyncTransport;
use serde::{Deserialize, Serialize};
use switchboard_connector::{
    Attachment, AttachmentBody, Capabilities, ChannelFactory, Connector, ConnectorError,
    ConnectorHost, Extension, InstanceConfig, OutboundLimits, OutboundMessage, SendReceipt,
};
use tokio_util::sync::CancellationToken;

use crate::config::{Checked, EmailConfig};

pub const KIND: &str = "email";

/// How many sent message ids are remembered in memory.
const REMEMBERED_SENDS: usize = 10_000;

/// An inbound mail's headers that matter, on its message as the `email` extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailFields {
    pub message_id: String,
    /// The mail had no Message-ID; `message_id` was made from its bytes.
    pub message_id_missing: bool,
    pub subject: String,
    pub from: String,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    /// The ids it answers: `In-Reply-To`, then `References` newest first.
    pub answers: Vec<String>,
    /// Quoted history or a signature was cut from the text (the raw mail has it all).
    pub trimmed: bool,
    /// The text was made from the mail's HTML.
    pub from_html: bool,
    /// The receiving server proved the From address.
    pub sender_authenticated: bool,
    pub size_bytes: u64,
}

impl Extension for EmailFields {
    const KEY: &'static str = "email";
}

/// Where a part of a mail is: `<uidvalidity>/<uid>/<part>/<message id>`, part being `raw` or
/// the attachment's position. The Message-ID finds the mail again if UIDs were reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub uid_validity: u32,
    pub uid: u32,
    pub part: String,
    pub message_id: String,
}

impl FileRef {
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.uid_validity, self.uid, self.part, self.message_id
        )
    }

    pub fn decode(id: &str) -> Option<FileRef> {
        let mut parts = id.splitn(4, '/');
        Some(FileRef {
            uid_validity: parts.next()?.parse().ok()?,
            uid: parts.next()?.parse().ok()?,
            part: parts.next()?.to_string(),
            message_id: parts.next()?.to_string(),
        })
    }
}

pub struct EmailFactory;

impl ChannelFactory for EmailFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, instance: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError> {
        let config: EmailConfig = instance.parse()?;
        Ok(Arc::new(EmailChannel::new(instance.name, config)?))
    }
}

pub struct EmailChannel {
    name: String,
    checked: Checked,
    tls: Arc<rustls::ClientConfig>,
    smtp: smtp::Transport,
    /// Ids of messages mailed lately: a repeat is not mailed again.
    sent: Mutex<RecentIds>,
    /// The IMAP session used to file replies in `sent_mailbox` and look for them there.
    filing: tokio::sync::Mutex<Option<imap::Session>>,
}

#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > REMEMBERED_SENDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

impl EmailChannel {
    pub fn new(name: String, config: EmailConfig) -> Result<EmailChannel, ConnectorError> {
        let checked = config.check(&name)?;
        let tls = tls::client_config(checked.config.accept_invalid_certs)
            .map_err(|error| ConnectorError::Config(format!("tls: {error}")))?;
        let smtp = smtp::transport(&checked)?;
        Ok(EmailChannel {
            name,
            checked,
            tls,
            smtp,
            sent: Mutex::default(),
            filing: tokio::sync::Mutex::new(None),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.checked.config.timeout_secs.max(1))
    }

    /// The support address, normalised.
    pub fn address(&self) -> &str {
        &self.checked.address
    }

    /// Run `work` on the filing session (opened, and the sent mailbox selected, on demand);
    /// a failed session is dropped so the next call opens a new one.
    async fn with_filing<T>(
        &self,
        work: impl AsyncFnOnce(&mut imap::Session) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let mut slot = self.filing.lock().await;
        if slot.is_none() {
            let mut session = imap::connect(&self.checked, &self.tls).await?;
            imap::select(
                &mut session,
                &self.checked.config.sent_mailbox,
                self.timeout(),
            )
            .await?;
            *slot = Some(session);
        }
        let session = slot.as_mut().expect("opened above");
        let result = work(session).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// Whether a reply with this Message-ID is filed in the sent mailbox already.
    async fn filed(&self, message_id: &str) -> Result<bool, ConnectorError> {
        let limit = self.timeout();
        self.with_filing(async |session| {
            // See mail appended by other sessions (an earlier process) before searching.
            session
                .noop()
                .await
                .map_err(|error| imap::error("noop", error))?;
            Ok(imap::find_by_message_id(session, message_id, limit)
                .await?
                .is_some())
        })
        .await
    }

    async fn file(&self, mail: &[u8]) -> Result<(), ConnectorError> {
        let mailbox = self.checked.config.sent_mailbox.clone();
        let limit = self.timeout();
        self.with_filing(async |session| {
            tokio::time::timeout(
                limit,
                session.append(&mailbox, Some("(\\Seen)"), None, mail),
            )
            .await
            .map_err(|_| imap::error("append", "no answer"))?
            .map_err(|error| imap::error("append", error))
        })
        .await
    }
}

#[async_trait]
impl Connector for EmailChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        host: Arc<dyn ConnectorHost>,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectorError> {
        inbound::run(self, host, shutdown).await
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        let message_id = smtp::message_id(message, &self.checked.domain);
        let receipt = SendReceipt {
            platform_message_id: Some(message_id.clone()),
        };
        if self
            .sent
            .lock()
            .expect("sent ids lock")
            .contains(&message.id)
        {
            return Ok(receipt);
        }
        let filing = !self.checked.config.sent_mailbox.is_empty();
        // A repeat after a crash: the first attempt may have been mailed and filed.
        if filing && self.filed(&message_id).await? {
            tracing::info!(channel = %self.name, message = %message.id, "reply found in the sent mailbox, not mailed again");
            self.sent.lock().expect("sent ids lock").insert(&message.id);
            return Ok(receipt);
        }
        let mail = smtp::compose(&self.checked, message, &message_id)?;
        let formatted = mail.formatted();
        self.smtp
            .send(mail)
            .await
            .map_err(|error| smtp::classify(&error))?;
        self.sent.lock().expect("sent ids lock").insert(&message.id);
        if filing && let Err(error) = self.file(&formatted).await {
            // Mailed: the customer has it. Only the copy is missing.
            tracing::warn!(channel = %self.name, message = %message.id, error = %error, "reply mailed but not filed in the sent mailbox");
        }
        Ok(receipt)
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        match self.smtp.test_connection().await {
            Ok(true) => {}
            Ok(false) => return Err(ConnectorError::retriable("smtp server not reachable")),
            Err(error) => return Err(smtp::classify(&error)),
        }
        let mut session = imap::connect(&self.checked, &self.tls).await?;
        imap::select(&mut session, &self.checked.config.mailbox, self.timeout()).await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
        Ok(())
    }

    fn limits(&self) -> OutboundLimits {
        OutboundLimits {
            per_second: None,
            burst: 1,
            // Submission servers take a handful of connections from one client.
            concurrency: Some(8),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            choices: false,
            thread_references: true,
            attachments: true,
            drafts: false,
        }
    }

    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, ConnectorError> {
        let file = FileRef::decode(&attachment.platform_file_id).ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "{:?} is not an email attachment reference",
                attachment.platform_file_id
            ))
        })?;
        let limit = self.timeout();
        let mut session = imap::connect(&self.checked, &self.tls).await?;
        let selected = imap::select(&mut session, &self.checked.config.mailbox, limit).await?;
        let uid = if selected.uid_validity == file.uid_validity {
            Some(file.uid)
        } else {
            imap::find_by_message_id(&mut session, &file.message_id, limit).await?
        };
        let raw = match uid {
            Some(uid) => imap::raw(&mut session, uid, false, limit).await?,
            None => None,
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
        let raw = raw.ok_or_else(|| {
            ConnectorError::Permanent("the mail is no longer in the mailbox".into())
        })?;
        if file.part == "raw" {
            return Ok(AttachmentBody {
                mime_type: "message/rfc822".into(),
                bytes: raw,
            });
        }
        let index: u32 = file
            .part
            .parse()
            .map_err(|_| ConnectorError::Permanent(format!("bad part {:?}", file.part)))?;
        let message = mail_parser::MessageParser::default()
            .parse(&raw)
            .ok_or_else(|| ConnectorError::Permanent("the mail cannot be read".into()))?;
        let part = message.attachment(index).ok_or_else(|| {
            ConnectorError::Permanent(format!("the mail has no attachment {index}"))
        })?;
        Ok(AttachmentBody {
            mime_type: attachment.mime_type.clone(),
            bytes: part.contents().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_refs_round_trip() {
        let file = FileRef {
            uid_validity: 1_718_000_000,
            uid: 42,
            part: "raw".into(),
            message_id: "a/b:c@example.com".into(),
        };
        assert_eq!(FileRef::decode(&file.encode()), Some(file));
        assert_eq!(FileRef::decode("x/1/raw/id"), None);
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut recent = RecentIds::default();
        for i in 0..REMEMBERED_SENDS + 5 {
            recent.insert(&i.to_string());
        }
        assert!(!recent.contains("0"));
        assert!(recent.contains(&(REMEMBERED_SENDS + 4).to_string()));
        assert_eq!(recent.set.len(), REMEMBERED_SENDS);
    }
}
