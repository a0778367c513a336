//! SMTP submission: the reply as a mail in its thread, and lettre's errors as the outbox
//! understands them.

use std::time::{Duration, SystemTime};

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{Message, Tokio1Executor};
use switchboard_connector::{AuthorKind, ConnectorError, OutboundMessage};

use crate::config::{Checked, Security};
use crate::thread::{parse_thread, reply_subject};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

pub fn transport(checked: &Checked) -> Result<Transport, ConnectorError> {
    let server = &checked.smtp;
    let parameters = TlsParameters::builder(server.host.clone())
        // A self-signed test certificate names no host we connect to either.
        .dangerous_accept_invalid_certs(checked.config.accept_invalid_certs)
        .dangerous_accept_invalid_hostnames(checked.config.accept_invalid_certs)
        .build_rustls()
        .map_err(|error| ConnectorError::Config(format!("smtp tls: {error}")))?;
    let tls = match server.security {
        Security::Tls => Tls::Wrapper(parameters),
        Security::StartTls => Tls::Required(parameters),
    };
    Ok(
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.clone())
            .port(server.port)
            .tls(tls)
            .credentials(Credentials::new(
                checked.config.username.clone(),
                checked.config.password.expose().to_string(),
            ))
            .timeout(Some(Duration::from_secs(
                checked.config.timeout_secs.max(1),
            )))
            .pool_config(PoolConfig::new().max_size(8))
            .build(),
    )
}

/// Our Message-ID of a reply (without angle brackets): the same for every attempt of one
/// message, so a repeat is recognisable as one.
pub fn message_id(message: &OutboundMessage, domain: &str) -> String {
    format!("{}@{domain}", message.id)
}

/// The reply as a mail: to the thread's customer, `Re:` its subject, threaded by
/// `In-Reply-To` and `References`, with a plain-text and an HTML part.
pub fn compose(
    checked: &Checked,
    message: &OutboundMessage,
    message_id: &str,
) -> Result<Message, ConnectorError> {
    let (customer, subject) = parse_thread(&message.thread).ok_or_else(|| {
        ConnectorError::Permanent(format!(
            "thread {:?} is not an email thread (address and subject)",
            message.thread
        ))
    })?;
    let from = Mailbox::new(
        checked.config.display_name.clone(),
        checked
            .address
            .parse()
            .map_err(|error| ConnectorError::Config(format!("address: {error}")))?,
    );
    let to: Mailbox = customer
        .parse()
        .map_err(|error| ConnectorError::Permanent(format!("recipient {customer:?}: {error}")))?;
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(reply_subject(subject))
        .message_id(Some(format!("<{message_id}>")))
        .date(SystemTime::now());
    if let Some(answered) = &message.in_reply_to {
        builder = builder.in_reply_to(format!("<{answered}>"));
    }
    let mut references: Vec<String> = message
        .references
        .iter()
        .filter(|reference| reference.as_str() != message_id)
        .map(|reference| format!("<{reference}>"))
        .collect();
    if let Some(answered) = &message.in_reply_to {
        let answered = format!("<{answered}>");
        references.retain(|reference| reference != &answered);
        references.push(answered);
    }
    if !references.is_empty() {
        builder = builder.references(references.join(" "));
    }
    // RFC 3834: what the bot writes is an automatic answer, so that a customer's
    // auto-responder does not answer it (and the two never talk to each other forever).
    let automatic = match message.author {
        AuthorKind::Bot => Some("auto-replied"),
        AuthorKind::System => Some("auto-generated"),
        AuthorKind::Agent | AuthorKind::Customer => None,
    };
    if let Some(kind) = automatic {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            kind.to_string(),
        ));
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".to_string(),
        ));
    }
    builder
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(message.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html_of(&message.text)),
                ),
        )
        .map_err(|error| ConnectorError::Permanent(format!("reply not composed: {error}")))
}

/// The text as simple HTML: paragraphs on blank lines, line breaks kept, everything escaped.
pub fn html_of(text: &str) -> String {
    let escape = |line: &str| {
        line.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let paragraphs: Vec<String> = text
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter(|paragraph| !paragraph.trim().is_empty())
        .map(|paragraph| {
            let lines: Vec<String> = paragraph.lines().map(escape).collect();
            format!("<p>{}</p>", lines.join("<br>\n"))
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n{}\n</body></html>\n",
        paragraphs.join("\n")
    )
}

/// A failed submission as the outbox understands it: 4xx and network trouble pass, a refused
/// login is the configuration's fault, any other 5xx will fail the same way again.
pub fn classify(error: &lettre::transport::smtp::Error) -> ConnectorError {
    let code = error.status().map(|code| code.to_string());
    if error.is_permanent() {
        if matches!(code.as_deref(), Some("530" | "534" | "535" | "538")) {
            return ConnectorError::Config(format!("smtp login refused: {error}"));
        }
        return ConnectorError::Permanent(format!("smtp refused the mail: {error}"));
    }
    ConnectorError::retriable(format!("smtp: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_part_is_escaped_paragraphs() {
        assert_eq!(
            html_of("Hi <Ana> & co,\nthanks.\n\nBye"),
            "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n<p>Hi &lt;Ana&gt; &amp; co,<br>\nthanks.</p>\n<p>Bye</p>\n</body></html>\n"
        );
    }
}
