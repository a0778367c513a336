//! Outbound text cut to a platform's message limit, counted as the platforms count it: in
//! UTF-16 code units (an emoji is two). Telegram (4,096) and Discord (2,000) split with it.

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

/// A text's length in UTF-16 code units, as Telegram and Discord count a message.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}
