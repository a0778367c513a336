//! A fake Discord speaking the real wire protocol, because no Discord emulator exists on the
//! registries here: REST under `/api/v10/` and a gateway WebSocket. The connector reaches it
//! only through serenity's supported settings (`api_url` becomes serenity's `proxy` base, and
//! the gateway URL is what `GET /gateway` answers), and is never told it talks to a fake.
//!
//! What it models, as Discord does:
//! - the gateway: Hello (op 10), Identify (op 2) -> READY with `session_id` and
//!   `resume_gateway_url`, Heartbeat (op 1) -> ACK (op 11), dispatches (op 0) with a sequence,
//!   Resume (op 6) -> RESUMED or Invalid Session (op 9), Reconnect (op 7), closing a
//!   connection; events missed while disconnected are not replayed (Discord replays only a
//!   short buffer, and never across an invalid session), so only history brings them back;
//! - REST: `GET /gateway`, `/gateway/bot`, `/users/@me`, channel messages (create, read one,
//!   list `after` a snowflake newest first, as Discord does), private threads and their
//!   members, DM channels, interaction callbacks; error bodies `{"code", "message"}`, 429s with
//!   `retry_after`, `Retry-After` and `X-RateLimit-*` headers;
//! - who sees what: a DM channel its recipient, a private thread its members, a guild text
//!   channel everyone in the guild.
//!
//! Customers act through the test API (`dm`, `post`, `press`); what the bot did is read back
//! (`bot_messages`, `visible_to`, `acks`, `threads`).
//!
//! This file holds the state and the test API; `rest.rs` the REST endpoints, `gateway.rs`
//! the gateway connection.

mod gateway;
mod rest;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The bot's token and identity.
pub const TOKEN: &str = "MTA5.fake-discord.t0ken";
pub const BOT_ID: u64 = 1_000_000_000_000_000_001;
pub const APPLICATION_ID: u64 = 1_000_000_000_000_000_002;
pub const GUILD_ID: u64 = 1_000_000_000_000_000_003;

/// A Discord user (a customer).
#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub global_name: String,
}

impl User {
    pub fn json(&self) -> Value {
        json!({"id": self.id.to_string(), "username": self.username, "global_name": self.global_name,
               "discriminator": "0", "avatar": null, "bot": false})
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID.to_string(), "username": "switchboard", "global_name": "Switchboard",
           "discriminator": "0", "avatar": null, "bot": true})
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    Dm { recipient: u64 },
    Text,
    PrivateThread { parent: u64, members: BTreeSet<u64> },
}

/// An error to answer the next message creation in a channel with.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The channel, or 0 for any.
    pub channel: u64,
    pub status: u16,
    pub code: i64,
    pub message: String,
    /// For a 429: seconds, in the body's `retry_after` and the `Retry-After` header.
    pub retry_after: Option<f64>,
    /// How many sends it answers (then it is spent).
    pub times: usize,
}

/// What went over the gateway to the current connection.
enum Push {
    Dispatch(&'static str, Value),
    Reconnect,
    Raw(String),
    Close(u16),
}

#[derive(Default)]
struct State_ {
    channels: HashMap<u64, ChannelKind>,
    messages: HashMap<u64, Vec<Value>>,
    dms: HashMap<u64, u64>,
    users: HashMap<u64, User>,
    connection: Option<mpsc::UnboundedSender<Push>>,
    /// Refuse gateway connections (the bot stays disconnected).
    held: bool,
    /// Close every Identify with 4014 (the bot asks for an intent not turned on for it).
    refuse_intents: bool,
    /// The connection stays open but loses every dispatch (a zombied connection), until the
    /// next session or resume.
    deaf: bool,
    sessions: BTreeSet<String>,
    seq: u64,
    identifies: usize,
    resumes: usize,
    faults: VecDeque<Fault>,
    send_attempts: HashMap<u64, usize>,
    acks: Vec<(u64, Value)>,
    threads_created: Vec<(u64, u64)>,
}

struct Shared {
    base: String,
    next_id: AtomicU64,
    state: Mutex<State_>,
}

impl Shared {
    fn snowflake(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }
}

pub struct FakeDiscord {
    pub api_url: String,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self._server.abort();
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let shared = Arc::new(Shared {
            base: base.clone(),
            next_id: AtomicU64::new(1_100_000_000_000_000_000),
            state: Mutex::default(),
        });
        let api = axum::Router::new()
            .route("/gateway/bot", get(rest::gateway_bot))
            .route("/users/@me", get(rest::users_me))
            .route("/users/@me/channels", post(rest::open_dm))
            .route(
                "/channels/{channel}/messages",
                post(rest::create_message).get(rest::list_messages),
            )
            .route(
                "/channels/{channel}/messages/{message}",
                get(rest::get_message),
            )
            .route("/channels/{channel}/threads", post(rest::create_thread))
            .route(
                "/channels/{channel}/thread-members/{user}",
                put(rest::add_thread_member),
            )
            .route_layer(axum::middleware::from_fn(rest::require_bot_token))
            .route("/gateway", get(rest::gateway_url))
            .route(
                "/interactions/{interaction}/{token}/callback",
                post(rest::interaction_callback),
            );
        let app = axum::Router::new()
            .nest("/api/v10", api)
            .route("/gateway", get(gateway::gateway_socket))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDiscord {
            api_url: format!("http://{base}"),
            shared,
            _server: server,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State_> {
        self.shared.state.lock().unwrap()
    }

    pub fn user(&self, name: &str) -> User {
        let user = User {
            id: self.shared.snowflake(),
            username: name.to_lowercase(),
            global_name: name.to_string(),
        };
        self.state().users.insert(user.id, user.clone());
        user
    }

    /// A guild text channel (a support channel if the config names it).
    pub fn text_channel(&self) -> u64 {
        let id = self.shared.snowflake();
        self.state().channels.insert(id, ChannelKind::Text);
        id
    }

    /// The user's DM channel with the bot (opened on first use).
    pub fn dm_channel(&self, user: &User) -> u64 {
        let mut state = self.state();
        if let Some(id) = state.dms.get(&user.id) {
            return *id;
        }
        let id = self.shared.snowflake();
        state.dms.insert(user.id, id);
        state
            .channels
            .insert(id, ChannelKind::Dm { recipient: user.id });
        id
    }

    /// Whether the bot is connected (a gateway session is open).
    pub fn connected(&self) -> bool {
        self.state().connection.is_some()
    }

    pub async fn wait_connected(&self) {
        crate::helpers::eventually(60, "the bot's gateway session", || async {
            self.connected()
        })
        .await;
    }

    /// A customer writes a DM; returns the message id.
    pub fn dm(&self, user: &User, text: &str) -> u64 {
        let channel = self.dm_channel(user);
        self.post_message(channel, user, text, Vec::new(), Vec::new())
    }

    /// A customer writes in a guild channel or thread, mentioning the bot if asked.
    pub fn post(&self, channel: u64, user: &User, text: &str, mention: bool) -> u64 {
        let (content, mentions) = if mention {
            (format!("<@{BOT_ID}> {text}"), vec![bot_user()])
        } else {
            (text.to_string(), Vec::new())
        };
        self.post_message(channel, user, &content, mentions, Vec::new())
    }

    /// A customer's message with files.
    pub fn post_with_files(&self, channel: u64, user: &User, text: &str, files: Vec<Value>) -> u64 {
        self.post_message(channel, user, text, Vec::new(), files)
    }

    fn post_message(
        &self,
        channel: u64,
        user: &User,
        content: &str,
        mentions: Vec<Value>,
        attachments: Vec<Value>,
    ) -> u64 {
        let id = self.shared.snowflake();
        let message = message_json(
            id,
            channel,
            user.json(),
            content,
            mentions,
            attachments,
            Value::Null,
        );
        let mut state = self.state();
        state
            .messages
            .entry(channel)
            .or_default()
            .push(message.clone());
        let dispatch = with_guild(&state, message);
        if let Some(connection) = state.connection.as_ref().filter(|_| !state.deaf) {
            let _ = connection.send(Push::Dispatch("MESSAGE_CREATE", dispatch));
        }
        id
    }

    /// Deliver a message of `channel` over the gateway again (as Discord may after a resume).
    pub fn redeliver(&self, channel: u64, message_id: u64) {
        let state = self.state();
        let Some(message) = state
            .messages
            .get(&channel)
            .and_then(|messages| messages.iter().find(|m| is_id(&m["id"], message_id)))
            .cloned()
        else {
            panic!("no message {message_id} in {channel}");
        };
        let dispatch = with_guild(&state, message);
        if let Some(connection) = &state.connection {
            let _ = connection.send(Push::Dispatch("MESSAGE_CREATE", dispatch));
        }
    }

    /// Send a dispatch as is (for unknown or malformed events).
    pub fn dispatch_raw(&self, kind: &'static str, data: Value) {
        if let Some(connection) = &self.state().connection {
            let _ = connection.send(Push::Dispatch(kind, data));
        }
    }

    /// Send a text frame as is on the current connection (malformed JSON and the like).
    pub fn send_raw_frame(&self, frame: &str) {
        if let Some(connection) = &self.state().connection {
            let _ = connection.send(Push::Raw(frame.to_string()));
        }
    }

    /// A customer presses a button of a bot message.
    pub fn press(&self, user: &User, message: &Value, custom_id: &str) -> u64 {
        let id = self.shared.snowflake();
        let channel: u64 = message["channel_id"].as_str().unwrap().parse().unwrap();
        let state = self.state();
        let mut interaction = json!({
            "id": id.to_string(), "application_id": APPLICATION_ID.to_string(), "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": channel.to_string(), "token": format!("itoken-{id}"), "version": 1,
            "message": message, "locale": "en-US", "entitlements": [],
            "attachment_size_limit": 26_214_400, "app_permissions": "0",
        });
        match state.channels.get(&channel) {
            Some(ChannelKind::Dm { .. }) | None => interaction["user"] = user.json(),
            Some(_) => {
                interaction["guild_id"] = GUILD_ID.to_string().into();
                interaction["member"] = json!({"user": user.json(), "roles": [],
                    "joined_at": "2024-01-01T00:00:00+00:00", "deaf": false, "mute": false,
                    "flags": 0, "pending": false, "permissions": "0"});
            }
        }
        if let Some(connection) = &state.connection {
            let _ = connection.send(Push::Dispatch("INTERACTION_CREATE", interaction));
        }
        id
    }

    /// Close the gateway connection and refuse new ones until [`FakeDiscord::release`].
    pub fn disconnect_and_hold(&self) {
        let mut state = self.state();
        state.held = true;
        if let Some(connection) = state.connection.take() {
            let _ = connection.send(Push::Close(4000));
        }
    }

    /// Keep the connection open but lose every event from now on, until the bot resumes or
    /// opens a new session.
    pub fn go_deaf(&self) {
        self.state().deaf = true;
    }

    /// Accept gateway connections again.
    pub fn release(&self) {
        self.state().held = false;
    }

    /// Ask the bot to reconnect (op 7), as Discord does before moving a session.
    pub fn ask_reconnect(&self) {
        if let Some(connection) = self.state().connection.take() {
            let _ = connection.send(Push::Reconnect);
        }
    }

    /// Forget every session: the next RESUME is answered with an invalid session (op 9).
    pub fn forget_sessions(&self) {
        self.state().sessions.clear();
    }

    /// Refuse the bot's intents from now on (close code 4014, Disallowed intent(s)).
    pub fn refuse_intents(&self) {
        self.state().refuse_intents = true;
    }

    pub fn identifies(&self) -> usize {
        self.state().identifies
    }

    pub fn resumes(&self) -> usize {
        self.state().resumes
    }

    pub fn fail_next_send(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }

    pub fn send_attempts(&self, channel: u64) -> usize {
        self.state()
            .send_attempts
            .get(&channel)
            .copied()
            .unwrap_or(0)
    }

    /// The bot's messages in a channel, oldest first.
    pub fn bot_messages(&self, channel: u64) -> Vec<Value> {
        self.state()
            .messages
            .get(&channel)
            .map(|messages| {
                messages
                    .iter()
                    .filter(|message| is_id(&message["author"]["id"], BOT_ID))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until the bot posted at least `count` messages in `channel`; all of them.
    pub async fn wait_for_bot(&self, channel: u64, count: usize, seconds: u64) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let messages = self.bot_messages(channel);
            if messages.len() >= count {
                return messages;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {seconds} s waiting for {count} bot messages in {channel}: {messages:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every message in every channel `user` can see.
    pub fn visible_to(&self, user: &User) -> Vec<Value> {
        let state = self.state();
        let mut seen = Vec::new();
        for (channel, kind) in &state.channels {
            let visible = match kind {
                ChannelKind::Dm { recipient } => *recipient == user.id,
                ChannelKind::Text => true,
                ChannelKind::PrivateThread { members, .. } => members.contains(&user.id),
            };
            if visible {
                seen.extend(state.messages.get(channel).cloned().unwrap_or_default());
            }
        }
        seen
    }

    /// Private threads opened: (parent channel, thread id), and each thread's members.
    pub fn threads(&self) -> Vec<(u64, u64, BTreeSet<u64>)> {
        let state = self.state();
        state
            .threads_created
            .iter()
            .map(|(parent, thread)| {
                let members = match state.channels.get(thread) {
                    Some(ChannelKind::PrivateThread { members, .. }) => members.clone(),
                    _ => BTreeSet::new(),
                };
                (*parent, *thread, members)
            })
            .collect()
    }

    /// Interaction callbacks received: (interaction id, body).
    pub fn acks(&self) -> Vec<(u64, Value)> {
        self.state().acks.clone()
    }
}

/// Whether a JSON snowflake (a string, as Discord writes ids) is `id`.
pub fn is_id(value: &Value, id: u64) -> bool {
    value.as_str().and_then(|text| text.parse::<u64>().ok()) == Some(id)
}

fn message_json(
    id: u64,
    channel: u64,
    author: Value,
    content: &str,
    mentions: Vec<Value>,
    attachments: Vec<Value>,
    components: Value,
) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel.to_string(), "author": author,
        "content": content, "timestamp": chrono::Utc::now().to_rfc3339(),
        "edited_timestamp": null, "tts": false, "mention_everyone": false,
        "mentions": mentions, "mention_roles": [], "attachments": attachments, "embeds": [],
        "pinned": false, "type": 0,
        "components": if components.is_null() { json!([]) } else { components },
    })
}

/// A message as the gateway sends it: with `guild_id` outside DMs (history has none).
fn with_guild(state: &State_, mut message: Value) -> Value {
    let channel: u64 = message["channel_id"].as_str().unwrap().parse().unwrap();
    if !matches!(state.channels.get(&channel), Some(ChannelKind::Dm { .. })) {
        message["guild_id"] = GUILD_ID.to_string().into();
    }
    message
}
