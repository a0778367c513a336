//! The tools the model may call, and what each call becomes.
//!
//! Two lookups read the conversation's own customer's data ([`Shop`]): their orders and their
//! requests. Every other tool ends the model's turn: `open_KIND` becomes an
//! [`Action::OpenTask`] that the router hands to the workflow service (whose policies decide,
//! as the verified customer, exactly once per message), `handoff` a handoff, `take_order` the
//! builtin assistant's order taking. The model names orders by number only; nothing it writes
//! can name a customer.

use serde_json::{Map, Value, json};

use super::prompts::ToolTexts;
use crate::assistant::Action;
use crate::assistant::intents::{Intents, ORDER_SLOT, OnComplete};
use crate::assistant::redact::Vault;
use crate::assistant::shop::Shop;
use crate::llm::{ToolCall, ToolSpec};

/// A task the model may open: `open_KIND` with the intent's slots as arguments.
#[derive(Debug, Clone)]
struct TaskTool {
    name: String,
    kind: String,
    slots: Vec<String>,
}

/// What a call asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    ListOrders,
    ListRequests,
    /// Ends the turn: the workflow decides.
    Action(Action),
    /// Ends the turn: people take over.
    Handoff {
        reason: String,
    },
    /// Ends the turn: the builtin assistant takes the order.
    TakeOrder,
    /// The call cannot be run as written; the model is told why and may try again.
    Invalid(String),
}

impl Call {
    /// Whether the call only reads (the model sees the result and goes on).
    pub fn is_lookup(&self) -> bool {
        matches!(
            self,
            Call::ListOrders | Call::ListRequests | Call::Invalid(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Tools {
    specs: Vec<ToolSpec>,
    tasks: Vec<TaskTool>,
}

fn described(texts: &ToolTexts, name: &str, fallback: &str) -> String {
    texts
        .tools
        .get(name)
        .map(|tool| tool.description.clone())
        .unwrap_or_else(|| fallback.to_string())
}

impl Tools {
    /// The fixed tools and one `open_KIND` per task intent of `intents`.
    pub fn new(intents: &Intents, texts: &ToolTexts) -> Tools {
        let no_arguments =
            json!({"type": "object", "properties": {}, "additionalProperties": false});
        let mut specs = vec![
            ToolSpec {
                name: "list_orders".into(),
                description: described(texts, "list_orders", "List the customer's orders."),
                parameters: no_arguments.clone(),
            },
            ToolSpec {
                name: "list_requests".into(),
                description: described(texts, "list_requests", "List the customer's requests."),
                parameters: no_arguments.clone(),
            },
        ];
        let mut tasks: Vec<TaskTool> = Vec::new();
        for intent in &intents.intents {
            if intent.on_complete != OnComplete::Task {
                continue;
            }
            let kind = intent.task.clone().unwrap_or_else(|| intent.name.clone());
            let name = format!("open_{kind}");
            if !tasks.iter().any(|known| known.name == name) {
                tasks.push(TaskTool {
                    name,
                    kind,
                    slots: intent.slots.clone(),
                });
            }
        }
        for task in &tasks {
            let properties: Map<String, Value> = task
                .slots
                .iter()
                .map(|slot| {
                    let description = texts
                        .slots
                        .get(slot)
                        .map(|slot| slot.description.clone())
                        .unwrap_or_else(|| {
                            format!("The {}, as the customer gave it.", slot.replace('_', " "))
                        });
                    (
                        slot.clone(),
                        json!({"type": "string", "description": description}),
                    )
                })
                .collect();
            let description = texts
                .tasks
                .get(&task.kind)
                .map(|text| text.description.clone())
                .unwrap_or_else(|| {
                    format!(
                        "Ask for a {} request about one of the customer's orders; the shop's policy decides.",
                        task.kind.replace('_', " ")
                    )
                });
            specs.push(ToolSpec {
                name: task.name.clone(),
                description,
                parameters: json!({
                    "type": "object",
                    "properties": properties,
                    "required": task.slots,
                    "additionalProperties": false,
                }),
            });
        }
        if intents
            .intents
            .iter()
            .any(|intent| intent.on_complete.takes_order())
        {
            specs.push(ToolSpec {
                name: "take_order".into(),
                description: described(texts, "take_order", "Start taking an order."),
                parameters: no_arguments,
            });
        }
        let reason = texts
            .tools
            .get("handoff")
            .and_then(|tool| tool.arguments.get("reason"))
            .map(|reason| reason.description.clone())
            .unwrap_or_else(|| "Why.".into());
        specs.push(ToolSpec {
            name: "handoff".into(),
            description: described(texts, "handoff", "Pass the conversation to a person."),
            parameters: json!({
                "type": "object",
                "properties": {"reason": {"type": "string", "description": reason}},
                "additionalProperties": false,
            }),
        });
        Tools { specs, tasks }
    }

    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// What `call` asks for, with placeholders in its arguments restored from `vault`.
    pub fn parse(&self, call: &ToolCall, vault: &Vault) -> Call {
        let arguments = if call.arguments.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str::<Value>(&call.arguments) {
                Ok(Value::Object(arguments)) => Value::Object(arguments),
                Ok(_) | Err(_) => {
                    return Call::Invalid(format!(
                        "the arguments of {} must be a JSON object",
                        call.name
                    ));
                }
            }
        };
        match call.name.as_str() {
            "list_orders" => Call::ListOrders,
            "list_requests" => Call::ListRequests,
            "take_order" if self.specs.iter().any(|spec| spec.name == "take_order") => {
                Call::TakeOrder
            }
            "handoff" => Call::Handoff {
                reason: arguments["reason"].as_str().unwrap_or_default().to_string(),
            },
            name => match self.tasks.iter().find(|task| task.name == name) {
                Some(task) => task_call(task, &arguments, vault),
                None => Call::Invalid(format!("there is no tool named {name}")),
            },
        }
    }
}

fn task_call(task: &TaskTool, arguments: &Value, vault: &Vault) -> Call {
    let mut details = Map::new();
    let mut order_id = None;
    let mut missing = Vec::new();
    for slot in &task.slots {
        let value = match &arguments[slot] {
            Value::String(text) => text.trim().to_string(),
            Value::Number(number) => number.to_string(),
            _ => String::new(),
        };
        if value.is_empty() {
            missing.push(slot.as_str());
            continue;
        }
        let value = vault.restore(&value);
        if slot == ORDER_SLOT {
            // "#1043" and "order 1043" name order 1043.
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            if digits.is_empty() {
                missing.push(slot.as_str());
                continue;
            }
            order_id = Some(digits);
        } else {
            details.insert(slot.clone(), Value::String(value));
        }
    }
    if !missing.is_empty() {
        return Call::Invalid(format!(
            "{} needs {}: ask the customer",
            task.name,
            missing.join(", ")
        ));
    }
    Call::Action(Action::OpenTask {
        kind: task.kind.clone(),
        order_id,
        details,
    })
}

/// The customer's orders, as a lookup answers the model (addresses redacted by the caller).
pub async fn list_orders(shop: &dyn Shop, conversation_id: &str, language: &str) -> Value {
    match shop.orders(conversation_id, language).await {
        Ok(orders) => json!({"orders": orders}),
        Err(refusal) => json!({"error": refusal.code, "tell_the_customer": refusal.message}),
    }
}

/// The customer's requests, as a lookup answers the model.
pub async fn list_requests(shop: &dyn Shop, conversation_id: &str, language: &str) -> Value {
    match shop.requests(conversation_id, language).await {
        Ok(requests) => json!({"requests": requests}),
        Err(refusal) => json!({"error": refusal.code, "tell_the_customer": refusal.message}),
    }
}
