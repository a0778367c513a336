//! The Discord channel against a fake Discord that speaks the real wire protocol ([`fake`]),
//! on both stores: a DM conversation, a support-channel mention moved into a private thread
//! (nobody else sees it), a button press, a gateway disconnect with messages posted meanwhile
//! (each answered once, from history), Discord's 429 and missing permissions, bad input on the
//! gateway ([`flows`]).

mod contract;
mod fake;
mod flows;

use std::time::Duration;

use serde_json::{Map, Value, json};
use switchboard::app::AppOptions;
use switchboard::config::Settings;

use crate::helpers::{Backend, TestApp, eventually};
use fake::FakeDiscord;

/// The instance name in every test.
pub const CHANNEL: &str = "dc";

/// The `[[channel]]` table of the test bot.
pub fn table(fake: &FakeDiscord, support_channels: &[u64]) -> Map<String, Value> {
    json!({
        "kind": "discord",
        "name": CHANNEL,
        "token": fake::TOKEN,
        "api_url": fake.api_url,
        "support_channels": support_channels.iter().map(u64::to_string).collect::<Vec<_>>(),
    })
    .as_object()
    .cloned()
    .unwrap()
}

/// The app with a Discord bot talking to `fake`, its gateway session open.
pub async fn spawn(
    backend: Backend,
    fake: &FakeDiscord,
    support_channels: &[u64],
    configure: impl FnOnce(&mut Settings),
    options: AppOptions,
) -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let table = table(fake, support_channels);
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.channel.0.push(table);
            configure(settings);
        },
        options,
    )
    .await;
    fake.wait_connected().await;
    app
}

/// The conversation on a Discord channel (DM or thread), once its first message is stored.
pub async fn conversation_on(app: &TestApp, thread: u64) -> String {
    let store = app.store().clone();
    let thread = thread.to_string();
    eventually(30, "the channel's first message stored", || {
        let store = store.clone();
        let thread = thread.clone();
        async move { !store.history(CHANNEL, &thread, 1).await.unwrap().is_empty() }
    })
    .await;
    app.store().history(CHANNEL, &thread, 1).await.unwrap()[0]
        .conversation_id
        .clone()
}

/// Nothing more from the bot in `channel` for a while.
pub async fn stays_quiet(fake: &FakeDiscord, channel: u64, count: usize) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = fake.bot_messages(channel);
    assert_eq!(messages.len(), count, "no more bot messages: {messages:#?}");
}

/// The text of a message as Discord shows it.
pub fn content(message: &Value) -> &str {
    message["content"].as_str().unwrap_or_default()
}
