//! The Discord channel: a bot on serenity's gateway client and Discord's REST API.
//!
//! ```toml
//! [[channel]]
//! kind = "discord"
//! name = "community"
//! token = "${DISCORD_TOKEN}"
//! # support_channels = ["1234567890"]      # guild channels where customers ask
//! # api_url = "http://127.0.0.1:9100"      # another API base (a test peer)
//! ```
//!
//! - **In** ([`inbound`], [`event`]): direct messages; in a support channel, a message that
//!   mentions the bot, which moves the customer's conversation into a private thread of their
//!   own (opened by the bot, the customer added), so customers never see each other's
//!   conversations; everything the customer writes in that thread afterwards. Button presses
//!   (acknowledged at once). Files as references, fetched on demand. The Discord user (id,
//!   username, global name) is the contact identity. Exactly once across reconnects: a
//!   message's id is its platform id, and after READY or RESUMED every served channel's
//!   history after its durable cursor is read back.
//! - **Out** ([`outbound`], [`rest`]): parts of at most 2,000 characters, the assistant's
//!   choices as buttons, mentions never pinging anyone. Discord's per-route buckets and global
//!   limit are read from its answers: a 429 pauses the instance through the outbox; missing
//!   permissions or an unknown channel fail for good and are logged once.
//!
//! Serenity's own ratelimiter is off (`HttpBuilder::ratelimiter_disabled`, which its `proxy`
//! base URL needs): [`rest`] keeps Discord's limits instead, and serenity is used for the
//! gateway, the routes and the types.

pub mod config;
pub mod event;
pub mod format;
pub mod inbound;
pub mod outbound;
pub mod rest;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serenity::http::{Http, HttpBuilder, LightMethod, Route};
use serenity::model::id::{ChannelId, MessageId};
use switchboard_connector::{
    Attachment, AttachmentBody, Capabilities, ChannelFactory, Connector, ConnectorError,
    ConnectorHost, Extension, InstanceConfig, OutboundLimits, OutboundMessage, SendReceipt,
};
use tokio_util::sync::CancellationToken;

use crate::config::{Checked, DiscordConfig};
use crate::outbound::Outbound;
use crate::rest::Rest;

pub const KIND: &str = "discord";

/// Largest attachment fetched for someone opening it.
const MAX_DOWNLOAD_BYTES: u64 = 25 * 1024 * 1024;

/// What Discord said about an inbound message, on its stored message as the `discord`
/// extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscordFields {
    pub message_id: u64,
    /// Where it was posted (a DM channel, a support channel, a private thread).
    pub channel_id: u64,
    pub guild_id: Option<u64>,
    pub user_id: u64,
    pub username: String,
    pub global_name: Option<String>,
    /// Set when the message was a question in a support channel, moved to a private thread.
    pub support_channel: Option<u64>,
}

impl Extension for DiscordFields {
    const KEY: &'static str = "discord";
}

pub struct DiscordFactory;

impl ChannelFactory for DiscordFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, instance: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError> {
        let config: DiscordConfig = instance.parse()?;
        let checked = config.check(&instance.name)?;
        Ok(Arc::new(DiscordChannel::new(instance.name, checked)?))
    }
}

/// The bot's own identity: how a mention of it is known, and its own messages skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub id: u64,
    pub username: String,
}

pub struct DiscordChannel {
    name: String,
    checked: Checked,
    client: reqwest::Client,
    rest: Arc<Rest>,
    outbound: Outbound,
}

impl DiscordChannel {
    pub fn new(name: String, checked: Checked) -> Result<DiscordChannel, ConnectorError> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .map_err(|error| ConnectorError::Config(format!("http client: {error}")))?;
        let rest = Arc::new(Rest::new(
            client.clone(),
            &checked.config.token,
            &checked.api_url,
        ));
        Ok(DiscordChannel {
            name,
            checked,
            client,
            rest,
            outbound: Outbound::default(),
        })
    }

    /// Serenity's HTTP client for its gateway client (which asks `GET /gateway` for the
    /// gateway URL), on the same API base and reqwest client.
    fn serenity_http(&self) -> Http {
        let mut builder = HttpBuilder::new(self.checked.config.token.expose())
            .client(self.client.clone())
            .ratelimiter_disabled(true);
        if self.checked.api_url != config::DEFAULT_API_URL {
            builder = builder.proxy(self.checked.api_url.clone());
        }
        builder.build()
    }

    /// `GET /users/@me`: whether the token works, and who the bot is.
    async fn fetch_me(&self) -> Result<BotIdentity, ConnectorError> {
        let me = self
            .rest
            .call(Route::UserMe, LightMethod::Get, None, None)
            .await
            .map_err(|error| error.to_connector_error())?;
        let id = me["id"]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| {
                ConnectorError::retriable(format!("discord /users/@me without an id: {me}"))
            })?;
        Ok(BotIdentity {
            id,
            username: me["username"].as_str().unwrap_or_default().to_string(),
        })
    }
}

#[async_trait]
impl Connector for DiscordChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        host: Arc<dyn ConnectorHost>,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectorError> {
        inbound::run(self, host, shutdown).await
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        outbound::send(self, message).await
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        self.fetch_me().await.map(|_| ())
    }

    /// Discord allows a bot 50 requests a second in all; a channel's bucket (about 5 messages
    /// in 5 s) is read from Discord's answers ([`rest`]).
    fn limits(&self) -> OutboundLimits {
        OutboundLimits {
            per_second: Some(40.0),
            burst: 10,
            concurrency: Some(8),
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
        if attachment
            .size_bytes
            .is_some_and(|size| size > MAX_DOWNLOAD_BYTES)
        {
            return Err(ConnectorError::Permanent(
                "attachment larger than 25 MB, not fetched".into(),
            ));
        }
        let (channel_id, message_id, attachment_id) =
            event::parse_file_id(&attachment.platform_file_id).ok_or_else(|| {
                ConnectorError::Permanent(format!(
                    "{:?} is not a discord attachment reference",
                    attachment.platform_file_id
                ))
            })?;
        // The message again, for a fresh signed URL of the file.
        let message = self
            .rest
            .call(
                Route::ChannelMessage {
                    channel_id: ChannelId::new(channel_id),
                    message_id: MessageId::new(message_id),
                },
                LightMethod::Get,
                None,
                None,
            )
            .await
            .map_err(|error| error.to_connector_error())?;
        let url = message["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|item| item["id"].as_str() == Some(attachment_id.to_string().as_str()))
            .and_then(|item| item["url"].as_str())
            .ok_or_else(|| {
                ConnectorError::Permanent("the attachment is gone from its message".into())
            })?
            .to_string();
        let response = self.client.get(&url).send().await.map_err(|error| {
            ConnectorError::retriable(format!("attachment download: {}", error.without_url()))
        })?;
        if !response.status().is_success() {
            return Err(ConnectorError::retriable(format!(
                "attachment download answered {}",
                response.status()
            )));
        }
        let bytes = response.bytes().await.map_err(|error| {
            ConnectorError::retriable(format!("attachment download: {}", error.without_url()))
        })?;
        Ok(AttachmentBody {
            mime_type: attachment.mime_type.clone(),
            bytes: bytes.to_vec(),
        })
    }
}
