//! The Telegram channel against the Bot API emulator `telegram-test-api` ([`peer`]), in both
//! modes (long polling and webhook) and on both stores: a customer writes and is answered,
//! `/start` and `/human`, groups, files, buttons, a refund opened through the workflow and its
//! approval told on Telegram, bad input at the webhook, Telegram's 429 and 403, and a kill in
//! the middle of a burst ([`crash`]).

mod crash;
mod flows;
mod peer;

use std::time::Duration;

use serde_json::{Map, Value, json};
use switchboard::app::AppOptions;
use switchboard::config::Settings;

use crate::helpers::{Backend, TestApp, eventually, free_port};
use peer::TelegramPeer;

/// The instance name in every test.
pub const CHANNEL: &str = "tg";

/// The webhook secret of the tests' bots.
pub const SECRET: &str = "test-secret_0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Polling,
    Webhook,
}

/// The `[[channel]]` table of a test bot. `app_port` is where the app serves (for webhooks).
pub fn table(peer: &TelegramPeer, token: &str, mode: Mode, app_port: u16) -> Map<String, Value> {
    let mut table = json!({
        "kind": "telegram",
        "name": CHANNEL,
        "token": token,
        "api_url": peer.api_url,
        "poll_timeout_secs": 2,
        "poll_idle_ms": 50,
    });
    if mode == Mode::Webhook {
        table["mode"] = "webhook".into();
        table["webhook_url"] =
            format!("http://127.0.0.1:{app_port}/channels/telegram/{CHANNEL}").into();
        table["secret_token"] = SECRET.into();
    }
    table.as_object().cloned().unwrap()
}

/// The app with a Telegram bot talking to `peer`, ready for the customer's first message.
pub async fn spawn(
    backend: Backend,
    mode: Mode,
    peer: &TelegramPeer,
    token: &str,
    configure: impl FnOnce(&mut Settings),
    options: AppOptions,
) -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let port = free_port();
    let table = table(peer, token, mode, port);
    let app = TestApp::spawn_with(
        backend,
        |settings| {
            settings.http.port = port;
            settings.channel.0.push(table);
            configure(settings);
        },
        options,
    )
    .await;
    wait_connected(peer, token, mode).await;
    app
}

/// Until the bot listens: in webhook mode, until it registered its webhook (updates sent
/// before that stay in the emulator's polling queue).
pub async fn wait_connected(peer: &TelegramPeer, token: &str, mode: Mode) {
    if mode == Mode::Polling {
        return;
    }
    eventually(30, "the webhook to be registered", || async move {
        peer.webhook_registered(token)
    })
    .await;
}

/// The conversation on a chat, once its first message is stored.
pub async fn conversation_on(app: &TestApp, chat_id: i64) -> String {
    let store = app.store().clone();
    let thread = chat_id.to_string();
    eventually(30, "the chat's first message stored", || {
        let store = store.clone();
        let thread = thread.clone();
        async move { !store.history(CHANNEL, &thread, 1).await.unwrap().is_empty() }
    })
    .await;
    app.store().history(CHANNEL, &thread, 1).await.unwrap()[0]
        .conversation_id
        .clone()
}

/// Nothing more reaches the chat for a while.
pub async fn stays_quiet(peer: &TelegramPeer, token: &str, chat_id: i64, count: usize) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = peer.bot_messages(token, chat_id);
    assert_eq!(messages.len(), count, "no more bot messages: {messages:#?}");
}

/// `telegram_modes!(name, body)`: `name::{polling,webhook}_{sqlite,postgres}`, each running
/// `body(backend, mode)`.
#[macro_export]
macro_rules! telegram_modes {
    ($name:ident, $body:ident) => {
        mod $name {
            use $crate::helpers::Backend;
            use $crate::telegram::Mode;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn polling_sqlite() {
                super::$body(Backend::Sqlite, Mode::Polling).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn polling_postgres() {
                super::$body(Backend::Postgres, Mode::Polling).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn webhook_sqlite() {
                super::$body(Backend::Sqlite, Mode::Webhook).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn webhook_postgres() {
                super::$body(Backend::Postgres, Mode::Webhook).await;
            }
        }
    };
}
