//! The API channel: a backend of the company's own (a mobile app's server, a marketplace, an
//! in-house chat) hands customer messages to Switchboard over HTTP and receives the replies at
//! a callback URL, the way Chatwoot's API channel works.
//!
//! Inbound: `POST /channels/api/<name>/messages` with `Authorization: Bearer <token>` and a
//! JSON body `{"id", "thread", "user": {"id", "name"?, "email"?}, "text", "choice_id"?}`. The
//! answer is sent once the message is durable: 200 with the receipt (a repeated `id` is a
//! duplicate, stored once), 400 for a body that can never be accepted, 401 for a wrong token,
//! 503 with `Retry-After` when the message could not be stored (send it again).
//!
//! Outbound: every reply is POSTed as JSON to `callback_url` with `Idempotency-Key: <id>` and,
//! if configured, `Authorization: Bearer <callback_token>`. 2xx is delivered (an `id` in the
//! answer is recorded as the platform id); 429 and 5xx are retried (a `Retry-After` pauses the
//! instance); any other answer is a permanent failure.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use switchboard_connector::{
    ChannelFactory, Choice, Connector, ConnectorError, ConnectorHost, HostError, InboundEvent,
    InstanceConfig, OutboundLimits, OutboundMessage, PickedChoice, PlatformIdentity, Secret,
    SendReceipt, normalise_email,
};

pub const KIND: &str = "api";

/// The keys of an API channel's `[[channel]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiChannelConfig {
    /// What the backend must present to post messages.
    pub token: Secret,
    /// Where replies are POSTed.
    pub callback_url: String,
    /// Presented to the callback as a bearer token, if set.
    #[serde(default)]
    pub callback_token: Secret,
    /// Seconds a callback may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Whether the backend vouches for its users' emails (links them to the shop's orders).
    #[serde(default)]
    pub trusted_emails: bool,
}

fn default_timeout() -> u64 {
    10
}

pub struct ApiChannelFactory;

impl ChannelFactory for ApiChannelFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, instance: InstanceConfig) -> Result<Arc<dyn Connector>, ConnectorError> {
        let config: ApiChannelConfig = instance.parse()?;
        if config.token.expose().len() < 16 {
            return Err(ConnectorError::Config(format!(
                "channel {:?}: token must be at least 16 characters",
                instance.name
            )));
        }
        let callback = reqwest::Url::parse(&config.callback_url).map_err(|error| {
            ConnectorError::Config(format!(
                "channel {:?}: callback_url {:?}: {error}",
                instance.name, config.callback_url
            ))
        })?;
        if !matches!(callback.scheme(), "http" | "https") {
            return Err(ConnectorError::Config(format!(
                "channel {:?}: callback_url must be http or https",
                instance.name
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|error| ConnectorError::Config(error.to_string()))?;
        Ok(Arc::new(ApiChannel {
            name: instance.name,
            config,
            callback,
            client,
        }))
    }
}

pub struct ApiChannel {
    name: String,
    config: ApiChannelConfig,
    callback: reqwest::Url,
    client: reqwest::Client,
}

/// A customer message as the backend posts it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostedMessage {
    /// The backend's own id of the message: a repeat is stored once.
    pub id: String,
    /// The backend's conversation (a chat room, a customer); replies carry it back.
    pub thread: String,
    pub user: PostedUser,
    pub text: String,
    /// The id of a choice the customer picked (its label is the text).
    #[serde(default)]
    pub choice_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostedUser {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
}

/// A reply as the callback receives it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Callback {
    pub id: String,
    pub conversation_id: String,
    pub thread: String,
    pub seq: i64,
    pub author: String,
    pub text: String,
    pub choices: Vec<Choice>,
    pub in_reply_to: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Clone)]
struct RouteState {
    channel: Arc<ApiChannel>,
    host: Arc<dyn ConnectorHost>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

fn authorised(headers: &HeaderMap, token: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.expose().as_bytes()).into()
}

async fn post_message(
    State(state): State<RouteState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorised(&headers, &state.channel.config.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "a valid bearer token is required",
        );
    }
    let posted: PostedMessage = match serde_json::from_slice(&body) {
        Ok(posted) => posted,
        Err(parse) => {
            return error(StatusCode::BAD_REQUEST, "invalid_body", parse.to_string());
        }
    };
    for (field, value) in [
        ("id", &posted.id),
        ("thread", &posted.thread),
        ("user.id", &posted.user.id),
    ] {
        if value.is_empty() || value.len() > 256 {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("{field} must be 1 to 256 characters"),
            );
        }
    }
    let mut sender = PlatformIdentity::new(posted.user.id, true);
    sender.display_name = posted.user.name;
    sender.language = posted.user.language;
    sender.email = posted
        .user
        .email
        .filter(|_| state.channel.config.trusted_emails)
        .map(|email| normalise_email(&email));
    let mut event = InboundEvent::text(
        state.channel.name.clone(),
        posted.id,
        sender,
        posted.thread,
        posted.text,
    );
    event.choice = posted.choice_id.map(|choice_id| PickedChoice {
        choice_id,
        message_platform_id: None,
    });
    match state.host.ingest(event).await {
        Ok(receipt) => (StatusCode::OK, Json(receipt)).into_response(),
        Err(HostError::Rejected(reason)) => {
            error(StatusCode::BAD_REQUEST, "message_rejected", reason)
        }
        Err(HostError::Unavailable(reason)) => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
    }
}

/// `Retry-After` in seconds, if the answer has one.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[derive(Deserialize)]
struct CallbackAnswer {
    id: Option<String>,
}

#[async_trait]
impl Connector for ApiChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn routes(self: Arc<Self>, host: Arc<dyn ConnectorHost>) -> Option<Router> {
        let state = RouteState {
            channel: self,
            host,
        };
        Some(
            Router::new()
                .route("/messages", post(post_message))
                .with_state(state),
        )
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, ConnectorError> {
        let body = Callback {
            id: message.id.clone(),
            conversation_id: message.conversation_id.clone(),
            thread: message.thread.clone(),
            seq: message.seq,
            author: message.author.as_str().to_string(),
            text: message.text.clone(),
            choices: message.choices.clone(),
            in_reply_to: message.in_reply_to.clone(),
            created_at_ms: message.created_at_ms,
        };
        let mut request = self
            .client
            .post(self.callback.clone())
            .header("Idempotency-Key", &message.id)
            .json(&body);
        if !self.config.callback_token.is_empty() {
            request = request.bearer_auth(self.config.callback_token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|error| ConnectorError::retriable(format!("callback unreachable: {error}")))?;
        let status = response.status();
        if status.is_success() {
            let answer: Option<CallbackAnswer> = response.json().await.ok();
            return Ok(SendReceipt {
                platform_message_id: answer.and_then(|answer| answer.id),
            });
        }
        let message = format!("callback answered {status}");
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(ConnectorError::Retriable {
                retry_after: retry_after(response.headers()),
                message,
            });
        }
        if matches!(status.as_u16(), 401 | 403 | 404) {
            return Err(ConnectorError::Config(message));
        }
        Err(ConnectorError::Permanent(message))
    }

    fn limits(&self) -> OutboundLimits {
        OutboundLimits::default()
    }

    fn capabilities(&self) -> switchboard_connector::Capabilities {
        switchboard_connector::Capabilities {
            choices: true,
            ..Default::default()
        }
    }
}
