//! Email threads as the app's channel threads.
//!
//! A thread is named `<customer address> <subject>`, the subject without its `Re:`/`Fwd:`
//! prefixes and with its spaces collapsed. That name is the app's thread key, so:
//! - a reply that carries `In-Reply-To`/`References` joins the thread of the message it names
//!   (found with `ConnectorHost::find_message`), whatever its subject says now;
//! - a reply without references that quotes the subject (`Re: Refund`) from the same sender
//!   lands on the same key: the subject-and-sender fallback costs no look-up;
//! - a new subject from the same contact is a new key, so a new conversation;
//! - the outbound side reads the recipient and the `Re:` subject back from the key.

/// Longest subject kept in a thread key, in characters.
const MAX_SUBJECT_CHARS: usize = 200;

/// The subject of a thread: reply and forward prefixes (in the languages our customers write)
/// and list tags removed, spaces collapsed. An empty subject is `(no subject)`.
pub fn normalise_subject(subject: &str) -> String {
    let mut rest = subject.trim();
    loop {
        let before = rest;
        if let Some(tag_end) = rest.strip_prefix('[').and_then(|inner| inner.find(']')) {
            // "[Ticket #12] Re: ..." and "[list] ..." tags.
            rest = rest[tag_end + 2..].trim_start();
        }
        if let Some((prefix, after)) = rest.split_once(':') {
            let prefix = prefix.trim().to_lowercase();
            // "Re", "RE[2]", "Fwd", "AW", "RV", "Réf", ...
            let word = prefix.split('[').next().unwrap_or_default();
            if PREFIXES.contains(&word) && prefix.len() <= 8 {
                rest = after.trim_start();
            }
        }
        if rest == before {
            break;
        }
    }
    let collapsed: String = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(no subject)".into();
    }
    collapsed.chars().take(MAX_SUBJECT_CHARS).collect()
}

const PREFIXES: [&str; 14] = [
    "re", "fw", "fwd", "aw", "wg", "rv", "res", "enc", "tr", "sv", "vs", "réf", "ref", "antw",
];

/// The thread key of a customer address and a subject.
pub fn thread_key(address: &str, subject: &str) -> String {
    format!("{address} {}", normalise_subject(subject))
}

/// A thread key taken apart: the customer's address and the thread's subject.
pub fn parse_thread(thread: &str) -> Option<(&str, &str)> {
    let (address, subject) = thread.split_once(' ')?;
    address.contains('@').then_some((address, subject))
}

/// The subject of a reply in the thread.
pub fn reply_subject(subject: &str) -> String {
    format!("Re: {subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_lose_their_prefixes() {
        for (raw, normal) in [
            ("Refund please", "Refund please"),
            ("Re: Refund please", "Refund please"),
            ("RE: re: Fwd: Refund   please ", "Refund please"),
            ("AW: WG: Bestellung", "Bestellung"),
            ("RE[2]: Refund please", "Refund please"),
            ("[Ticket #12] Re: Refund please", "Refund please"),
            ("Réf : Commande", "Commande"),
            ("", "(no subject)"),
            ("Re:", "(no subject)"),
            (
                "Question: where is my order?",
                "Question: where is my order?",
            ),
        ] {
            assert_eq!(normalise_subject(raw), normal, "{raw:?}");
        }
        let long = "x".repeat(500);
        assert_eq!(normalise_subject(&long).chars().count(), MAX_SUBJECT_CHARS);
    }

    #[test]
    fn thread_keys_round_trip() {
        let key = thread_key("ana@example.com", "Re: Order 1042 broken");
        assert_eq!(key, "ana@example.com Order 1042 broken");
        assert_eq!(
            parse_thread(&key),
            Some(("ana@example.com", "Order 1042 broken"))
        );
        assert_eq!(parse_thread("visitor-1"), None);
        assert_eq!(reply_subject("Order 1042 broken"), "Re: Order 1042 broken");
    }
}
