//! A web chat client frame, and the tokens a `hello` carries (session token, identity token,
//! legacy email signature), as the server reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_webchat::protocol::{parse_client_frame, valid_client_id};
use switchboard_webchat::session::{IdentityVerifier, SessionSigner, normalise_origin};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_client_frame(text);
    let _ = valid_client_id(text);
    let _ = normalise_origin(text);
    let _ = SessionSigner::new(b"fuzz-secret", 3600).verify(text, 1_700_000_000);
    let identities = IdentityVerifier::new(b"fuzz-secret").with_policy(3600, true);
    let _ = identities.verify_token(text, Some("https://shop.example.com"), 1_700_000_000);
    let (email, signature) = text.split_once('\n').unwrap_or((text, ""));
    let _ = identities.verify_legacy(email, signature);
});
