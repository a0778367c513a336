//! Discord's REST API, with its rate limits read from every answer.
//!
//! Requests are built by serenity (its routes and the `https://discord.com` to `api_url`
//! rewrite) and sent on the same reqwest client, so the answer's headers are at hand:
//! serenity's own ratelimiter has to be off when the API base is replaced, and its error type
//! drops the headers. So this module keeps Discord's limits itself:
//! - per-route buckets: an answer with `X-RateLimit-Remaining: 0` blocks the route's bucket
//!   (serenity's bucket of route and major parameter) for `X-RateLimit-Reset-After` seconds;
//! - the global limit: a 429 with `global: true` (or `X-RateLimit-Global`) blocks every route;
//! - a 429 blocks its bucket for `retry_after`.
//!
//! A request to a blocked bucket waits when the wait is short, and otherwise fails at once
//! with [`RestError::RateLimited`], which the outbox turns into a pause of the whole instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serenity::http::{LightMethod, RatelimitingBucket, Request, Route};
use switchboard_connector::{ConnectorError, Secret};

/// A blocked bucket is waited for inline up to this long; longer is the outbox's pause.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(1);

/// How long a REST call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Discord's JSON error codes this connector acts on.
pub mod codes {
    pub const UNKNOWN_CHANNEL: i64 = 10003;
    pub const UNKNOWN_MESSAGE: i64 = 10008;
    pub const MISSING_ACCESS: i64 = 50001;
    pub const CANNOT_MESSAGE_USER: i64 = 50007;
    pub const MISSING_PERMISSIONS: i64 = 50013;
}

#[derive(Debug, Clone, PartialEq)]
pub enum RestError {
    /// 429, or a bucket known to be empty: try again after `retry_after`.
    RateLimited { retry_after: Duration, global: bool },
    /// Discord answered with an error: its HTTP status and JSON `code` (0 when none).
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    /// No answer, or one that could not be read.
    Transport(String),
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestError::RateLimited {
                retry_after,
                global,
            } => write!(
                f,
                "rate limited{} for {} ms",
                if *global { " (global)" } else { "" },
                retry_after.as_millis()
            ),
            RestError::Api {
                status,
                code,
                message,
            } => write!(f, "discord answered {status} (code {code}): {message}"),
            RestError::Transport(message) => write!(f, "discord unreachable: {message}"),
        }
    }
}

impl RestError {
    /// The channel is gone or the bot may not post there: fails the same way until somebody
    /// changes Discord's settings.
    pub fn is_channel_refusal(&self) -> bool {
        matches!(
            self,
            RestError::Api { code, .. } if matches!(
                *code,
                codes::UNKNOWN_CHANNEL
                    | codes::MISSING_ACCESS
                    | codes::MISSING_PERMISSIONS
                    | codes::CANNOT_MESSAGE_USER
            )
        )
    }

    /// The error as the outbox reads it.
    pub fn to_connector_error(&self) -> ConnectorError {
        match self {
            RestError::RateLimited { retry_after, .. } => ConnectorError::Retriable {
                message: format!("discord {self}"),
                retry_after: Some(*retry_after),
            },
            RestError::Transport(_) => ConnectorError::retriable(self.to_string()),
            RestError::Api { status: 401, .. } => {
                ConnectorError::Config(format!("discord refused the bot token: {self}"))
            }
            RestError::Api {
                code: codes::CANNOT_MESSAGE_USER,
                ..
            } => ConnectorError::Unreachable(format!(
                "{}: {self}",
                refusal_reason(codes::CANNOT_MESSAGE_USER)
            )),
            RestError::Api { code, .. } if self.is_channel_refusal() => {
                ConnectorError::Permanent(format!("{}: {self}", refusal_reason(*code)))
            }
            RestError::Api { status, .. } if *status >= 500 => {
                ConnectorError::retriable(self.to_string())
            }
            RestError::Api { .. } => ConnectorError::Permanent(format!("discord refused: {self}")),
        }
    }
}

/// What a channel refusal means, for people reading the log.
pub fn refusal_reason(code: i64) -> &'static str {
    match code {
        codes::UNKNOWN_CHANNEL => "the channel does not exist (deleted, or never seen by the bot)",
        codes::MISSING_ACCESS => "the bot cannot see the channel (missing access)",
        codes::MISSING_PERMISSIONS => {
            "the bot lacks a permission there (Send Messages, Create Private Threads, ...)"
        }
        codes::CANNOT_MESSAGE_USER => "the user does not accept direct messages from the bot",
        _ => "discord refused",
    }
}

#[derive(Default)]
struct Blocks {
    buckets: HashMap<RatelimitingBucket, Instant>,
    global: Option<Instant>,
}

/// The REST client of one bot.
pub struct Rest {
    client: reqwest::Client,
    /// `Bot <token>`.
    authorization: Secret,
    /// The API base replacing `https://discord.com`, if any.
    proxy: Option<String>,
    blocks: Mutex<Blocks>,
}

impl Rest {
    pub fn new(client: reqwest::Client, token: &Secret, api_url: &str) -> Rest {
        let proxy = (api_url != crate::config::DEFAULT_API_URL).then(|| api_url.to_string());
        Rest {
            client,
            authorization: Secret::new(format!("Bot {}", token.expose())),
            proxy,
            blocks: Mutex::default(),
        }
    }

    /// The client, for downloads of attachments (signed CDN URLs, no token sent).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// One call; the answer's JSON (`null` for an empty answer).
    pub async fn call(
        &self,
        route: Route<'_>,
        method: LightMethod,
        body: Option<&serde_json::Value>,
        params: Option<Vec<(&'static str, String)>>,
    ) -> Result<serde_json::Value, RestError> {
        let bucket = route.ratelimiting_bucket();
        self.wait_for(bucket).await?;
        let bytes = body.map(|body| serde_json::to_vec(body).unwrap_or_default());
        let request = Request::new(route, method)
            .body(bytes)
            .params(params)
            .build(
                &self.client,
                self.authorization.expose(),
                self.proxy.as_deref(),
            )
            .map_err(|error| RestError::Transport(format!("request not built: {error}")))?;
        let response = request
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|error| RestError::Transport(error.without_url().to_string()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|error| RestError::Transport(error.without_url().to_string()))?;
        let json: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
        };
        self.record(bucket, &headers);
        if status == 429 {
            let (retry_after, global) = rate_limit_of(&headers, &json);
            self.block(bucket, retry_after, global);
            return Err(RestError::RateLimited {
                retry_after,
                global,
            });
        }
        if !(200..300).contains(&status) {
            return Err(RestError::Api {
                status,
                code: json["code"].as_i64().unwrap_or_default(),
                message: json["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(200).collect()),
            });
        }
        Ok(json)
    }

    /// Wait for a blocked bucket (or the global limit) if the wait is short; else say how long.
    async fn wait_for(&self, bucket: RatelimitingBucket) -> Result<(), RestError> {
        let (until, global) = {
            let blocks = self.blocks.lock().expect("rate limit lock");
            let now = Instant::now();
            let global = blocks.global.filter(|until| *until > now);
            let route = blocks
                .buckets
                .get(&bucket)
                .copied()
                .filter(|until| *until > now);
            match (global, route) {
                (Some(global), Some(route)) if route > global => (Some(route), false),
                (Some(global), _) => (Some(global), true),
                (None, route) => (route, false),
            }
        };
        let Some(until) = until else {
            return Ok(());
        };
        let wait = until.saturating_duration_since(Instant::now());
        if wait <= MAX_INLINE_WAIT {
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        Err(RestError::RateLimited {
            retry_after: wait,
            global,
        })
    }

    /// Remember an empty bucket from a successful answer's headers.
    fn record(&self, bucket: RatelimitingBucket, headers: &HeaderMap) {
        let remaining = header_f64(headers, "x-ratelimit-remaining");
        let reset_after = header_f64(headers, "x-ratelimit-reset-after");
        if let (Some(remaining), Some(reset_after)) = (remaining, reset_after)
            && remaining <= 0.0
        {
            self.block(bucket, seconds(reset_after), false);
        }
    }

    fn block(&self, bucket: RatelimitingBucket, wait: Duration, global: bool) {
        let until = Instant::now() + wait;
        let mut blocks = self.blocks.lock().expect("rate limit lock");
        if global {
            blocks.global = Some(blocks.global.map_or(until, |old| old.max(until)));
        } else {
            let entry = blocks.buckets.entry(bucket).or_insert(until);
            *entry = (*entry).max(until);
        }
        // Forget buckets long free, so the map stays small.
        let now = Instant::now();
        blocks.buckets.retain(|_, until| *until > now);
    }
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
}

/// Seconds as Discord writes them (fractions allowed), kept within an hour.
fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.clamp(0.0, 3600.0))
}

/// How long a 429 asks to wait, and whether it is the global limit: the body's `retry_after`
/// (seconds, with fractions), else the `Retry-After` header, else a second.
pub fn rate_limit_of(headers: &HeaderMap, body: &serde_json::Value) -> (Duration, bool) {
    let retry_after = body["retry_after"]
        .as_f64()
        .filter(|value| value.is_finite())
        .or_else(|| header_f64(headers, "retry-after"))
        .map(seconds)
        .unwrap_or(Duration::from_secs(1));
    let global = body["global"].as_bool().unwrap_or(false)
        || headers
            .get("x-ratelimit-global")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || headers
            .get("x-ratelimit-scope")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value == "global");
    (retry_after, global)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serenity::model::id::ChannelId;

    #[test]
    fn a_429_names_its_pause_from_the_body_or_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        let (wait, global) = rate_limit_of(
            &headers,
            &serde_json::json!({"retry_after": 1.5, "global": false}),
        );
        assert_eq!((wait, global), (Duration::from_millis(1500), false));
        let (wait, _) = rate_limit_of(&headers, &serde_json::Value::Null);
        assert_eq!(wait, Duration::from_secs(3));
        headers.insert("x-ratelimit-global", "true".parse().unwrap());
        assert!(rate_limit_of(&headers, &serde_json::Value::Null).1);
    }

    #[test]
    fn refusals_are_permanent_and_limits_retriable() {
        let refusal = RestError::Api {
            status: 403,
            code: codes::MISSING_PERMISSIONS,
            message: "Missing Permissions".into(),
        };
        let error = refusal.to_connector_error();
        assert!(matches!(error, ConnectorError::Permanent(_)), "{error}");
        assert!(error.to_string().contains("lacks a permission"), "{error}");
        let no_dms = RestError::Api {
            status: 403,
            code: codes::CANNOT_MESSAGE_USER,
            message: "Cannot send messages to this user".into(),
        };
        let error = no_dms.to_connector_error();
        assert!(matches!(error, ConnectorError::Unreachable(_)), "{error}");
        let limited = RestError::RateLimited {
            retry_after: Duration::from_secs(2),
            global: false,
        }
        .to_connector_error();
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        let token = RestError::Api {
            status: 401,
            code: 0,
            message: "401: Unauthorized".into(),
        };
        assert!(matches!(
            token.to_connector_error(),
            ConnectorError::Config(_)
        ));
        let outage = RestError::Api {
            status: 502,
            code: 0,
            message: "bad gateway".into(),
        };
        assert!(outage.to_connector_error().is_retriable());
    }

    #[tokio::test]
    async fn an_empty_bucket_blocks_its_route_only() {
        let rest = Rest::new(
            reqwest::Client::new(),
            &Secret::new("t"),
            "http://127.0.0.1:9",
        );
        let one = Route::ChannelMessages {
            channel_id: ChannelId::new(1),
        }
        .ratelimiting_bucket();
        let two = Route::ChannelMessages {
            channel_id: ChannelId::new(2),
        }
        .ratelimiting_bucket();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset-after", "5.0".parse().unwrap());
        rest.record(one, &headers);
        let blocked = rest.wait_for(one).await.unwrap_err();
        assert!(
            matches!(blocked, RestError::RateLimited { retry_after, global: false } if retry_after > Duration::from_secs(4)),
            "{blocked:?}"
        );
        rest.wait_for(two).await.unwrap();
        rest.block(two, Duration::from_secs(10), true);
        assert!(matches!(
            rest.wait_for(one).await,
            Err(RestError::RateLimited { global: true, .. })
        ));
    }
}
