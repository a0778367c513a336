//! An inbound status update as the back office pushes it: `webhook-id`, `webhook-timestamp`
//! and `webhook-signature` (the first three lines), then the body; the signature is checked,
//! then the body read, as the endpoint does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_webhooks::{Signer, StatusUpdate, parse_status_update};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |byte| *byte == b'\n');
    let (Some(id), Some(timestamp), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a valid secret");
    let _ = signer.verify(
        Some(&text(id)),
        Some(&text(timestamp)),
        Some(&text(signature)),
        body,
        1_700_000_000,
        300,
    );
    let _: Result<StatusUpdate<String>, _> = parse_status_update(body);
    let _ = Signer::new(&text(id));
});
