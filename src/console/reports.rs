//! Reports, computed from the same events as everything else: conversations per channel and
//! language, containment (never left the bot), handoffs and their reasons, first response and
//! resolution times (median and p90), satisfaction, and tasks by type and state with time to
//! approval; per day or per hour, filterable by channel and team.
//!
//! Definitions (a conversation belongs to the period it was opened in):
//! - handed off: an owner change from the bot to a queue or an agent (its reason is the bot's
//!   handoff reason, or `takeover` when an agent took it first);
//! - contained: opened and never handed off;
//! - first response: from the first handoff to the first message an agent wrote after it;
//! - resolution: from opening to the first `resolved`;
//! - time to approval: from a task's `awaiting_approval` to a person's approval;
//! - language model usage (LLM mode): the tokens its conversations used, as the provider
//!   counted them, in total and per conversation that used the model.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Console, ConsoleError};
use crate::store::console::LlmUsage;
use crate::store::{now_ms, rfc3339};

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Start, as `YYYY-MM-DD` or RFC 3339 (default: 7 days ago).
    pub from: Option<String>,
    /// End, exclusive (default: now).
    pub to: Option<String>,
    /// `day` (default) or `hour`.
    pub bucket: Option<String>,
    /// Only conversations on this channel instance.
    pub channel: Option<String>,
    /// Only conversations that reached this team (its queue or one of its members).
    pub team: Option<String>,
}

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// The longest period one report covers.
const MAX_SPAN_MS: i64 = 400 * DAY_MS;

fn parse_time(field: &str, text: &str) -> Result<i64, ConsoleError> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(Utc.from_utc_datetime(&midnight).timestamp_millis());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| ConsoleError::invalid(field, "must be YYYY-MM-DD or an RFC 3339 time"))
}

/// Median and p90 (nearest rank) of durations in milliseconds.
fn spread(mut values: Vec<i64>) -> Value {
    if values.is_empty() {
        return json!({"count": 0, "median_ms": null, "p90_ms": null});
    }
    values.sort_unstable();
    let rank = |quantile: f64| {
        let index = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
        values[index]
    };
    json!({"count": values.len(), "median_ms": rank(0.5), "p90_ms": rank(0.9)})
}

#[derive(Default)]
struct Story {
    handoff_at: Option<i64>,
    handoff_reason: Option<String>,
    first_agent_after_handoff: Option<i64>,
    resolved_at: Option<i64>,
    rating: Option<i64>,
    owners: Vec<String>,
}

impl Console {
    /// The report for a period (admins, or API keys with the admin scope).
    pub async fn report(&self, query: &ReportQuery) -> Result<Value, ConsoleError> {
        let now = now_ms();
        let to = match &query.to {
            Some(text) => parse_time("to", text)?,
            None => now,
        };
        let from = match &query.from {
            Some(text) => parse_time("from", text)?,
            None => to - 7 * DAY_MS,
        };
        if from >= to || to - from > MAX_SPAN_MS {
            return Err(ConsoleError::invalid(
                "from",
                "must be before to, at most 400 days apart",
            ));
        }
        let bucket_ms = match query.bucket.as_deref() {
            None | Some("day") => DAY_MS,
            Some("hour") => HOUR_MS,
            Some(_) => return Err(ConsoleError::invalid("bucket", "must be day or hour")),
        };
        if to - from > 1000 * bucket_ms {
            return Err(ConsoleError::invalid("bucket", "too many buckets: use day"));
        }
        let team_owners: Option<Vec<String>> = match &query.team {
            Some(name) => {
                let team = self
                    .teams
                    .get(name)
                    .ok_or_else(|| ConsoleError::invalid("team", "no such team"))?;
                Some(
                    std::iter::once(team.queue_owner())
                        .chain(team.members.iter().map(|id| format!("agent:{id}")))
                        .collect(),
                )
            }
            None => None,
        };
        let conversations = self
            .store
            .report_conversations(from, to, query.channel.as_deref())
            .await?;
        let mut stories: HashMap<String, Story> = HashMap::new();
        for event in self.store.report_events(from, to).await? {
            let story = stories.entry(event.conversation_id.clone()).or_default();
            let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
            match event.kind.as_str() {
                "owner.changed" => {
                    if let Some(to) = data["to"].as_str() {
                        story.owners.push(to.to_string());
                    }
                    let from_bot = data["from"] == "bot";
                    let to_people = data["status"] == "queued" || data["status"] == "agent";
                    if from_bot && to_people && story.handoff_at.is_none() {
                        story.handoff_at = Some(event.created_at);
                        story.handoff_reason = Some(
                            data["reason"]
                                .as_str()
                                .or_else(|| data["change"].as_str())
                                .unwrap_or("unknown")
                                .to_string(),
                        );
                    }
                    if data["status"] == "resolved" && story.resolved_at.is_none() {
                        story.resolved_at = Some(event.created_at);
                    }
                }
                "message.stored" => {
                    if let Some(handoff) = story.handoff_at
                        && story.first_agent_after_handoff.is_none()
                        && event.created_at >= handoff
                    {
                        story.first_agent_after_handoff = Some(event.created_at);
                    }
                }
                "conversation.rated" => {
                    if let Some(score) = data["score"].as_i64() {
                        story.rating = Some(score);
                    }
                }
                _ => {}
            }
        }
        let buckets = ((to - from + bucket_ms - 1) / bucket_ms) as usize;
        let mut series: Vec<Value> = (0..buckets)
            .map(|index| {
                json!({"start": rfc3339(from + index as i64 * bucket_ms), "conversations": 0,
                       "handoffs": 0, "contained": 0, "resolved": 0})
            })
            .collect();
        let mut by_channel: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_language: BTreeMap<String, u64> = BTreeMap::new();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        let mut ratings: BTreeMap<String, u64> = (1..=5).map(|s| (s.to_string(), 0)).collect();
        let (mut total, mut handoffs, mut contained) = (0u64, 0u64, 0u64);
        let (mut first_responses, mut resolutions, mut scores) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut usage, mut with_model) = (LlmUsage::default(), 0u64);
        let empty = Story::default();
        for conversation in &conversations {
            let story = stories.get(&conversation.id).unwrap_or(&empty);
            if let Some(owners) = &team_owners
                && !story.owners.iter().any(|owner| owners.contains(owner))
            {
                continue;
            }
            total += 1;
            let used = conversation.llm_usage;
            if used.requests > 0 {
                with_model += 1;
                usage.prompt_tokens += used.prompt_tokens;
                usage.completion_tokens += used.completion_tokens;
                usage.requests += used.requests;
            }
            *by_channel.entry(conversation.channel.clone()).or_default() += 1;
            *by_language
                .entry(
                    conversation
                        .language
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                )
                .or_default() += 1;
            let index = ((conversation.created_at - from) / bucket_ms) as usize;
            let slot = &mut series[index.min(buckets - 1)];
            slot["conversations"] = (slot["conversations"].as_u64().unwrap_or(0) + 1).into();
            match (&story.handoff_at, &story.handoff_reason) {
                (Some(at), Some(reason)) => {
                    handoffs += 1;
                    *reasons.entry(reason.clone()).or_default() += 1;
                    slot["handoffs"] = (slot["handoffs"].as_u64().unwrap_or(0) + 1).into();
                    if let Some(answered) = story.first_agent_after_handoff {
                        first_responses.push(answered - at);
                    }
                }
                _ => {
                    contained += 1;
                    slot["contained"] = (slot["contained"].as_u64().unwrap_or(0) + 1).into();
                }
            }
            if let Some(resolved) = story.resolved_at {
                resolutions.push(resolved - conversation.created_at);
                slot["resolved"] = (slot["resolved"].as_u64().unwrap_or(0) + 1).into();
            }
            if let Some(score) = story.rating {
                scores.push(score);
                *ratings.entry(score.to_string()).or_default() += 1;
            }
        }
        let share = |part: u64| {
            if total == 0 {
                Value::Null
            } else {
                json!((part as f64 / total as f64 * 1000.0).round() / 1000.0)
            }
        };
        let average = if scores.is_empty() {
            Value::Null
        } else {
            json!((scores.iter().sum::<i64>() as f64 / scores.len() as f64 * 100.0).round() / 100.0)
        };
        let tasks = self.store.report_tasks(from, to).await?;
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        let mut approvals = Vec::new();
        for task in &tasks {
            *by_type.entry(task.kind.clone()).or_default() += 1;
            *by_state.entry(task.status.clone()).or_default() += 1;
            if let (Some(awaiting), Some(approved)) = (task.awaiting_at, task.approved_at) {
                approvals.push(approved - awaiting);
            }
        }
        Ok(json!({
            "from": rfc3339(from),
            "to": rfc3339(to),
            "bucket": if bucket_ms == DAY_MS { "day" } else { "hour" },
            "filters": {"channel": query.channel, "team": query.team},
            "conversations": {
                "total": total,
                "by_channel": by_channel,
                "by_language": by_language,
                "contained": contained,
                "containment": share(contained),
                "handoffs": handoffs,
                "handoff_rate": share(handoffs),
                "handoff_reasons": reasons,
                "first_response": spread(first_responses),
                "resolution": spread(resolutions),
            },
            "llm_usage": llm_usage(usage, with_model),
            "satisfaction": {"count": scores.len(), "average": average, "distribution": ratings},
            "tasks": {
                "total": tasks.len(),
                "by_type": by_type,
                "by_state": by_state,
                "time_to_approval": spread(approvals),
            },
            "series": series,
        }))
    }
}

/// The model's usage over a report's conversations: totals, and the mean per conversation
/// that used it.
fn llm_usage(usage: LlmUsage, conversations: u64) -> Value {
    let tokens = usage.prompt_tokens + usage.completion_tokens;
    let per_conversation = if conversations == 0 {
        Value::Null
    } else {
        json!((tokens as f64 / conversations as f64).round() as i64)
    };
    json!({
        "conversations": conversations,
        "requests": usage.requests,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": tokens,
        "tokens_per_conversation": per_conversation,
    })
}

#[cfg(test)]
mod tests {
    use super::{LlmUsage, Value, llm_usage, spread};

    #[test]
    fn usage_is_summed_and_averaged_over_the_conversations_that_used_the_model() {
        let usage = LlmUsage {
            prompt_tokens: 900,
            completion_tokens: 150,
            requests: 4,
        };
        let figures = llm_usage(usage, 2);
        assert_eq!(figures["total_tokens"], 1050);
        assert_eq!(figures["tokens_per_conversation"], 525);
        assert_eq!(
            llm_usage(LlmUsage::default(), 0)["tokens_per_conversation"],
            Value::Null
        );
    }

    #[test]
    fn median_and_p90_by_nearest_rank() {
        let figures = spread((1..=10).map(|n| n * 1000).collect());
        assert_eq!(figures["median_ms"], 5000);
        assert_eq!(figures["p90_ms"], 9000);
        assert_eq!(spread(vec![7])["p90_ms"], 7);
        assert_eq!(spread(Vec::new())["count"], 0);
    }
}
