//! A Telegram update as the webhook receives it (or polling reads it): parsed, then turned
//! into a message to store, a button press or a skip by the channel's rules, for a private
//! chat and a group alike; and a reply's text escaped and split as it is sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_telegram::BotIdentity;
use switchboard_telegram::format::{escape_html, split_text, utf16_len};
use switchboard_telegram::update::{decide, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(update) = parse(data) {
        let bot = BotIdentity {
            id: 666,
            username: "ShopBot".into(),
        };
        let _ = decide("fuzz", &bot, &update);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // As the outbox sends a reply: split (Telegram counts the text, not the markup), then
        // each part escaped. Parts fit, and only whitespace at cuts is dropped (a part's
        // trailing `\r` or `\t` too: the split trims the end of a part).
        let parts = split_text(text, 4096);
        for part in &parts {
            assert!(utf16_len(part) <= 4096, "a part longer than Telegram allows");
            let _ = escape_html(part);
        }
        let kept = |text: &str| -> String { text.chars().filter(|c| !c.is_whitespace()).collect() };
        assert_eq!(kept(&parts.concat()), kept(text), "the split lost text");
    }
});
