//! A JSON body of the REST API (`POST /api/v1/tasks`, also what webhooks carry).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard::fuzzing::api_body(data);
});
