//! What the assistant and agents read of a mail: the new words only, without the quoted
//! history a mail client appends and without the sender's signature. The raw message is kept
//! (see the crate docs), so nothing cut here is lost.
//!
//! The rules are the ones mail clients themselves follow: an attribution line ("On ... wrote:"
//! in the languages our customers write, Outlook's "-----Original Message-----" and its
//! "From: ... Sent: ..." block) starts the quoted history, `> ` lines at the end are quotes,
//! and "-- " on a line of its own starts a signature (RFC 3676), as do "Sent from my ..."
//! footers.

/// The text without quoted history and signature, and whether anything was cut.
pub fn strip_quotes_and_signature(text: &str) -> (String, bool) {
    let normalised = text.replace("\r\n", "\n");
    let lines: Vec<&str> = normalised.lines().collect();
    let mut end = lines.len();
    for (index, line) in lines.iter().enumerate() {
        if starts_history(&lines, index) || is_signature_start(line) {
            end = index;
            break;
        }
    }
    let mut kept: Vec<&str> = lines[..end].to_vec();
    // Quotes interleaved with answers stay (the customer answers point by point); a quoted
    // block at the very end is history.
    while let Some(last) = kept.last() {
        let trimmed = last.trim();
        if trimmed.is_empty() || trimmed.starts_with('>') {
            kept.pop();
        } else {
            break;
        }
    }
    let cleaned = kept.join("\n").trim().to_string();
    let cut = cleaned.len() < normalised.trim().len();
    if cleaned.is_empty() {
        // Everything looked like history (a bare forward): better the whole than nothing.
        return (normalised.trim().to_string(), false);
    }
    (cleaned, cut)
}

fn is_signature_start(line: &str) -> bool {
    let trimmed_end = line.trim_end_matches('\r');
    if trimmed_end == "-- " || trimmed_end == "--" {
        return true;
    }
    let lower = line.trim().to_lowercase();
    [
        "sent from my ",
        "get outlook for ",
        "enviado desde mi ",
        "enviat des del meu ",
        "envoyé de mon ",
    ]
    .iter()
    .any(|footer| lower.starts_with(footer))
}

/// Whether the history starts at `lines[index]`.
fn starts_history(lines: &[&str], index: usize) -> bool {
    let line = lines[index].trim();
    let lower = line.to_lowercase();
    if lower.starts_with("-----original message-----")
        || lower.starts_with("-------- original message --------")
        || lower.starts_with("---------- forwarded message")
        || lower.starts_with("-----mensaje original-----")
        || lower.starts_with("-----missatge original-----")
    {
        return true;
    }
    // Outlook: "From: ..." followed within a few lines by "Sent: " / "Date: " and "To: " or
    // "Subject: ".
    if let Some(header) = ["from:", "de:", "von:"]
        .iter()
        .find(|header| lower.starts_with(*header))
    {
        let _ = header;
        let following: Vec<String> = lines[index + 1..]
            .iter()
            .take(4)
            .map(|line| line.trim().to_lowercase())
            .collect();
        let dated = following.iter().any(|line| {
            [
                "sent:",
                "date:",
                "enviado:",
                "enviat:",
                "gesendet:",
                "data:",
                "fecha:",
            ]
            .iter()
            .any(|key| line.starts_with(key))
        });
        let addressed = following.iter().any(|line| {
            [
                "to:",
                "subject:",
                "para:",
                "asunto:",
                "per a:",
                "assumpte:",
                "an:",
                "betreff:",
            ]
            .iter()
            .any(|key| line.starts_with(key))
        });
        if dated && addressed {
            return true;
        }
    }
    is_attribution(lines, index)
}

/// "On Tue, 3 Jun 2025 at 10:00, Ana <ana@example.com> wrote:", possibly wrapped over two
/// lines by the client, in English, Spanish, Catalan, French, German, Italian, Portuguese.
fn is_attribution(lines: &[&str], index: usize) -> bool {
    let line = lines[index].trim();
    let joined = match lines.get(index + 1) {
        Some(next) if !line.ends_with(':') => format!("{line} {}", next.trim()),
        _ => line.to_string(),
    };
    let lower = joined.to_lowercase();
    let starts = [
        "on ", "el ", "le ", "am ", "il ", "em ", "op ", "den ", "w dniu ",
    ]
    .iter()
    .any(|start| lower.starts_with(start));
    let ends = [
        "wrote:",
        "escribió:",
        "va escriure:",
        "a écrit :",
        "a écrit:",
        "schrieb:",
        "ha scritto:",
        "escreveu:",
        "skrev:",
        "schreef:",
        "napisał:",
    ]
    .iter()
    .any(|end| lower.ends_with(end));
    starts && ends && lower.len() < 400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_reply_keeps_the_new_words() {
        let text = "The mugs arrived broken.\n\nOn Tue, 3 Jun 2025 at 10:00, Shop \
                    <support@shop.example> wrote:\n> What is the reason?\n> \n> Shop\n";
        assert_eq!(
            strip_quotes_and_signature(text),
            ("The mugs arrived broken.".into(), true)
        );
    }

    #[test]
    fn wrapped_attribution_and_other_languages() {
        let text = "Sí, gracias\n\nEl mar, 3 jun 2025 a las 10:00, Tienda (<support@shop.example>)\nescribió:\n> ¿Cuál es el motivo?";
        assert_eq!(strip_quotes_and_signature(text).0, "Sí, gracias");
        let text = "D'acord\n\nEl dt., 3 de juny 2025, Botiga va escriure:\n> Hola";
        assert_eq!(strip_quotes_and_signature(text).0, "D'acord");
    }

    #[test]
    fn outlook_history_and_signatures() {
        let text = "Please cancel it.\n\nBest,\nAna\n\n-----Original Message-----\nFrom: Shop\nSent: Tuesday\nTo: Ana\nSubject: Order";
        assert_eq!(
            strip_quotes_and_signature(text).0,
            "Please cancel it.\n\nBest,\nAna"
        );
        let text = "Please cancel it.\n\nFrom: Shop Support <support@shop.example>\nSent: Tuesday, June 3, 2025 10:00\nTo: Ana\nSubject: RE: Order\n\nhello";
        assert_eq!(strip_quotes_and_signature(text).0, "Please cancel it.");
        let text = "Where is my parcel?\n-- \nAna Puig\nCEO, Example Ltd\n+34 600 000 000";
        assert_eq!(strip_quotes_and_signature(text).0, "Where is my parcel?");
        let text = "Where is my parcel?\n\nSent from my iPhone";
        assert_eq!(strip_quotes_and_signature(text).0, "Where is my parcel?");
    }

    #[test]
    fn inline_answers_and_plain_mail_stay() {
        let text = "> Which order?\n1042\n> And the reason?\nBroken";
        assert_eq!(strip_quotes_and_signature(text), (text.to_string(), false));
        let text = "From: the shop I bought from, a broken kettle.\nPlease help.";
        assert_eq!(strip_quotes_and_signature(text), (text.to_string(), false));
        // Nothing but a quote: kept whole rather than emptied.
        let text = "> forwarded words";
        assert_eq!(strip_quotes_and_signature(text).0, "> forwarded words");
    }
}
