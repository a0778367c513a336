//! Task types: the built-in ones and those declared in config, each with the JSON schema its
//! payload must satisfy, its queue, whether it needs an order, and which policy rule decides it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::WorkflowError;
use super::settings::WorkflowSettings;

/// How a new task of a type is decided (see `policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Auto-approved up to an amount on a recently delivered order; otherwise an approver role.
    Refund,
    /// Only before the order ships.
    BeforeShipping,
    /// Only on a delivered order, within the return window.
    Return,
    /// Priced from the catalogue; auto-approved up to a total, otherwise an approver role.
    Order,
    /// Approved at once.
    Auto,
    /// Waits for an approver, holding `role` if set.
    Required { role: Option<String> },
}

pub struct TaskType {
    pub name: String,
    /// Per language (`en`, `es`, `ca`); custom types use one label for all.
    labels: BTreeMap<&'static str, String>,
    pub queue: String,
    pub requires_order: bool,
    pub rule: Rule,
    pub schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for TaskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskType")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl TaskType {
    /// How a customer reads this type in `language`.
    pub fn label(&self, language: &str) -> &str {
        self.labels
            .get(language)
            .or_else(|| self.labels.get("en"))
            .map(String::as_str)
            .unwrap_or(&self.name)
    }

    /// Check `payload` against the type's schema; the error names the first failing field as
    /// `payload.a.b`.
    pub fn validate(&self, payload: &Value) -> Result<(), WorkflowError> {
        let Some(error) = self.validator.iter_errors(payload).next() else {
            return Ok(());
        };
        let mut field = String::from("payload");
        for segment in error.instance_path().as_str().split('/').skip(1) {
            field.push('.');
            field.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
        match error.kind() {
            jsonschema::error::ValidationErrorKind::Required { property } => {
                field.push('.');
                field.push_str(property.as_str().unwrap_or_default());
            }
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                if let Some(first) = unexpected.first() {
                    field.push('.');
                    field.push_str(first);
                }
            }
            _ => {}
        }
        Err(WorkflowError::invalid(field, error.to_string()))
    }
}

/// Every task type this instance knows.
#[derive(Debug)]
pub struct TaskTypes {
    types: BTreeMap<String, TaskType>,
}

#[derive(Debug, thiserror::Error)]
pub enum TypeConfigError {
    #[error("custom task type {name:?}: {message}")]
    Invalid { name: String, message: String },
}

fn labels(en: &str, es: &str, ca: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([("en", en.into()), ("es", es.into()), ("ca", ca.into())])
}

/// A built-in type: name, labels, whether it needs an order, its rule, its payload schema.
type Builtin = (
    &'static str,
    BTreeMap<&'static str, String>,
    bool,
    Rule,
    Value,
);

fn builtin_schemas() -> Vec<Builtin> {
    vec![
        (
            "refund",
            labels("refund", "reembolso", "reemborsament"),
            true,
            Rule::Refund,
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["amount_cents"],
                "properties": {
                    "amount_cents": {"type": "integer", "minimum": 1,
                        "description": "amount to refund, in cents of the order's currency"},
                    "reason": {"type": "string", "maxLength": 1000}
                }
            }),
        ),
        (
            "order",
            labels("order", "pedido", "comanda"),
            false,
            Rule::Order,
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["lines", "shipping_address"],
                "properties": {
                    "lines": {
                        "type": "array", "minItems": 1, "maxItems": 20,
                        "description": "what to order; prices come from the catalogue",
                        "items": {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["sku", "quantity"],
                            "properties": {
                                "sku": {"type": "string", "minLength": 1, "maxLength": 64},
                                "quantity": {"type": "integer", "minimum": 1, "maximum": 10000}
                            }
                        }
                    },
                    "shipping_address": {"type": "string", "minLength": 10, "maxLength": 500,
                        "description": "where to send it, as one line"},
                    "note": {"type": "string", "maxLength": 1000}
                }
            }),
        ),
        (
            "cancellation",
            labels("cancellation", "cancelación", "cancel·lació"),
            true,
            Rule::BeforeShipping,
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {"reason": {"type": "string", "maxLength": 1000}}
            }),
        ),
        (
            "address_change",
            labels("address change", "cambio de dirección", "canvi d'adreça"),
            true,
            Rule::BeforeShipping,
            json!({
                "type": "object",
                "additionalProperties": false,
                "anyOf": [{"required": ["address"]}, {"required": ["address_text"]}],
                "properties": {
                    "address_text": {"type": "string", "minLength": 10, "maxLength": 500,
                        "description": "the new address as the customer wrote it (in chat)"},
                    "address": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["line1", "city", "postal_code", "country"],
                        "properties": {
                            "line1": {"type": "string", "minLength": 1, "maxLength": 200},
                            "line2": {"type": "string", "maxLength": 200},
                            "city": {"type": "string", "minLength": 1, "maxLength": 100},
                            "postal_code": {"type": "string", "minLength": 1, "maxLength": 20},
                            "country": {"type": "string", "pattern": "^[A-Z]{2}$"}
                        }
                    }
                }
            }),
        ),
        (
            "return",
            labels("return", "devolución", "devolució"),
            true,
            Rule::Return,
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "skus": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
                    "reason": {"type": "string", "maxLength": 1000}
                }
            }),
        ),
        (
            "callback",
            labels("callback", "llamada", "trucada"),
            false,
            Rule::Auto,
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["phone"],
                "properties": {
                    "phone": {"type": "string", "pattern": "^\\+?[0-9 ()-]{6,24}$"},
                    "preferred_time": {"type": "string", "maxLength": 100},
                    "topic": {"type": "string", "maxLength": 1000}
                }
            }),
        ),
    ]
}

pub const BUILTIN_TYPES: [&str; 6] = [
    "refund",
    "order",
    "cancellation",
    "address_change",
    "return",
    "callback",
];

impl TaskTypes {
    pub fn from_settings(settings: &WorkflowSettings) -> Result<TaskTypes, TypeConfigError> {
        let mut types = BTreeMap::new();
        for (name, labels, requires_order, rule, schema) in builtin_schemas() {
            let validator = jsonschema::validator_for(&schema).expect("built-in schemas are valid");
            let queue = settings
                .queues
                .get(name)
                .cloned()
                .unwrap_or_else(|| "support".into());
            types.insert(
                name.to_string(),
                TaskType {
                    name: name.to_string(),
                    labels,
                    queue,
                    requires_order,
                    rule,
                    schema,
                    validator,
                },
            );
        }
        for custom in &settings.custom_types {
            let invalid = |message: String| TypeConfigError::Invalid {
                name: custom.name.clone(),
                message,
            };
            let well_formed = !custom.name.is_empty()
                && custom
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !well_formed {
                return Err(invalid("names are lower case letters, digits and _".into()));
            }
            if types.contains_key(&custom.name) {
                return Err(invalid("the name is taken by another type".into()));
            }
            let schema: Value = serde_json::from_str(&custom.schema)
                .map_err(|error| invalid(format!("schema is not JSON: {error}")))?;
            let validator = jsonschema::validator_for(&schema)
                .map_err(|error| invalid(format!("schema is not a valid JSON schema: {error}")))?;
            let rule = match custom.approval.as_str() {
                "auto" => Rule::Auto,
                "required" => Rule::Required {
                    role: (!custom.approver_role.is_empty()).then(|| custom.approver_role.clone()),
                },
                other => {
                    return Err(invalid(format!(
                        "approval must be \"auto\" or \"required\", not {other:?}"
                    )));
                }
            };
            let label = if custom.label.is_empty() {
                custom.name.replace('_', " ")
            } else {
                custom.label.clone()
            };
            types.insert(
                custom.name.clone(),
                TaskType {
                    name: custom.name.clone(),
                    labels: BTreeMap::from([("en", label)]),
                    queue: custom.queue.clone(),
                    requires_order: custom.requires_order,
                    rule,
                    schema,
                    validator,
                },
            );
        }
        Ok(TaskTypes { types })
    }

    pub fn get(&self, name: &str) -> Option<&TaskType> {
        self.types.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::settings::CustomType;

    fn types() -> TaskTypes {
        let mut settings = WorkflowSettings::default();
        settings.custom_types.push(CustomType {
            name: "warranty_claim".into(),
            label: String::new(),
            queue: "support".into(),
            requires_order: true,
            approval: "required".into(),
            approver_role: "support_lead".into(),
            schema: r#"{"type":"object","required":["serial"],
                "properties":{"serial":{"type":"string","minLength":4}}}"#
                .into(),
        });
        TaskTypes::from_settings(&settings).unwrap()
    }

    fn field_of(result: Result<(), WorkflowError>) -> String {
        match result {
            Err(WorkflowError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn payload_errors_name_the_field() {
        let types = types();
        let refund = types.get("refund").unwrap();
        assert!(refund.validate(&json!({"amount_cents": 100})).is_ok());
        assert_eq!(
            field_of(refund.validate(&json!({"amount_cents": "ten"}))),
            "payload.amount_cents"
        );
        assert_eq!(
            field_of(refund.validate(&json!({}))),
            "payload.amount_cents"
        );
        assert_eq!(
            field_of(refund.validate(&json!({"amount_cents": 1, "extra": true}))),
            "payload.extra"
        );
        let address = types.get("address_change").unwrap();
        assert_eq!(
            field_of(
                address.validate(&json!({"address": {"line1": "x", "city": "y",
                "postal_code": "1", "country": "spain"}}))
            ),
            "payload.address.country"
        );
    }

    #[test]
    fn custom_types_come_from_config() {
        let types = types();
        let warranty = types.get("warranty_claim").unwrap();
        assert_eq!(
            warranty.rule,
            Rule::Required {
                role: Some("support_lead".into())
            }
        );
        assert_eq!(warranty.label("es"), "warranty claim");
        assert_eq!(
            field_of(warranty.validate(&json!({"serial": "1"}))),
            "payload.serial"
        );
        assert!(warranty.validate(&json!({"serial": "SN-1234"})).is_ok());
        let mut clash = WorkflowSettings::default();
        clash.custom_types.push(CustomType {
            name: "refund".into(),
            label: String::new(),
            queue: "x".into(),
            requires_order: false,
            approval: "auto".into(),
            approver_role: String::new(),
            schema: "{}".into(),
        });
        assert!(TaskTypes::from_settings(&clash).is_err());
    }
}
