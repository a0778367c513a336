//! Reading the mailbox: the durable cursor, the first connection, catching up on what arrived
//! while we were away, then IDLE (or polling) for new mail.
//!
//! The cursor (`imap:<mailbox>`) holds the mailbox's UIDVALIDITY and the last UID handled. It
//! moves past a mail only once `ingest` returned for it (or the mail was skipped on purpose), so
//! a crash or a dropped connection fetches exactly what was missed; a mail ingested twice
//! (a crash between ingest and the cursor write) is a repeat by its Message-ID. When the
//! server's UIDVALIDITY changes, UIDs mean nothing any more: the mail delivered since the last
//! sync is read again by date and the Message-ID dedupe drops what was already stored.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_connector::{
    Attachment, ConnectorError, ConnectorHost, CursorError, Extensions, HostError, InboundEvent,
    PlatformIdentity, RecordOnly,
};
use tokio_util::sync::CancellationToken;

use crate::config::TrustSenders;
use crate::imap::{self, Selected, Session};
use crate::parse::{Mail, parse};
use crate::thread::{parse_thread, thread_key};
use crate::{EmailChannel, EmailFields, FileRef};

/// Margin for clocks when the mailbox is read again by date.
const RESCAN_MARGIN_MS: i64 = 10 * 60 * 1000;

/// The durable position in the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub uid_validity: u32,
    pub last_uid: u32,
    /// When the mailbox was first connected (mail before it is never answered).
    pub first_ms: i64,
    /// When the cursor last moved.
    pub synced_ms: i64,
}

/// The cursor as read, with the version to compare when moving it.
struct Cursor {
    key: String,
    position: Position,
    version: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

fn host_error(error: HostError) -> ConnectorError {
    ConnectorError::retriable(format!("the app could not take the mail: {error}"))
}

impl Cursor {
    async fn read(host: &dyn ConnectorHost, key: String) -> Result<Option<Cursor>, ConnectorError> {
        let Some(stored) = host.cursor(&key).await.map_err(host_error)? else {
            return Ok(None);
        };
        let position: Position = serde_json::from_str(&stored.value).map_err(|error| {
            ConnectorError::Config(format!(
                "cursor {key} is not readable ({error}): {:?}",
                stored.value
            ))
        })?;
        Ok(Some(Cursor {
            key,
            position,
            version: stored.version,
        }))
    }

    /// Move to `position` if nobody else did (another process reading the same mailbox).
    async fn write(
        host: &dyn ConnectorHost,
        key: &str,
        expected: Option<i64>,
        position: Position,
    ) -> Result<Cursor, ConnectorError> {
        let value = serde_json::to_string(&position).expect("a position serialises");
        match host.set_cursor(key, expected, &value).await {
            Ok(written) => Ok(Cursor {
                key: key.to_string(),
                position,
                version: written.version,
            }),
            Err(CursorError::Conflict { .. }) => Err(ConnectorError::retriable(format!(
                "cursor {key} was moved by another reader of this mailbox"
            ))),
            Err(CursorError::Host(error)) => Err(host_error(error)),
        }
    }

    async fn advance(
        &mut self,
        host: &dyn ConnectorHost,
        last_uid: u32,
    ) -> Result<(), ConnectorError> {
        let position = Position {
            last_uid,
            synced_ms: now_ms(),
            ..self.position
        };
        *self = Cursor::write(host, &self.key, Some(self.version), position).await?;
        Ok(())
    }
}

/// The inbound loop of one mailbox, until `shutdown`.
pub async fn run(
    channel: &EmailChannel,
    host: Arc<dyn ConnectorHost>,
    shutdown: CancellationToken,
) -> Result<(), ConnectorError> {
    let limit = channel.timeout();
    let config = &channel.checked.config;
    let mut session = tokio::select! {
        session = imap::connect(&channel.checked, &channel.tls) => session?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let selected = imap::select(&mut session, &config.mailbox, limit).await?;
    let idle = config.idle
        && session
            .capabilities()
            .await
            .map(|capabilities| capabilities.has_str("IDLE"))
            .unwrap_or(false);
    let mut cursor = start(channel, host.as_ref(), &mut session, selected).await?;
    tracing::info!(
        channel = %channel.name,
        mailbox = %config.mailbox,
        uid_validity = selected.uid_validity,
        last_uid = cursor.position.last_uid,
        idle,
        "reading the mailbox"
    );
    let wait = Duration::from_secs(config.poll_secs.max(1));
    while !shutdown.is_cancelled() {
        for uid in imap::uids_after(&mut session, cursor.position.last_uid, limit).await? {
            if shutdown.is_cancelled() {
                break;
            }
            handle(
                channel,
                host.as_ref(),
                &mut session,
                selected.uid_validity,
                uid,
                None,
            )
            .await?;
            cursor.advance(host.as_ref(), uid).await?;
        }
        if idle {
            let mut waiting = session.idle();
            waiting
                .init()
                .await
                .map_err(|error| imap::error("idle", error))?;
            let (news, stop) = waiting.wait_with_timeout(wait);
            let stopped = tokio::select! {
                news = news => {
                    news.map_err(|error| imap::error("idle", error))?;
                    false
                }
                _ = shutdown.cancelled() => true,
            };
            drop(stop);
            if stopped {
                return Ok(());
            }
            session = tokio::time::timeout(limit, waiting.done())
                .await
                .map_err(|_| imap::error("idle done", "no answer"))?
                .map_err(|error| imap::error("idle done", error))?;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
    Ok(())
}

/// The cursor to start from: as stored, made on the first connection, or rebuilt after a
/// UIDVALIDITY change.
async fn start(
    channel: &EmailChannel,
    host: &dyn ConnectorHost,
    session: &mut Session,
    selected: Selected,
) -> Result<Cursor, ConnectorError> {
    let limit = channel.timeout();
    let key = format!("imap:{}", channel.checked.config.mailbox);
    let now = now_ms();
    match Cursor::read(host, key.clone()).await? {
        None => {
            // First connection: what is already there is not answered.
            let existing = imap::uids_after(session, 0, limit).await?;
            let last_uid = match selected.uid_next {
                Some(next) => next.saturating_sub(1),
                None => existing.last().copied().unwrap_or(0),
            };
            if channel.checked.config.import_existing {
                for uid in existing.iter().copied().filter(|uid| *uid <= last_uid) {
                    handle(
                        channel,
                        host,
                        session,
                        selected.uid_validity,
                        uid,
                        Some("imported"),
                    )
                    .await?;
                }
            }
            tracing::info!(
                channel = %channel.name,
                existing = existing.len(),
                imported = channel.checked.config.import_existing,
                "first connection to the mailbox: existing mail is not answered"
            );
            let position = Position {
                uid_validity: selected.uid_validity,
                last_uid,
                first_ms: now,
                synced_ms: now,
            };
            Cursor::write(host, &key, None, position).await
        }
        Some(cursor) if cursor.position.uid_validity == selected.uid_validity => Ok(cursor),
        Some(cursor) => {
            let since =
                (cursor.position.synced_ms - RESCAN_MARGIN_MS).max(cursor.position.first_ms);
            tracing::warn!(
                channel = %channel.name,
                old = cursor.position.uid_validity,
                new = selected.uid_validity,
                since_ms = since,
                "the mailbox's UIDVALIDITY changed: reading again what arrived since the last sync"
            );
            let mut last_uid = 0;
            for (uid, arrived) in imap::uids_since(session, since, limit).await? {
                last_uid = last_uid.max(uid);
                if arrived.is_some_and(|arrived| arrived < since) {
                    continue;
                }
                handle(channel, host, session, selected.uid_validity, uid, None).await?;
            }
            let last_uid = selected
                .uid_next
                .map_or(last_uid, |next| next.saturating_sub(1).max(last_uid));
            let position = Position {
                uid_validity: selected.uid_validity,
                last_uid,
                first_ms: cursor.position.first_ms,
                synced_ms: now,
            };
            Cursor::write(host, &key, Some(cursor.version), position).await
        }
    }
}

/// Fetch, read and hand one mail to the app. Returns an error only when the cursor must not
/// move past it (the app or the server could not take it now).
async fn handle(
    channel: &EmailChannel,
    host: &dyn ConnectorHost,
    session: &mut Session,
    uid_validity: u32,
    uid: u32,
    record_only: Option<&str>,
) -> Result<(), ConnectorError> {
    let limit = channel.timeout();
    let config = &channel.checked.config;
    let Some(size) = imap::size_of(session, uid, limit).await? else {
        tracing::info!(channel = %channel.name, uid, "mail gone before it was read, skipped");
        return Ok(());
    };
    let oversized = size > config.max_message_bytes;
    let Some(raw) = imap::raw(session, uid, oversized, limit).await? else {
        tracing::info!(channel = %channel.name, uid, "mail gone before it was read, skipped");
        return Ok(());
    };
    let authserv_id = config.authserv_id.clone();
    let mut mail = if raw.len() > 1024 * 1024 {
        // Large mails are parsed off the async threads.
        tokio::task::spawn_blocking(move || parse(&raw, &authserv_id))
            .await
            .map_err(|error| ConnectorError::retriable(format!("parsing failed: {error}")))?
    } else {
        parse(&raw, &authserv_id)
    };
    if oversized {
        mail.text = format!(
            "(This mail is {:.1} MB, more than the {:.1} MB this channel reads: its text and \
             attachments were not downloaded. The raw message stays in the mailbox.)",
            size as f64 / 1e6,
            config.max_message_bytes as f64 / 1e6
        );
        mail.attachments.clear();
    }
    let Some(event) = event_of(channel, host, &mail, uid_validity, uid, size, record_only).await?
    else {
        return Ok(());
    };
    match host.ingest(event).await {
        Ok(receipt) => {
            tracing::debug!(
                channel = %channel.name,
                uid,
                message_id = %mail.message_id,
                conversation = %receipt.conversation_id,
                duplicate = receipt.duplicate,
                "mail ingested"
            );
            Ok(())
        }
        Err(HostError::Rejected(reason)) => {
            tracing::warn!(channel = %channel.name, uid, message_id = %mail.message_id, reason = %reason, "mail refused by the app, skipped");
            Ok(())
        }
        Err(error) => Err(host_error(error)),
    }
}

/// The inbound event of a mail, or None (with a log line) for mail that is skipped.
async fn event_of(
    channel: &EmailChannel,
    host: &dyn ConnectorHost,
    mail: &Mail,
    uid_validity: u32,
    uid: u32,
    size: u64,
    record_only: Option<&str>,
) -> Result<Option<InboundEvent>, ConnectorError> {
    let skip = |reason: &str| {
        tracing::warn!(channel = %channel.name, uid, message_id = %mail.message_id, reason, "mail skipped");
        Ok(None)
    };
    if mail.unparsed {
        return skip("the mail could not be read as a mail (no header)");
    }
    let Some(from) = mail.from.as_deref() else {
        return skip("no usable From address to answer");
    };
    if from == channel.checked.address {
        return skip("mail from ourselves");
    }
    let record_only = record_only
        .map(str::to_string)
        .or_else(|| mail.automated.clone());
    // Join the thread of a message this one answers. Mail that will be answered joins only a
    // thread of its own sender, so that nobody can write into another customer's conversation
    // by quoting its Message-IDs; machine mail (a bounce of our reply) is only recorded, and
    // joins whichever thread it names.
    let mut thread = None;
    for answered in &mail.answers {
        let Some(found) = host.find_message(answered).await.map_err(host_error)? else {
            continue;
        };
        let owner = parse_thread(&found.thread).map(|(address, _)| address);
        if record_only.is_some() || owner == Some(from) {
            thread = Some(found.thread);
            break;
        }
    }
    let thread = thread.unwrap_or_else(|| thread_key(from, &mail.subject));
    let verified = match channel.checked.config.trust_senders {
        TrustSenders::Any => true,
        TrustSenders::None => false,
        TrustSenders::Authenticated => mail.sender_authenticated,
    };
    let mut sender = PlatformIdentity::new(from, verified);
    sender.display_name = mail.from_name.clone();
    sender.email = verified.then(|| from.to_string());
    let file = |part: String| FileRef {
        uid_validity,
        uid,
        part,
        message_id: mail.message_id.clone(),
    };
    let mut attachments = vec![Attachment {
        name: "message.eml".into(),
        mime_type: "message/rfc822".into(),
        size_bytes: Some(size),
        platform_file_id: file("raw".into()).encode(),
    }];
    attachments.extend(mail.attachments.iter().map(|part| Attachment {
        name: part.name.clone(),
        mime_type: part.mime_type.clone(),
        size_bytes: Some(part.size_bytes),
        platform_file_id: file(part.index.to_string()).encode(),
    }));
    let fields = EmailFields {
        message_id: mail.message_id.clone(),
        message_id_missing: mail.message_id_missing,
        subject: mail.subject.clone(),
        from: from.to_string(),
        from_name: mail.from_name.clone(),
        reply_to: mail.reply_to.clone(),
        answers: mail.answers.clone(),
        trimmed: mail.trimmed,
        from_html: mail.from_html,
        sender_authenticated: mail.sender_authenticated,
        size_bytes: size,
    };
    let mut extensions = Extensions::default().with(&fields);
    if let Some(reason) = &record_only {
        extensions.insert(&RecordOnly {
            reason: reason.clone(),
        });
    }
    if mail.message_id_missing {
        tracing::info!(channel = %channel.name, uid, id = %mail.message_id, "mail without a Message-ID, given one made from its bytes");
    }
    Ok(Some(InboundEvent {
        channel: channel.name.clone(),
        platform_message_id: mail.message_id.clone(),
        sender,
        thread,
        text: mail.text.clone(),
        attachments,
        choice: None,
        extensions,
        sent_at_ms: mail.sent_at_ms,
    }))
}
