//! A Discord gateway payload as serenity reads it off the socket: parsed, then a message
//! turned into one to store, a private thread to open or a skip by the channel's rules, for
//! each place it may be posted (a DM, a support channel, a private thread, elsewhere), and a
//! button press into a picked choice; and a reply's text split as it is sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serenity::model::application::Interaction;
use serenity::model::event::{Event, GatewayEvent};
use switchboard_discord::BotIdentity;
use switchboard_discord::event::{Place, decide, decide_press, parse_gateway};
use switchboard_discord::format::{split_text, utf16_len};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(GatewayEvent::Dispatch(_, event)) = parse_gateway(text) {
        let bot = BotIdentity {
            id: 900,
            username: "switchboard".into(),
        };
        match event {
            Event::MessageCreate(created) => {
                for place in [Place::Dm, Place::Support, Place::Thread, Place::Elsewhere] {
                    let _ = decide("fuzz", &bot, place, &created.message);
                }
            }
            Event::InteractionCreate(created) => {
                if let Interaction::Component(press) = created.interaction {
                    let _ = decide_press("fuzz", &press);
                }
            }
            _ => {}
        }
    }
    // As the outbox sends a reply: parts fit Discord's 2,000, and only whitespace at cuts is
    // dropped (a part's trailing `\r` or `\t` too, which the first run of this target found).
    let parts = split_text(text, 2000);
    for part in &parts {
        assert!(utf16_len(part) <= 2000, "a part longer than Discord allows");
    }
    let kept = |text: &str| -> String { text.chars().filter(|c| !c.is_whitespace()).collect() };
    assert_eq!(kept(&parts.concat()), kept(text), "the split lost text");
});
