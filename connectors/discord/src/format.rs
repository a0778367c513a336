//! Outbound text as Discord takes it: parts of at most 2,000 characters.
//!
//! Discord counts a message's length as JavaScript does, in UTF-16 code units, so that is
//! what is counted here (an emoji is two). Text is sent as written: Discord renders markdown,
//! and replies are sent with `allowed_mentions` empty, so a customer's `@everyone` echoed back
//! pings nobody.

/// Discord's limit on a message's `content`.
pub const MAX_MESSAGE_UNITS: usize = 2000;

/// Split `text` into parts of at most `limit` UTF-16 code units, preferring to break after a
/// paragraph, then a line, then a space; a part never ends inside a character. Empty text is
/// one empty part (the caller decides whether to send it).
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let mut parts = Vec::new();
    let mut rest = text;
    while utf16_len(rest) > limit {
        // The longest prefix that fits, on a character boundary.
        let mut units = 0;
        let mut fit = 0;
        for (index, c) in rest.char_indices() {
            if units + c.len_utf16() > limit {
                break;
            }
            units += c.len_utf16();
            fit = index + c.len_utf8();
        }
        let window = &rest[..fit];
        // Break at the last paragraph, line or space in the second half of the window, so a
        // part is never tiny.
        let floor = fit / 2;
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|separator| {
                window
                    .rfind(separator)
                    .filter(|at| *at >= floor)
                    .map(|at| at + separator.len())
            })
            .unwrap_or(fit);
        parts.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start_matches(['\n', ' ']);
    }
    parts.push(rest.to_string());
    parts
}

/// A message's length as Discord counts it.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

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
