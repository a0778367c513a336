//! A raw mail as the connector uses it: who wrote it, which thread it answers, the words to
//! show (HTML turned into text, quoted history and signature cut), its attachments, whether a
//! machine sent it, and whether its sender is proven.

use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};
use switchboard_connector::normalise_email;

use crate::clean::strip_quotes_and_signature;

/// Longest text handed to the app, in bytes; the raw message keeps the rest.
const MAX_TEXT_BYTES: usize = 32 * 1024;

/// The parts of a mail the connector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The Message-ID without angle brackets; for a mail without one, a stable id made from
    /// the raw bytes (`sha256-<hex>@message-id.invalid`), so a redelivery is still a repeat.
    pub message_id: String,
    pub message_id_missing: bool,
    /// The From address, normalised, if the mail has a usable one.
    pub from: Option<String>,
    pub from_name: Option<String>,
    /// Where the sender wants replies (Reply-To), if it names another address.
    pub reply_to: Option<String>,
    pub subject: String,
    /// `In-Reply-To` then `References` (newest first): the ids this mail answers.
    pub answers: Vec<String>,
    /// What the assistant and agents read.
    pub text: String,
    /// Quoted history or a signature was cut from `text`.
    pub trimmed: bool,
    /// The mail had no plain-text body: `text` was made from its HTML.
    pub from_html: bool,
    pub attachments: Vec<PartInfo>,
    /// Why the mail looks machine-sent (auto-reply, bounce, list), if it does.
    pub automated: Option<String>,
    /// The receiving server's `Authentication-Results` prove the From address.
    pub sender_authenticated: bool,
    pub sent_at_ms: Option<i64>,
    /// Set when the MIME structure could not be read at all and the text is the raw bytes.
    pub unparsed: bool,
}

/// An attachment of the mail, by its position among the mail's attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub index: u32,
    pub name: String,
    pub mime_type: String,
    pub size_bytes: u64,
}

/// Parse a raw mail. Never fails: a mail whose structure cannot be read is returned with its
/// bytes as text and `unparsed` set, for the caller to store or skip with a log line.
///
/// A panic inside the MIME parser is caught and treated the same way: one hostile mail must
/// neither kill the connector's task nor, retried on every restart, hold its mailbox's cursor
/// back for good. (mail-parser debug-asserts on some corrupt multipart reports, for one; see
/// `fuzz/corpus/email_message/corrupt-report`.)
pub fn parse(raw: &[u8], authserv_id: &str) -> Mail {
    match std::panic::catch_unwind(|| read(raw, authserv_id)) {
        Ok(mail) => mail,
        Err(_) => {
            tracing::warn!(
                bytes = raw.len(),
                "the mail parser panicked on a mail; it is kept as raw text"
            );
            unparsed(raw)
        }
    }
}

/// [`parse`] without the guard: a panic in the MIME parser or in this crate's reading of its
/// result propagates. For the fuzz target, so that such panics are still found.
pub fn read(raw: &[u8], authserv_id: &str) -> Mail {
    let Some(message) = MessageParser::default().parse(raw) else {
        return unparsed(raw);
    };
    let from_addr = message.from().and_then(|from| from.first());
    let from = from_addr
        .and_then(|addr| addr.address())
        .map(normalise_email)
        .filter(|address| usable_address(address));
    let from_name = from_addr
        .and_then(|addr| addr.name())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty());
    let reply_to = message
        .reply_to()
        .and_then(|reply_to| reply_to.first())
        .and_then(|addr| addr.address())
        .map(normalise_email)
        .filter(|address| usable_address(address) && Some(address) != from.as_ref());
    let (message_id, message_id_missing) = match message.message_id() {
        Some(id) if !id.trim().is_empty() => (id.trim().to_string(), false),
        _ => (synthesized_id(raw), true),
    };
    let mut answers = ids_of(message.in_reply_to());
    let mut references = ids_of(message.references());
    references.reverse();
    for reference in references {
        if !answers.contains(&reference) {
            answers.push(reference);
        }
    }
    let (body, from_html) = body_text(&message);
    let (mut text, trimmed) = strip_quotes_and_signature(&body);
    truncate(&mut text, MAX_TEXT_BYTES);
    let attachments = message
        .attachments()
        .enumerate()
        .map(|(index, part)| {
            let mime_type = part
                .content_type()
                .map(|content_type| match content_type.subtype() {
                    Some(subtype) => format!("{}/{subtype}", content_type.ctype()),
                    None => content_type.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_lowercase();
            PartInfo {
                index: index as u32,
                name: part
                    .attachment_name()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("attachment-{}", index + 1)),
                mime_type,
                size_bytes: part.len() as u64,
            }
        })
        .collect();
    let automated = automated_reason(&message, from.as_deref());
    let sender_authenticated = from
        .as_deref()
        .is_some_and(|from| authenticated(&message, authserv_id, from));
    Mail {
        message_id,
        message_id_missing,
        from,
        from_name,
        reply_to,
        subject: message.subject().unwrap_or_default().to_string(),
        answers,
        text,
        trimmed,
        from_html,
        attachments,
        automated,
        sender_authenticated,
        sent_at_ms: message.date().map(|date| date.to_timestamp() * 1000),
        unparsed: false,
    }
}

fn unparsed(raw: &[u8]) -> Mail {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    truncate(&mut text, MAX_TEXT_BYTES);
    Mail {
        message_id: synthesized_id(raw),
        message_id_missing: true,
        from: None,
        from_name: None,
        reply_to: None,
        subject: String::new(),
        answers: Vec::new(),
        text,
        trimmed: false,
        from_html: false,
        attachments: Vec::new(),
        automated: None,
        sender_authenticated: false,
        sent_at_ms: None,
        unparsed: true,
    }
}

fn usable_address(address: &str) -> bool {
    switchboard_connector::is_plausible_email(address) && address.len() <= 254
}

/// A stable id for a mail without a Message-ID: the same bytes always give the same id.
fn synthesized_id(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}@message-id.invalid")
}

fn ids_of(value: &HeaderValue<'_>) -> Vec<String> {
    let ids: Vec<String> = match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    };
    ids.into_iter()
        .map(|id| {
            id.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .filter(|id| !id.is_empty() && id.len() <= 998)
        .collect()
}

/// The first text body; an HTML-only mail's HTML turned into readable text.
fn body_text(message: &Message<'_>) -> (String, bool) {
    let text_is_html = message.text_part(0).is_none_or(|part| part.is_text_html());
    if !text_is_html && let Some(text) = message.body_text(0) {
        return (text.into_owned(), false);
    }
    match message.body_html(0) {
        Some(html) => (html_to_text(&html), true),
        None => (String::new(), false),
    }
}

/// Readable text of an HTML body: paragraphs, lists and links kept, markup gone.
pub fn html_to_text(html: &str) -> String {
    match html2text::config::plain_no_decorate().string_from_read(html.as_bytes(), 200) {
        Ok(text) => text
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string(),
        Err(error) => {
            tracing::debug!(error = %error, "html body not rendered, keeping its text");
            html.to_string()
        }
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str("\n[... cut; the whole message is in the raw mail]");
}

fn header<'a>(message: &'a Message<'_>, name: &str) -> Option<&'a str> {
    message
        .headers_raw()
        .find(|(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

/// Why a mail looks machine-sent (RFC 3834 auto-replies, bounces and other reports, list
/// traffic), if it does. Such mail is recorded and never answered.
fn automated_reason(message: &Message<'_>, from: Option<&str>) -> Option<String> {
    if let Some(value) = header(message, "Auto-Submitted") {
        let kind = value.split(';').next().unwrap_or_default().trim();
        if !kind.eq_ignore_ascii_case("no") {
            return Some(format!("auto-submitted: {kind}"));
        }
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Autoresponder"] {
        if header(message, name).is_some() {
            return Some(format!("{}: present", name.to_lowercase()));
        }
    }
    if let Some(value) = header(message, "Precedence") {
        let value = value.to_lowercase();
        if ["bulk", "junk", "list", "auto_reply"].contains(&value.as_str()) {
            return Some(format!("precedence: {value}"));
        }
    }
    if let Some(content_type) = message.content_type()
        && content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type
            .subtype()
            .is_some_and(|subtype| subtype.eq_ignore_ascii_case("report"))
    {
        let report = content_type.attribute("report-type").unwrap_or("report");
        return Some(format!("report: {report}"));
    }
    if header(message, "List-Id").is_some() || header(message, "List-Unsubscribe").is_some() {
        return Some("list mail".into());
    }
    if let Some(from) = from {
        let local = from.split('@').next().unwrap_or_default();
        if [
            "mailer-daemon",
            "postmaster",
            "noreply",
            "no-reply",
            "do-not-reply",
        ]
        .contains(&local)
        {
            return Some(format!("sent by {local}"));
        }
    }
    if header(message, "Return-Path").is_some_and(|path| path == "<>") {
        return Some("null return path".into());
    }
    None
}

/// Whether an `Authentication-Results` header of our own receiving server (RFC 8601: it
/// removes headers from outside that claim its authserv-id) proves the From address: DMARC
/// passed for the From domain, or DKIM passed with a signing domain equal to it.
fn authenticated(message: &Message<'_>, authserv_id: &str, from: &str) -> bool {
    if authserv_id.is_empty() {
        return false;
    }
    let from_domain = from
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or_default();
    message
        .headers_raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
        .any(|(_, value)| results_prove(value, authserv_id, from_domain))
}

fn results_prove(value: &str, authserv_id: &str, from_domain: &str) -> bool {
    let unfolded = value.replace(['\r', '\n', '\t'], " ");
    let mut parts = unfolded.split(';');
    let server = parts
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default();
    if !server.eq_ignore_ascii_case(authserv_id) {
        return false;
    }
    parts.any(|result| {
        let words: Vec<String> = result
            .split_whitespace()
            .map(|word| word.to_lowercase())
            .collect();
        let property = |key: &str| {
            words
                .iter()
                .find_map(|word| word.strip_prefix(key))
                .map(|value| value.trim_start_matches('@').trim_matches('"').to_string())
        };
        match words.first().map(String::as_str) {
            Some("dmarc=pass") => {
                property("header.from=").is_some_and(|domain| domain == from_domain)
            }
            Some("dkim=pass") => {
                let signer = property("header.d=").or_else(|| {
                    property("header.i=").map(|identity| {
                        identity
                            .rsplit_once('@')
                            .map_or(identity.clone(), |(_, domain)| domain.to_string())
                    })
                });
                signer.is_some_and(|signer| signer == from_domain)
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(headers: &str, body: &str) -> Mail {
        parse(
            format!("{headers}\r\n\r\n{body}").as_bytes(),
            "mx.shop.example",
        )
    }

    #[test]
    fn a_mail_the_parser_panics_on_is_kept_as_raw_text() {
        // mail-parser 0.11 debug-asserts on this corrupt multipart/report (a release build
        // reads it); in the test build the assertion fires, so this checks the panic is caught.
        let raw = include_bytes!("../../../fuzz/corpus/email_message/corrupt-report");
        let parsed = parse(raw, "mx.shop.example");
        if cfg!(debug_assertions) {
            assert!(parsed.unparsed, "the panic should leave the mail unparsed");
            assert_eq!(parsed.text, String::from_utf8_lossy(raw));
        }
        assert!(!parsed.message_id.is_empty());
    }

    #[test]
    fn a_plain_reply() {
        let parsed = mail(
            "From: Ana Puig <Ana@Example.com>\r\nTo: support@shop.example\r\nSubject: Re: Order 1042\r\nMessage-ID: <abc@example.com>\r\nIn-Reply-To: <r2@shop.example>\r\nReferences: <c1@example.com> <r1@shop.example> <r2@shop.example>\r\nDate: Tue, 3 Jun 2025 10:00:00 +0000",
            "Broken, sorry.\r\n\r\nOn Tue, 3 Jun 2025, Shop <support@shop.example> wrote:\r\n> What is the reason?\r\n",
        );
        assert_eq!(parsed.message_id, "abc@example.com");
        assert_eq!(parsed.from.as_deref(), Some("ana@example.com"));
        assert_eq!(parsed.from_name.as_deref(), Some("Ana Puig"));
        assert_eq!(parsed.subject, "Re: Order 1042");
        assert_eq!(
            parsed.answers,
            ["r2@shop.example", "r1@shop.example", "c1@example.com"]
        );
        assert_eq!(parsed.text, "Broken, sorry.");
        assert!(parsed.trimmed);
        assert_eq!(parsed.automated, None);
        assert_eq!(parsed.sent_at_ms, Some(1_748_944_800_000));
    }

    #[test]
    fn html_only_mail_reads_as_text() {
        let parsed = mail(
            "From: ana@example.com\r\nSubject: Hi\r\nMessage-ID: <h@example.com>\r\nContent-Type: text/html; charset=utf-8",
            "<html><body><p>Where is <b>order&nbsp;1042</b>?</p><ul><li>mugs</li><li>kettle</li></ul><div class=\"gmail_quote\">On Mon, Shop wrote:<blockquote>old</blockquote></div></body></html>",
        );
        assert!(parsed.from_html);
        assert!(
            parsed.text.starts_with("Where is order\u{a0}1042?")
                || parsed.text.starts_with("Where is order 1042?"),
            "{:?}",
            parsed.text
        );
        assert!(parsed.text.contains("mugs") && parsed.text.contains("kettle"));
        assert!(!parsed.text.contains('<'), "{:?}", parsed.text);
        assert!(!parsed.text.contains("old"), "{:?}", parsed.text);
    }

    #[test]
    fn odd_charsets_decode() {
        let parsed = parse(
            b"From: =?ISO-8859-1?Q?Jos=E9?= <jose@example.com>\r\nSubject: =?iso-2022-jp?B?GyRCJEokcyQrGyhC?=\r\nMessage-ID: <j@example.com>\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 cr=E8me =80 5\r\n",
            "",
        );
        assert_eq!(parsed.from_name.as_deref(), Some("José"));
        assert_eq!(parsed.text, "Café crème € 5");
        assert!(!parsed.subject.is_empty());
    }

    #[test]
    fn no_message_id_gets_a_stable_one() {
        let raw = b"From: ana@example.com\r\nSubject: x\r\n\r\nhello\r\n";
        let first = parse(raw, "");
        assert!(first.message_id_missing);
        assert_eq!(first.message_id, parse(raw, "").message_id);
        assert!(first.message_id.ends_with("@message-id.invalid"));
        let other = parse(b"From: ana@example.com\r\nSubject: y\r\n\r\nhello\r\n", "");
        assert_ne!(first.message_id, other.message_id);
    }

    #[test]
    fn malformed_mime_is_read_as_far_as_it_goes() {
        let parsed = parse(
            b"From: ana@example.com\r\nMessage-ID: <m@example.com>\r\nContent-Type: multipart/mixed; boundary=\"never\"\r\n\r\nno boundary ever comes\r\n",
            "",
        );
        assert_eq!(parsed.message_id, "m@example.com");
        assert!(!parsed.unparsed);
        let garbage = parse(b"", "");
        assert!(garbage.unparsed && garbage.from.is_none());
    }

    #[test]
    fn machines_are_recognised() {
        let reason = |headers: &str| {
            mail(
                &format!("From: ana@example.com\r\nMessage-ID: <a@x>\r\n{headers}"),
                "x",
            )
            .automated
        };
        assert_eq!(
            reason("Auto-Submitted: auto-replied").unwrap(),
            "auto-submitted: auto-replied"
        );
        assert_eq!(reason("Auto-Submitted: no"), None);
        assert!(reason("X-Autoreply: yes").is_some());
        assert!(reason("Precedence: bulk").is_some());
        assert!(reason("List-Id: <shop.lists.example>").is_some());
        assert!(
            reason("Content-Type: multipart/report; report-type=delivery-status; boundary=b")
                .unwrap()
                .contains("delivery-status")
        );
        assert!(
            mail("From: MAILER-DAEMON@mx.example\r\nMessage-ID: <b@x>", "x")
                .automated
                .is_some()
        );
        assert_eq!(reason("Subject: hello"), None);
    }

    #[test]
    fn only_our_servers_results_prove_a_sender() {
        let proven = |results: &str| {
            mail(
                &format!("{results}\r\nFrom: ana@example.com\r\nMessage-ID: <a@x>"),
                "x",
            )
            .sender_authenticated
        };
        assert!(proven(
            "Authentication-Results: mx.shop.example; dmarc=pass (p=reject) header.from=example.com"
        ));
        assert!(proven(
            "Authentication-Results: mx.shop.example;\r\n\tspf=fail smtp.mailfrom=x.example;\r\n\tdkim=pass header.d=example.com header.s=s1"
        ));
        assert!(!proven(
            "Authentication-Results: mx.other.example; dmarc=pass header.from=example.com"
        ));
        assert!(!proven(
            "Authentication-Results: mx.shop.example; dmarc=fail header.from=example.com"
        ));
        assert!(!proven(
            "Authentication-Results: mx.shop.example; dkim=pass header.d=attacker.example"
        ));
        assert!(!proven(
            "Authentication-Results: mx.shop.example; spf=pass smtp.mailfrom=example.com"
        ));
        assert!(!proven("Subject: none"));
    }

    #[test]
    fn attachments_are_listed() {
        let parsed = mail(
            "From: ana@example.com\r\nMessage-ID: <a@x>\r\nContent-Type: multipart/mixed; boundary=b",
            "--b\r\nContent-Type: text/plain\r\n\r\nphoto attached\r\n--b\r\nContent-Type: image/jpeg; name=\"mug.jpg\"\r\nContent-Disposition: attachment; filename=\"mug.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--b--\r\n",
        );
        assert_eq!(parsed.text, "photo attached");
        assert_eq!(
            parsed.attachments,
            [PartInfo {
                index: 0,
                name: "mug.jpg".into(),
                mime_type: "image/jpeg".into(),
                size_bytes: 6
            }]
        );
    }
}
