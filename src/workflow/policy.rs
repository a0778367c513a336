//! Policies: what a new task may do on its own, what waits for a person, and what is refused.
//! A pure function of the task type, the order, the payload and the configured limits, so the
//! rules read in one place and are tested without a database.

use serde_json::Value;

use super::model::WorkflowError;
use super::orders::Order;
use super::settings::PolicySettings;
use super::types::{Rule, TaskType};

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approved at once, by the policy.
    Approve,
    /// Waits for an approver; `role` if one is required.
    AwaitApproval { role: Option<String> },
}

/// The policy's verdict and why, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: String,
}

pub fn money(cents: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", cents / 100, (cents % 100).abs())
}

/// Decide a new task. `order` is the task's order, already checked to be the customer's.
pub fn decide(
    task_type: &TaskType,
    order: Option<&Order>,
    payload: &Value,
    policy: &PolicySettings,
    now_ms: i64,
) -> Result<Verdict, WorkflowError> {
    match &task_type.rule {
        Rule::Auto => Ok(Verdict {
            decision: Decision::Approve,
            reason: format!("{} tasks are approved automatically", task_type.name),
        }),
        Rule::Required { role } => Ok(Verdict {
            decision: Decision::AwaitApproval { role: role.clone() },
            reason: format!("{} tasks need an approver", task_type.name),
        }),
        Rule::Refund => {
            let order = order.ok_or_else(|| WorkflowError::invalid("order_id", "is required"))?;
            refund(order, payload, policy, now_ms)
        }
        Rule::Order => new_order(payload, policy),
        Rule::BeforeShipping => {
            let order = order.ok_or_else(|| WorkflowError::invalid("order_id", "is required"))?;
            if order.is_shipped() || order.status == "cancelled" {
                return Err(WorkflowError::PolicyRefused {
                    code: "order_already_shipped",
                    message: format!(
                        "order {} is {}: a {} is only possible before it ships",
                        order.id,
                        order.status,
                        task_type.label("en")
                    ),
                });
            }
            Ok(Verdict {
                decision: Decision::Approve,
                reason: format!("order {} has not shipped yet", order.id),
            })
        }
        Rule::Return => {
            let order = order.ok_or_else(|| WorkflowError::invalid("order_id", "is required"))?;
            let delivered_at = match (order.status.as_str(), order.delivered_at) {
                ("delivered", Some(at)) => at,
                _ => {
                    return Err(WorkflowError::PolicyRefused {
                        code: "order_not_delivered",
                        message: format!(
                            "order {} is {}: only delivered orders can be returned",
                            order.id, order.status
                        ),
                    });
                }
            };
            let days = (now_ms - delivered_at) / DAY_MS;
            if days > policy.return_window_days {
                return Err(WorkflowError::PolicyRefused {
                    code: "return_window_closed",
                    message: format!(
                        "order {} was delivered {days} days ago; returns are accepted for {} days",
                        order.id, policy.return_window_days
                    ),
                });
            }
            Ok(Verdict {
                decision: Decision::Approve,
                reason: format!(
                    "delivered {days} days ago, within the {}-day return window",
                    policy.return_window_days
                ),
            })
        }
    }
}

/// A new order, already priced from the catalogue (`total_cents`, `currency`).
fn new_order(payload: &Value, policy: &PolicySettings) -> Result<Verdict, WorkflowError> {
    let total = payload
        .get("total_cents")
        .and_then(Value::as_i64)
        .ok_or_else(|| WorkflowError::invalid("payload.lines", "the order is not priced"))?;
    let currency = payload
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if total <= policy.order_auto_approve_max_cents {
        return Ok(Verdict {
            decision: Decision::Approve,
            reason: format!(
                "an order of {}, up to the {} approved without a person",
                money(total, currency),
                money(policy.order_auto_approve_max_cents, currency)
            ),
        });
    }
    let role = (!policy.order_approver_role.is_empty()).then(|| policy.order_approver_role.clone());
    Ok(Verdict {
        decision: Decision::AwaitApproval { role },
        reason: format!(
            "an order of {} is above the {} approved without a person",
            money(total, currency),
            money(policy.order_auto_approve_max_cents, currency)
        ),
    })
}

fn refund(
    order: &Order,
    payload: &Value,
    policy: &PolicySettings,
    now_ms: i64,
) -> Result<Verdict, WorkflowError> {
    let value = payload
        .get("amount_cents")
        .ok_or_else(|| WorkflowError::invalid("payload.amount_cents", "is required"))?;
    let too_much = |amount: String| {
        WorkflowError::invalid(
            "payload.amount_cents",
            format!(
                "{amount} is more than the order total of {}",
                money(order.total_cents, &order.currency)
            ),
        )
    };
    // The schema has made it a whole number of at least 1: one that is no i64 is too large
    // for any order.
    let amount = value
        .as_i64()
        .ok_or_else(|| too_much(format!("{value} cents")))?;
    if amount > order.total_cents {
        return Err(too_much(money(amount, &order.currency)));
    }
    if matches!(order.status.as_str(), "placed" | "cancelled") {
        return Err(WorkflowError::PolicyRefused {
            code: "order_not_paid",
            message: format!(
                "order {} is {}: there is no payment to refund",
                order.id, order.status
            ),
        });
    }
    let role =
        (!policy.refund_approver_role.is_empty()).then(|| policy.refund_approver_role.clone());
    let wait = |reason: String| Verdict {
        decision: Decision::AwaitApproval { role: role.clone() },
        reason,
    };
    let limit = money(policy.refund_auto_approve_max_cents, &order.currency);
    let delivered_at = match (order.status.as_str(), order.delivered_at) {
        ("delivered", Some(at)) => at,
        _ => {
            return Ok(wait(format!(
                "order {} is {}, not delivered: a person decides",
                order.id, order.status
            )));
        }
    };
    let days = (now_ms - delivered_at).max(0) / DAY_MS;
    if days > policy.refund_auto_approve_within_days {
        return Ok(wait(format!(
            "delivered {days} days ago, more than {} days: a person decides",
            policy.refund_auto_approve_within_days
        )));
    }
    if amount > policy.refund_auto_approve_max_cents {
        return Ok(wait(format!(
            "{} is above the automatic limit of {limit}",
            money(amount, &order.currency)
        )));
    }
    Ok(Verdict {
        decision: Decision::Approve,
        reason: format!(
            "{} on an order delivered {days} days ago is within the automatic limit of {limit}",
            money(amount, &order.currency)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::settings::WorkflowSettings;
    use crate::workflow::types::TaskTypes;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn order(status: &str, delivered_days_ago: Option<i64>) -> Order {
        Order {
            id: "1001".into(),
            customer_email: "ana@example.com".into(),
            status: status.into(),
            total_cents: 20_000,
            currency: "EUR".into(),
            placed_at: NOW - 40 * DAY_MS,
            delivered_at: delivered_days_ago.map(|days| NOW - days * DAY_MS),
            items: Vec::new(),
            shipping_address: None,
        }
    }

    fn decide_refund(order: &Order, amount: i64) -> Result<Verdict, WorkflowError> {
        let types = TaskTypes::from_settings(&WorkflowSettings::default()).unwrap();
        decide(
            types.get("refund").unwrap(),
            Some(order),
            &json!({"amount_cents": amount}),
            &PolicySettings::default(),
            NOW,
        )
    }

    #[test]
    fn refunds_under_the_limit_on_recent_deliveries_are_automatic() {
        let delivered = order("delivered", Some(3));
        assert_eq!(
            decide_refund(&delivered, 5000).unwrap().decision,
            Decision::Approve
        );
        let finance = Decision::AwaitApproval {
            role: Some("finance".into()),
        };
        assert_eq!(decide_refund(&delivered, 5001).unwrap().decision, finance);
        assert_eq!(
            decide_refund(&order("delivered", Some(31)), 100)
                .unwrap()
                .decision,
            finance
        );
        assert_eq!(
            decide_refund(&order("shipped", None), 100)
                .unwrap()
                .decision,
            finance
        );
        assert!(matches!(
            decide_refund(&delivered, 20_001),
            Err(WorkflowError::Invalid { field, .. }) if field == "payload.amount_cents"
        ));
        assert!(matches!(
            decide_refund(&order("placed", None), 100),
            Err(WorkflowError::PolicyRefused { .. })
        ));
        // A whole number too large for any amount is said to be too much, not missing.
        let types = TaskTypes::from_settings(&WorkflowSettings::default()).unwrap();
        let huge = decide(
            types.get("refund").unwrap(),
            Some(&delivered),
            &serde_json::from_str(r#"{"amount_cents": 1e30}"#).unwrap(),
            &PolicySettings::default(),
            NOW,
        );
        assert!(
            matches!(
                &huge,
                Err(WorkflowError::Invalid { field, message })
                    if field == "payload.amount_cents" && message.contains("more than the order total")
            ),
            "{huge:?}"
        );
    }

    #[test]
    fn changes_before_shipping_and_returns_after_delivery() {
        let types = TaskTypes::from_settings(&WorkflowSettings::default()).unwrap();
        let policy = PolicySettings::default();
        let cancellation = types.get("cancellation").unwrap();
        assert!(
            decide(
                cancellation,
                Some(&order("paid", None)),
                &json!({}),
                &policy,
                NOW
            )
            .is_ok()
        );
        assert!(matches!(
            decide(
                cancellation,
                Some(&order("shipped", None)),
                &json!({}),
                &policy,
                NOW
            ),
            Err(WorkflowError::PolicyRefused {
                code: "order_already_shipped",
                ..
            })
        ));
        let returns = types.get("return").unwrap();
        assert!(
            decide(
                returns,
                Some(&order("delivered", Some(5))),
                &json!({}),
                &policy,
                NOW
            )
            .is_ok()
        );
        assert!(matches!(
            decide(
                returns,
                Some(&order("delivered", Some(45))),
                &json!({}),
                &policy,
                NOW
            ),
            Err(WorkflowError::PolicyRefused {
                code: "return_window_closed",
                ..
            })
        ));
    }

    #[test]
    fn small_orders_are_automatic_and_large_ones_wait_for_sales() {
        let types = TaskTypes::from_settings(&WorkflowSettings::default()).unwrap();
        let orders = types.get("order").unwrap();
        let policy = PolicySettings::default();
        let priced = |total: i64| json!({"total_cents": total, "currency": "EUR"});
        let small = decide(orders, None, &priced(9_800), &policy, NOW).unwrap();
        assert_eq!(small.decision, Decision::Approve);
        let limit = decide(orders, None, &priced(10_000), &policy, NOW).unwrap();
        assert_eq!(limit.decision, Decision::Approve);
        let large = decide(orders, None, &priced(10_001), &policy, NOW).unwrap();
        assert_eq!(
            large.decision,
            Decision::AwaitApproval {
                role: Some("sales".into())
            }
        );
        assert!(large.reason.contains("100.01 EUR"), "{}", large.reason);
        // Never decided unpriced.
        assert!(decide(orders, None, &json!({"lines": []}), &policy, NOW).is_err());
    }

    #[test]
    fn money_is_formatted_in_units() {
        assert_eq!(money(4550, "EUR"), "45.50 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
    }
}
