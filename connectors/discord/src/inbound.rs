//! Messages in: serenity's gateway client, and each channel's history after a reconnect.
//!
//! Serenity keeps the gateway session (identify, heartbeats, resume, reconnect) and hands
//! every event to [`Forward`], which queues it; one loop ([`run`]) handles them one at a time,
//! a burst in message-id order, so a channel's cursor only ever moves past messages already
//! stored. A payload serenity cannot read, or an event kind it does not know, is logged and
//! skipped by serenity and never reaches the loop. When the app cannot store a message, `run`
//! returns an error; the app restarts it, and the new session's READY reads the message back
//! from history.
//!
//! Exactly once:
//! - a message's platform id is its snowflake id, so reading it twice (live, then from
//!   history) stores it once;
//! - every channel the bot serves (support channels from config, DM channels and the private
//!   threads it opened, remembered in the cursor `watched`) has a cursor `last:<channel id>`,
//!   the last message id handled there, moved only after that message was stored;
//! - on READY (a new session: first start, a restart, an invalid session) and on RESUMED, each
//!   channel's history after its cursor is read and handled like live messages: what was
//!   posted while the bot was disconnected is answered, once.
//!
//! Known gap: a DM channel the bot has never seen a message in is not watched, so a user's
//! very first DM sent while the bot is disconnected is not read back (Discord offers a bot no
//! list of its DM channels).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serenity::all::{Context, EventHandler, GatewayIntents, Interaction, Ready, ResumedEvent};
use serenity::client::ClientBuilder;
use serenity::http::{LightMethod, Route};
use serenity::model::channel::Message;
use serenity::model::id::{ChannelId, InteractionId, UserId};
use switchboard_connector::{ConnectorError, ConnectorHost, CursorError, HostError, InboundEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{self, Decision, Place};
use crate::outbound::report_refusal;
use crate::rest::{Rest, RestError};
use crate::{BotIdentity, DiscordChannel};

/// The cursor listing the DM channels and private threads served (JSON: id -> "dm"|"thread").
pub const WATCHED_CURSOR: &str = "watched";

/// How long a burst of gateway events is gathered before it is handled in order.
const BATCH_WINDOW: Duration = Duration::from_millis(15);

/// Messages asked per page of history (Discord's maximum).
const PAGE: usize = 100;

/// The cursor of a channel's last handled message.
pub fn last_key(channel_id: u64) -> String {
    format!("last:{channel_id}")
}

/// The cursor of a customer's private thread in a support channel.
pub fn thread_key(support_channel: u64, user_id: u64) -> String {
    format!("thread:{support_channel}:{user_id}")
}

/// What the gateway handler passes to the loop.
#[derive(Debug)]
pub enum News {
    /// READY: a new session (nothing was replayed; read every channel's history).
    Ready(BotIdentity),
    /// RESUMED: the session went on; events missed may not all be replayed, so read history.
    Resumed,
    Message(Box<Message>),
    /// A button press, already acknowledged to Discord.
    Press(Box<InboundEvent>),
}

impl News {
    /// Where it goes in a burst: session changes first, then messages by id, then presses.
    fn order(&self) -> (u8, u64) {
        match self {
            News::Ready(_) | News::Resumed => (0, 0),
            News::Message(message) => (1, message.id.get()),
            News::Press(_) => (2, 0),
        }
    }
}

/// The gateway's events, queued in the order serenity hands them over.
pub struct Forward {
    pub channel_name: String,
    pub news: mpsc::UnboundedSender<News>,
    pub rest: Arc<Rest>,
}

#[serenity::async_trait]
impl EventHandler for Forward {
    async fn ready(&self, _context: Context, ready: Ready) {
        tracing::info!(channel = %self.channel_name, bot = %ready.user.name, "discord gateway session ready");
        let _ = self.news.send(News::Ready(BotIdentity {
            id: ready.user.id.get(),
            username: ready.user.name.clone(),
        }));
    }

    async fn resume(&self, _context: Context, _event: ResumedEvent) {
        tracing::info!(channel = %self.channel_name, "discord gateway session resumed");
        let _ = self.news.send(News::Resumed);
    }

    async fn message(&self, _context: Context, message: Message) {
        let _ = self.news.send(News::Message(Box::new(message)));
    }

    /// A button press is acknowledged here, at once (Discord allows 3 s, and the loop may be
    /// reading history): a deferred update (type 6), which stops the client's spinner and
    /// leaves the message as it is. Discord never delivers an interaction twice, so acking
    /// before storing loses nothing that waiting would have saved.
    async fn interaction_create(&self, _context: Context, interaction: Interaction) {
        let Interaction::Component(press) = interaction else {
            tracing::debug!(channel = %self.channel_name, "discord interaction other than a button press, skipped");
            return;
        };
        let acked = self
            .rest
            .call(
                Route::InteractionResponse {
                    interaction_id: InteractionId::new(press.id.get()),
                    token: &press.token,
                },
                LightMethod::Post,
                Some(&serde_json::json!({"type": 6})),
                None,
            )
            .await;
        if let Err(error) = acked {
            tracing::warn!(channel = %self.channel_name, interaction = press.id.get(), error = %error, "button press not acknowledged");
        }
        match event::decide_press(&self.channel_name, &press) {
            Some(event) => {
                let _ = self.news.send(News::Press(Box::new(event)));
            }
            None => {
                tracing::info!(channel = %self.channel_name, interaction = press.id.get(), "button press without a choice, acknowledged only");
            }
        }
    }
}

/// The app could not store a message now: it is read again from history after the restart.
#[derive(Debug)]
pub struct NotStored(pub String);

impl From<NotStored> for ConnectorError {
    fn from(NotStored(reason): NotStored) -> ConnectorError {
        ConnectorError::retriable(format!(
            "discord message not stored, read again from history after restart: {reason}"
        ))
    }
}

/// The gateway until `shutdown`.
pub async fn run(
    channel: &DiscordChannel,
    host: Arc<dyn ConnectorHost>,
    shutdown: CancellationToken,
) -> Result<(), ConnectorError> {
    let me = tokio::select! {
        me = channel.fetch_me() => me?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let (news_tx, mut news) = mpsc::unbounded_channel();
    let intents = GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT;
    let mut client = ClientBuilder::new_with_http(channel.serenity_http(), intents)
        .event_handler(Forward {
            channel_name: channel.name.clone(),
            news: news_tx,
            rest: channel.rest.clone(),
        })
        .await
        .map_err(|error| ConnectorError::retriable(format!("discord client not built: {error}")))?;
    let shards = client.shard_manager.clone();
    let mut gateway = tokio::spawn(async move { client.start().await });
    let mut inbound = Inbound::new(channel, host, me);
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            finished = &mut gateway => {
                let reason = match finished {
                    Ok(Ok(())) => "the gateway client stopped".to_string(),
                    Ok(Err(error)) => {
                        if let Some(misconfigured) = misconfiguration(&error) {
                            break Err(misconfigured);
                        }
                        format!("the gateway client failed: {error}")
                    }
                    Err(error) => format!("the gateway task ended: {error}"),
                };
                break Err(ConnectorError::retriable(format!("discord: {reason}")));
            }
            next = news.recv() => {
                let Some(next) = next else {
                    break Err(ConnectorError::retriable("discord: the gateway handler went away"));
                };
                let mut batch = vec![next];
                // Serenity hands each event to the handler in a task of its own, so events that
                // arrive together can be queued out of order: wait a moment for the rest of a
                // burst, then take a session change first and messages in id order (snowflakes
                // grow with time), so a channel's messages are stored, and its cursor moved, in
                // the order they were posted.
                tokio::time::sleep(BATCH_WINDOW).await;
                while let Ok(more) = news.try_recv() {
                    batch.push(more);
                }
                batch.sort_by_key(News::order);
                let mut failed = None;
                for next in batch {
                    if let Err(not_stored) = inbound.handle(next).await {
                        failed = Some(not_stored);
                        break;
                    }
                }
                if let Some(not_stored) = failed {
                    break Err(not_stored.into());
                }
            }
        }
    };
    shards.shutdown_all().await;
    gateway.abort();
    outcome
}

/// The loop's state: who the bot is, which channels it serves, where their cursors are.
pub struct Inbound<'a> {
    channel: &'a DiscordChannel,
    host: Arc<dyn ConnectorHost>,
    bot: BotIdentity,
    /// DM channels and private threads (support channels come from config).
    watched: Option<(BTreeMap<u64, Place>, Option<i64>)>,
    /// `last:` cursors read or written: (message id, version).
    last: HashMap<u64, (u64, i64)>,
}

impl<'a> Inbound<'a> {
    pub fn new(
        channel: &'a DiscordChannel,
        host: Arc<dyn ConnectorHost>,
        bot: BotIdentity,
    ) -> Inbound<'a> {
        Inbound {
            channel,
            host,
            bot,
            watched: None,
            last: HashMap::new(),
        }
    }

    pub async fn handle(&mut self, news: News) -> Result<(), NotStored> {
        match news {
            News::Ready(bot) => {
                self.bot = bot;
                self.catch_up().await
            }
            News::Resumed => self.catch_up().await,
            News::Message(message) => {
                let place = self.place_of(&message).await?;
                self.message(&message, place).await
            }
            News::Press(event) => {
                // The pressed message's channel is served already (the bot posted there).
                self.ingest(*event).await.map(|_| ())
            }
        }
    }

    /// Where a live message was posted.
    async fn place_of(&mut self, message: &Message) -> Result<Place, NotStored> {
        let channel_id = message.channel_id.get();
        if self.channel.checked.support_channels.contains(&channel_id) {
            return Ok(Place::Support);
        }
        if let Some(place) = self.watched().await?.get(&channel_id) {
            return Ok(*place);
        }
        // A DM comes without a guild id; a guild channel or thread not ours is not served.
        Ok(if message.guild_id.is_none() {
            Place::Dm
        } else {
            Place::Elsewhere
        })
    }

    /// Handle one message, live or from history.
    async fn message(&mut self, message: &Message, place: Place) -> Result<(), NotStored> {
        let channel_id = message.channel_id.get();
        let message_id = message.id.get();
        match event::decide(&self.channel.name, &self.bot, place, message) {
            Decision::Skip { reason } => {
                tracing::debug!(channel = %self.channel.name, discord_channel = channel_id, message = message_id, reason, "discord message skipped");
                if place == Place::Elsewhere {
                    return Ok(());
                }
            }
            Decision::Ingest { event, note } => {
                if let Some(note) = note {
                    tracing::warn!(channel = %self.channel.name, message = message_id, note, "discord message fixed up");
                }
                if place == Place::Dm {
                    // Watched before it is stored, so a crash in between still reads it back.
                    self.watch(channel_id, Place::Dm, message_id.saturating_sub(1))
                        .await?;
                }
                self.ingest(*event).await?;
            }
            Decision::OpenThread {
                mut event,
                support_channel,
                user_id,
                thread_name,
            } => {
                let stored = self
                    .host
                    .find_message(&event.platform_message_id)
                    .await
                    .map_err(|error| NotStored(error.to_string()))?;
                if stored.is_none() {
                    match self
                        .thread_for(support_channel, user_id, &thread_name)
                        .await
                    {
                        Ok(thread) => {
                            event.thread = thread.to_string();
                            self.ingest(*event).await?;
                        }
                        Err(error) if is_lasting(&error) => {
                            report_refusal(
                                self.channel,
                                support_channel,
                                &error,
                                "open a private thread",
                            );
                            tracing::warn!(channel = %self.channel.name, message = message_id, "a support question was not taken: no private thread could be opened for the customer");
                        }
                        Err(error) => {
                            return Err(NotStored(format!("private thread not opened: {error}")));
                        }
                    }
                }
            }
        }
        self.advance(channel_id, message_id).await
    }

    async fn ingest(&self, event: InboundEvent) -> Result<bool, NotStored> {
        let platform_id = event.platform_message_id.clone();
        match self.host.ingest(event).await {
            Ok(receipt) => Ok(!receipt.duplicate),
            Err(HostError::Rejected(reason)) => {
                tracing::warn!(channel = %self.channel.name, message = %platform_id, reason = %reason, "discord message refused by the app, skipped");
                Ok(false)
            }
            Err(HostError::Unavailable(reason)) => Err(NotStored(reason)),
        }
    }

    /// The customer's private thread in a support channel: the one opened before, or a new
    /// private thread with the customer added (nobody else in the guild sees it, apart from
    /// moderators with Manage Threads).
    async fn thread_for(
        &mut self,
        support_channel: u64,
        user_id: u64,
        name: &str,
    ) -> Result<u64, RestError> {
        let key = thread_key(support_channel, user_id);
        let transport = |error: HostError| RestError::Transport(error.to_string());
        if let Some(cursor) = self.host.cursor(&key).await.map_err(transport)?
            && let Ok(thread) = cursor.value.parse::<u64>()
        {
            return Ok(thread);
        }
        let created = self
            .channel
            .rest
            .call(
                Route::ChannelThreads {
                    channel_id: ChannelId::new(support_channel),
                },
                LightMethod::Post,
                Some(&serde_json::json!({
                    "name": name,
                    "type": 12,
                    "invitable": false,
                    "auto_archive_duration": 10080,
                })),
                None,
            )
            .await?;
        let thread = created["id"]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| RestError::Transport(format!("thread without an id: {created}")))?;
        self.channel
            .rest
            .call(
                Route::ChannelThreadMember {
                    channel_id: ChannelId::new(thread),
                    user_id: UserId::new(user_id),
                },
                LightMethod::Put,
                None,
                None,
            )
            .await?;
        tracing::info!(channel = %self.channel.name, support_channel, thread, user = user_id, "private support thread opened");
        let thread = match self.host.set_cursor(&key, None, &thread.to_string()).await {
            Ok(_) => thread,
            // Another process opened one at the same moment: use theirs.
            Err(CursorError::Conflict { .. }) => self
                .host
                .cursor(&key)
                .await
                .map_err(transport)?
                .and_then(|cursor| cursor.value.parse().ok())
                .unwrap_or(thread),
            Err(CursorError::Host(error)) => return Err(transport(error)),
        };
        self.watch(thread, Place::Thread, thread)
            .await
            .map_err(|NotStored(reason)| RestError::Transport(reason))?;
        Ok(thread)
    }

    /// The DM channels and threads served, read once from the cursor.
    async fn watched(&mut self) -> Result<&BTreeMap<u64, Place>, NotStored> {
        if self.watched.is_none() {
            let cursor = self
                .host
                .cursor(WATCHED_CURSOR)
                .await
                .map_err(|error| NotStored(format!("watched channels not read: {error}")))?;
            let (map, version) = match cursor {
                Some(cursor) => (parse_watched(&cursor.value), Some(cursor.version)),
                None => (BTreeMap::new(), None),
            };
            self.watched = Some((map, version));
        }
        Ok(&self.watched.as_ref().expect("just read").0)
    }

    /// Serve a DM channel or thread from now on: remembered, with its cursor starting after
    /// `start_after` unless it has one already.
    async fn watch(
        &mut self,
        channel_id: u64,
        place: Place,
        start_after: u64,
    ) -> Result<(), NotStored> {
        if self.watched().await?.contains_key(&channel_id) {
            return Ok(());
        }
        for _ in 0..5 {
            let (map, version) = self.watched.clone().expect("read above");
            let mut map = map;
            map.insert(channel_id, place);
            match self
                .host
                .set_cursor(WATCHED_CURSOR, version, &render_watched(&map))
                .await
            {
                Ok(cursor) => {
                    self.watched = Some((map, Some(cursor.version)));
                    break;
                }
                Err(CursorError::Conflict { .. }) => {
                    self.watched = None;
                    if self.watched().await?.contains_key(&channel_id) {
                        break;
                    }
                }
                Err(CursorError::Host(error)) => return Err(NotStored(error.to_string())),
            }
        }
        if self.last_seen(channel_id).await?.is_none() {
            self.advance(channel_id, start_after).await?;
        }
        Ok(())
    }

    async fn last_seen(&mut self, channel_id: u64) -> Result<Option<(u64, i64)>, NotStored> {
        if let Some(known) = self.last.get(&channel_id) {
            return Ok(Some(*known));
        }
        let cursor = self
            .host
            .cursor(&last_key(channel_id))
            .await
            .map_err(|error| NotStored(format!("cursor not read: {error}")))?;
        let seen = cursor.and_then(|cursor| {
            let id = cursor.value.parse::<u64>().ok()?;
            Some((id, cursor.version))
        });
        if let Some(seen) = seen {
            self.last.insert(channel_id, seen);
        }
        Ok(seen)
    }

    /// Move a channel's cursor forward to `message_id` (never back).
    async fn advance(&mut self, channel_id: u64, message_id: u64) -> Result<(), NotStored> {
        let key = last_key(channel_id);
        for _ in 0..5 {
            let current = self.last_seen(channel_id).await?;
            if current.is_some_and(|(seen, _)| seen >= message_id) {
                return Ok(());
            }
            match self
                .host
                .set_cursor(
                    &key,
                    current.map(|(_, version)| version),
                    &message_id.to_string(),
                )
                .await
            {
                Ok(cursor) => {
                    self.last.insert(channel_id, (message_id, cursor.version));
                    return Ok(());
                }
                Err(CursorError::Conflict { .. }) => {
                    self.last.remove(&channel_id);
                }
                Err(CursorError::Host(error)) => {
                    return Err(NotStored(format!("cursor not written: {error}")));
                }
            }
        }
        Err(NotStored(format!("cursor {key} keeps moving under us")))
    }

    /// Read every served channel's history after its cursor and handle it like live messages.
    pub async fn catch_up(&mut self) -> Result<(), NotStored> {
        let mut channels: Vec<(u64, Place)> = self
            .channel
            .checked
            .support_channels
            .iter()
            .map(|id| (*id, Place::Support))
            .collect();
        channels.extend(
            self.watched()
                .await?
                .iter()
                .map(|(id, place)| (*id, *place)),
        );
        let mut read = 0usize;
        for (channel_id, place) in channels {
            read += self.catch_up_channel(channel_id, place).await?;
        }
        tracing::info!(channel = %self.channel.name, messages = read, "discord history read after (re)connecting");
        Ok(())
    }

    async fn catch_up_channel(
        &mut self,
        channel_id: u64,
        place: Place,
    ) -> Result<usize, NotStored> {
        let mut read = 0;
        let mut rate_limited = 0;
        loop {
            let Some((after, _)) = self.last_seen(channel_id).await? else {
                // Nothing handled there yet: nothing to read back.
                return Ok(read);
            };
            let page = self
                .channel
                .rest
                .call(
                    Route::ChannelMessages {
                        channel_id: ChannelId::new(channel_id),
                    },
                    LightMethod::Get,
                    None,
                    Some(vec![
                        ("after", after.to_string()),
                        ("limit", PAGE.to_string()),
                    ]),
                )
                .await;
            let page = match page {
                Ok(page) => page,
                Err(RestError::RateLimited { retry_after, .. }) if rate_limited < 5 => {
                    rate_limited += 1;
                    tokio::time::sleep(retry_after).await;
                    continue;
                }
                Err(error) if is_lasting(&error) => {
                    report_refusal(self.channel, channel_id, &error, "read history");
                    return Ok(read);
                }
                Err(error) => {
                    return Err(NotStored(format!(
                        "history of {channel_id} not read: {error}"
                    )));
                }
            };
            let items = page.as_array().cloned().unwrap_or_default();
            let count = items.len();
            let mut messages = Vec::with_capacity(count);
            let mut unreadable_up_to = None;
            for item in items {
                match serde_json::from_value::<Message>(item.clone()) {
                    Ok(message) => messages.push(message),
                    Err(error) => {
                        let id = item["id"].as_str().and_then(|id| id.parse::<u64>().ok());
                        tracing::warn!(channel = %self.channel.name, discord_channel = channel_id, message = ?id, error = %error, "unreadable message in discord history, skipped");
                        unreadable_up_to = unreadable_up_to.max(id);
                    }
                }
            }
            // Discord lists newest first; handle oldest first.
            messages.sort_by_key(|message| message.id.get());
            for message in &messages {
                self.message(message, place).await?;
            }
            read += messages.len();
            if let Some(id) = unreadable_up_to {
                self.advance(channel_id, id).await?;
            }
            if count < PAGE {
                return Ok(read);
            }
        }
    }
}

/// A gateway refusal that only a change of settings mends: the instance is marked failed
/// instead of reconnecting forever.
fn misconfiguration(error: &serenity::Error) -> Option<ConnectorError> {
    use serenity::gateway::GatewayError;
    let serenity::Error::Gateway(gateway) = error else {
        return None;
    };
    let message = match gateway {
        GatewayError::InvalidAuthentication => "discord refused the bot token on the gateway",
        GatewayError::DisallowedGatewayIntents => {
            "discord refused the gateway intents: turn on the Message Content intent of the bot in the developer portal"
        }
        GatewayError::InvalidGatewayIntents => "discord refused the gateway intents as invalid",
        _ => return None,
    };
    Some(ConnectorError::Config(message.into()))
}

/// A refusal that will not go away by itself (permissions, a deleted channel, a 4xx).
fn is_lasting(error: &RestError) -> bool {
    match error {
        RestError::Api { status, .. } => {
            error.is_channel_refusal() || (400..500).contains(status) && *status != 429
        }
        _ => false,
    }
}

fn parse_watched(value: &str) -> BTreeMap<u64, Place> {
    let parsed: BTreeMap<String, String> = serde_json::from_str(value).unwrap_or_default();
    parsed
        .into_iter()
        .filter_map(|(id, place)| {
            let id = id.parse().ok()?;
            let place = match place.as_str() {
                "dm" => Place::Dm,
                "thread" => Place::Thread,
                _ => return None,
            };
            Some((id, place))
        })
        .collect()
}

fn render_watched(map: &BTreeMap<u64, Place>) -> String {
    let named: BTreeMap<String, &str> = map
        .iter()
        .map(|(id, place)| {
            (
                id.to_string(),
                if *place == Place::Thread {
                    "thread"
                } else {
                    "dm"
                },
            )
        })
        .collect();
    serde_json::to_string(&named).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_list_round_trips_and_ignores_junk() {
        let mut map = BTreeMap::new();
        map.insert(5, Place::Dm);
        map.insert(7, Place::Thread);
        assert_eq!(parse_watched(&render_watched(&map)), map);
        assert!(parse_watched("not json").is_empty());
        assert_eq!(parse_watched(r#"{"1":"dm","x":"dm","2":"moon"}"#).len(), 1);
    }
}
