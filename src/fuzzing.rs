//! Entry points for the fuzz targets in `fuzz/`: each runs untrusted bytes through the same
//! parser the server uses on them, and panics only where the server would.
//!
//! Kept in the library (hidden from the docs) so the targets reach parsers that are private
//! to their modules without widening those modules' APIs.

use crate::knowledge::document::{self, Format};
use crate::knowledge::language::LanguageDetector;

/// A JSON body of the REST API, as `POST /api/v1/tasks` parses it.
pub fn api_body(body: &[u8]) {
    let _ = crate::http::api::parse_json::<crate::workflow::NewTask>(body);
}

/// An inbound status update: signature headers, then the body, as the endpoint checks them.
pub fn inbound_status(id: &str, timestamp: &str, signature: &str, body: &[u8]) {
    let signer = crate::workflow::webhooks::Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("a valid secret");
    let _ = signer.verify(
        Some(id),
        Some(timestamp),
        Some(signature),
        body,
        1_700_000_000,
        300,
    );
    let _ = crate::workflow::parse_inbound_event(body);
}

/// A knowledge article in Markdown, HTML or plain text.
pub fn knowledge(format: u8, text: &str) {
    let format = match format % 3 {
        0 => Format::Markdown,
        1 => Format::Html,
        _ => Format::Text,
    };
    thread_local! {
        static DETECTOR: LanguageDetector = LanguageDetector::default();
    }
    DETECTOR.with(|detector| {
        let _ = document::parse("fuzz.md", text, format, None, detector, 400);
    });
}

/// A configuration file.
pub fn config(text: &str) {
    let _ = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|built| built.try_deserialize::<crate::config::Settings>());
}
