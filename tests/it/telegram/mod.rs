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

use crate::helpers::{Backend, TestApp, eventually};
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

/// A free port below the kernel's ephemeral range, for an app that must come back on the same
/// port (the webhook URL names it). An ephemeral port is not safe there: while the app is
/// down, another test's `bind(0)` can take it, and the peer's retried webhook connections to
/// it can be given it as their own source port and connect to themselves, and either way the
/// restarted app finds it in use.
pub fn free_port() -> u16 {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = ephemeral_from.clamp(12_000, 32_768);
    for _ in 0..1000 {
        let port = rand::random_range(10_000..below);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
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
