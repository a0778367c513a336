//! The Telegram channel: a bot, on teloxide's Bot API client.
//!
//! ```toml
//! [[channel]]
//! kind = "telegram"
//! name = "shop-bot"
//! token = "${TELEGRAM_TOKEN}"
//! mode = "polling"                    # or "webhook"
//! # api_url = "http://127.0.0.1:8081" # another Bot API server
//! # webhook_url = "https://shop.example/channels/telegram/shop-bot"
//! # secret_token = "${TELEGRAM_SECRET}"
//! ```
//!
//! - **In** ([`inbound`]): `getUpdates` long polling, or a webhook served by the app at
//!   `/channels/telegram/<name>` (registered with `setWebhook` at start, refusing a call
//!   without the right `X-Telegram-Bot-Api-Secret-Token`). Each update's `update_id` is in its
//!   platform id, so a redelivered update is stored once; the polling offset is a durable
//!   cursor that moves only past updates the app has stored, so a crash re-reads rather than
//!   loses. Which updates become messages is decided in [`update`]: private chats, groups
//!   when the bot is mentioned or replied to, `/start` and `/human`, button presses, photos
//!   and documents as file references.
//! - **Out** ([`outbound`]): HTML parse mode with the text escaped, split at 4,096
//!   characters, the assistant's choices as an inline keyboard. Telegram's 429 `retry_after`
//!   pauses the instance (through the outbox), a 403 (the user blocked the bot) is an
//!   unreachable recipient (the app marks the chat and stops sending until the user writes), and sends keep to about 30 messages/s per bot (the
//!   outbox's per-instance limit) and one per second per chat (here).

pub mod config;
pub mod format;
pub mod inbound;
pub mod outbound;
pub mod update;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_connector::{
    Attachment, AttachmentBody, Capabilities, ChannelFactory, Connector, ConnectorError,
    ConnectorHost, Extension, InstanceConfig, OutboundLimits, OutboundMessage, SendReceipt,
};
use teloxide::Bot;
use teloxide::prelude::Requester;
use tokio_util::sync::CancellationToken;

use crate::config::{Checked, Mode, TelegramConfig};
use crate::outbound::Outbound;

pub const KIND: &str = "telegram";

/// Largest file the Bot API hands out with `getFile`.
const MAX_DOWNLOAD_BYTES: u64 = 20 * 1024 * 1024;

/// What Telegram said about an inbound message, on its stored message as the `telegram`
/// extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramFields {
    pub update_id: u32,
    pub chat_id: i64,
    /// `private`, `group`, `supergroup`.
    pub chat_type: String,
    pub message_id: Option<i32>,
    pub user_id: u64,
    pub username: Option<String>,
    /// The user's `language_code` as Telegram reports it (`es`, `pt-br`).
    pub language_code: Option<String>,
    /// The command the message was (`start`, `human`), without its slash.
    pub command: Option<String>,
}

impl Extension for TelegramFields {
    const KEY: &'static str = "telegram";
}

pub struct TelegramFactory;

impl ChannelFactory for TelegramFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, instance: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError> {
        let config: TelegramConfig = instance.parse()?;
        let public_route = instance.public_route("");
        let checked = config.check(&instance.name, public_route)?;
        Ok(Arc::new(TelegramChannel::new(instance.name, checked)))
    }
}

/// The bot's own identity, from `getMe`: how a group mention or a reply to the bot is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub id: u64,
    pub username: String,
}

pub struct TelegramChannel {
    name: String,
    checked: Checked,
    bot: Bot,
    me: tokio::sync::OnceCell<BotIdentity>,
    /// The app's host, once the app handed it over (to `run` or `routes`): outbound uses it
    /// to remember chats that blocked the bot.
    host: OnceLock<Arc<dyn ConnectorHost>>,
    outbound: Outbound,
}

impl TelegramChannel {
    pub fn new(name: String, checked: Checked) -> TelegramChannel {
        let bot = Bot::new(checked.config.token.expose()).set_api_url(checked.api_url.clone());
        let outbound = Outbound::new(&checked.config);
        TelegramChannel {
            name,
            checked,
            bot,
            me: tokio::sync::OnceCell::new(),
            host: OnceLock::new(),
            outbound,
        }
    }

    pub fn mode(&self) -> Mode {
        self.checked.config.mode
    }

    /// The bot's identity, asked of Telegram once.
    pub async fn me(&self) -> Result<&BotIdentity, ConnectorError> {
        self.me.get_or_try_init(|| self.fetch_me()).await
    }

    /// `getMe`: whether the token works, and who the bot is.
    async fn fetch_me(&self) -> Result<BotIdentity, ConnectorError> {
        let me = self
            .bot
            .get_me()
            .await
            .map_err(|error| match outbound::classify(&error) {
                // A revoked or mistyped token: nothing will work until the config changes.
                outbound::Failure::Unauthorized => {
                    ConnectorError::Config(format!("telegram refused the bot token: {error}"))
                }
                _ => ConnectorError::retriable(format!("getMe failed: {error}")),
            })?;
        Ok(BotIdentity {
            id: me.user.id.0,
            username: me.user.username.clone().unwrap_or_default(),
        })
    }

    fn remember_host(&self, host: &Arc<dyn ConnectorHost>) {
        let _ = self.host.set(host.clone());
    }
}

#[async_trait]
impl Connector for TelegramChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn routes(self: Arc<Self>, host: Arc<dyn ConnectorHost>) -> Option<axum::Router> {
        if self.mode() != Mode::Webhook {
            return None;
        }
        self.remember_host(&host);
        Some(inbound::webhook_routes(self, host))
    }

    async fn run(
        &self,
        host: Arc<dyn ConnectorHost>,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectorError> {
        self.remember_host(&host);
        match self.mode() {
            Mode::Polling => inbound::poll(self, host, shutdown).await,
            Mode::Webhook => inbound::register_webhook(self, shutdown).await,
        }
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        outbound::send(self, message).await
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        self.fetch_me().await.map(|_| ())
    }

    fn limits(&self) -> OutboundLimits {
        OutboundLimits {
            per_second: Some(self.checked.config.bot_per_second),
            burst: self.checked.config.bot_per_second.ceil().max(1.0) as u32,
            concurrency: Some(16),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            choices: true,
            thread_references: false,
            attachments: true,
            drafts: false,
        }
    }

    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, ConnectorError> {
        use teloxide::net::Download;
        if attachment
            .size_bytes
            .is_some_and(|size| size > MAX_DOWNLOAD_BYTES)
        {
            return Err(ConnectorError::Permanent(
                "the Bot API does not hand out files over 20 MB".into(),
            ));
        }
        let file = self
            .bot
            .get_file(teloxide::types::FileId(attachment.platform_file_id.clone()))
            .await
            .map_err(|error| outbound::to_connector_error(&error))?;
        let mut bytes = Vec::new();
        self.bot
            .download_file(&file.path, &mut bytes)
            .await
            .map_err(|error| ConnectorError::retriable(format!("file download: {error}")))?;
        Ok(AttachmentBody {
            mime_type: attachment.mime_type.clone(),
            bytes,
        })
    }
}
