//! An inbound status update: `webhook-id`, `webhook-timestamp` and `webhook-signature` (the
//! first three lines), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |byte| *byte == b'\n');
    let (Some(id), Some(timestamp), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    switchboard::fuzzing::inbound_status(&text(id), &text(timestamp), &text(signature), body);
});
