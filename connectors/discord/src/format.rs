//! Outbound text as Discord takes it: parts of at most 2,000 characters.
//!
//! Discord counts a message's length as JavaScript does, in UTF-16 code units, so that is
//! what is counted here (an emoji is two). Text is sent as written: Discord renders markdown,
//! and replies are sent with `allowed_mentions` empty, so a customer's `@everyone` echoed back
//! pings nobody.

/// Discord's limit on a message's `content`.
pub const MAX_MESSAGE_UNITS: usize = 2000;

pub use switchboard_connector::text::{split_text, utf16_len};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_text("hello", MAX_MESSAGE_UNITS), ["hello"]);
        let exact = "a".repeat(MAX_MESSAGE_UNITS);
        assert_eq!(split_text(&exact, MAX_MESSAGE_UNITS), [exact]);
    }

    #[test]
    fn long_text_is_split_at_2000_on_word_boundaries_and_nothing_is_lost() {
        let text = "parcel ".repeat(700); // 4,900 characters
        let parts = split_text(text.trim_end(), MAX_MESSAGE_UNITS);
        assert_eq!(parts.len(), 3);
        for part in &parts {
            assert!(utf16_len(part) <= MAX_MESSAGE_UNITS);
            assert!(part.starts_with("parcel") && part.ends_with("parcel"));
        }
        assert_eq!(parts.join(" "), text.trim_end());
    }

    #[test]
    fn emoji_are_never_cut_in_half() {
        let text = "🚚".repeat(1500);
        let parts = split_text(&text, MAX_MESSAGE_UNITS);
        assert_eq!(parts.len(), 2);
        assert_eq!(utf16_len(&parts[0]), MAX_MESSAGE_UNITS);
        assert_eq!(parts.concat(), text);
    }
}
