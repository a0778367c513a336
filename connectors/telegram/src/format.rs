//! Outbound text as Telegram takes it: HTML-escaped (replies are sent with
//! `parse_mode = HTML`, so a customer's `<b>` or `&` is shown, never interpreted) and split
//! into messages of at most 4,096 characters.
//!
//! Telegram counts a message's length after entities are parsed, in UTF-16 code units, so the
//! text is split first (each part at most [`MAX_MESSAGE_UNITS`] units of the plain text) and
//! each part escaped afterwards: an escape such as `&amp;` is one character once parsed and is
//! never cut in half.

/// Telegram's limit on a message's text.
pub const MAX_MESSAGE_UNITS: usize = 4096;

/// Escape the three characters Telegram's HTML parse mode reads as markup.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            other => escaped.push(other),
        }
    }
    escaped
}

pub use switchboard_connector::text::{split_text, utf16_len};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_other_text_kept() {
        assert_eq!(
            escape_html("<b>5 > 3 & 2 < 4</b> \"quoted\" l'été 🚚"),
            "&lt;b&gt;5 &gt; 3 &amp; 2 &lt; 4&lt;/b&gt; \"quoted\" l'été 🚚"
        );
        assert_eq!(
            escape_html("&amp;"),
            "&amp;amp;",
            "an entity typed by a person stays text"
        );
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_text("hello", MAX_MESSAGE_UNITS), ["hello"]);
        assert_eq!(split_text("", MAX_MESSAGE_UNITS), [""]);
        let exact = "a".repeat(MAX_MESSAGE_UNITS);
        assert_eq!(split_text(&exact, MAX_MESSAGE_UNITS), [exact]);
    }

    #[test]
    fn long_text_is_split_at_4096_on_word_boundaries() {
        let word = "parcel ";
        let text = word.repeat(1500); // 10,500 characters
        let parts = split_text(&text, MAX_MESSAGE_UNITS);
        assert_eq!(
            parts.len(),
            3,
            "{:?}",
            parts.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        for part in &parts {
            assert!(utf16_len(part) <= MAX_MESSAGE_UNITS);
            assert!(
                part.starts_with("parcel") && part.trim_end().ends_with("parcel"),
                "cut inside a word"
            );
        }
        assert_eq!(parts.join(" "), text, "nothing lost");
    }

    #[test]
    fn paragraphs_are_preferred_over_spaces() {
        let first = "a".repeat(3000);
        let second = "b ".repeat(1000);
        let text = format!("{first}\n\n{second}");
        let parts = split_text(&text, MAX_MESSAGE_UNITS);
        assert_eq!(parts[0], first);
        assert_eq!(parts[1], second);
    }

    #[test]
    fn text_without_spaces_is_cut_hard_and_never_inside_a_character() {
        // Emoji are two UTF-16 units each: 3,000 of them are 6,000 units.
        let text = "🚚".repeat(3000);
        let parts = split_text(&text, MAX_MESSAGE_UNITS);
        assert_eq!(parts.len(), 2);
        assert_eq!(utf16_len(&parts[0]), MAX_MESSAGE_UNITS);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn escaping_after_splitting_keeps_every_part_within_the_limit() {
        let text = "<&>".repeat(3000);
        for part in split_text(&text, MAX_MESSAGE_UNITS) {
            assert!(utf16_len(&part) <= MAX_MESSAGE_UNITS);
            let escaped = escape_html(&part);
            assert!(!escaped.ends_with('&'), "an escape is never cut");
        }
    }
}
