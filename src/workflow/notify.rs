//! What the customer is told when one of their tasks changes status, in their language
//! (`en`, `es`, `ca`; anything else falls back to the configured default).

use serde_json::Value;

use super::model::TaskStatus;
use super::types::{Rule, TaskType};

pub const LANGUAGES: [&str; 3] = ["en", "es", "ca"];

/// The supported language a conversation's language tag (`es`, `es-ES`, `ca_ES`) maps to.
pub fn language_of(tag: Option<&str>, default: &str) -> &'static str {
    let primary = tag
        .unwrap_or(default)
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    LANGUAGES
        .into_iter()
        .find(|language| *language == primary)
        .or_else(|| LANGUAGES.into_iter().find(|language| *language == default))
        .unwrap_or("en")
}

/// An amount as a customer reads it in `language`: `45.00 EUR`, `45,00 EUR`.
pub fn amount(cents: i64, currency: &str, language: &str) -> String {
    let separator = if language == "en" { '.' } else { ',' };
    format!(
        "{}{separator}{:02} {currency}",
        cents / 100,
        (cents % 100).abs()
    )
}

/// "your refund request (20.00 EUR) for order 1001", in `language`.
fn subject(
    task_type: &TaskType,
    language: &str,
    order_id: Option<&str>,
    payload: &Value,
    currency: Option<&str>,
) -> String {
    let label = task_type.label(language);
    let mut text = match language {
        "es" => format!("tu solicitud de {label}"),
        "ca" => format!("la teva sol·licitud de {label}"),
        _ => format!("your {label} request"),
    };
    // A refund's amount in its order's currency, or an order's total as the workflow priced it
    // (never figures of another type's payload, which the customer may have written).
    let (cents, currency) = if task_type.rule == Rule::Order {
        (
            payload.get("total_cents").and_then(Value::as_i64),
            payload.get("currency").and_then(Value::as_str),
        )
    } else {
        (
            payload.get("amount_cents").and_then(Value::as_i64),
            currency,
        )
    };
    if let (Some(cents), Some(currency)) = (cents, currency) {
        text.push_str(&format!(" ({})", amount(cents, currency, language)));
    }
    if let Some(order_id) = order_id {
        text.push_str(&match language {
            "es" => format!(" del pedido {order_id}"),
            "ca" => format!(" de la comanda {order_id}"),
            _ => format!(" for order {order_id}"),
        });
    }
    text
}

fn template(status: TaskStatus, language: &str) -> &'static str {
    use TaskStatus::*;
    match (language, status) {
        ("es", Open) => "Hemos recibido {subject}.",
        ("es", AwaitingApproval) => {
            "Hemos recibido {subject}. Nuestro equipo tiene que revisarla; te avisaremos aquí en cuanto haya una decisión."
        }
        ("es", Approved) => "Buenas noticias: {subject} ha sido aprobada.",
        ("es", Rejected) => "Lo sentimos: {subject} no ha sido aprobada.",
        ("es", InProgress) => "Novedades: {subject} está en curso.",
        ("es", Done) => "Hecho: {subject} se ha completado.",
        ("es", Failed) => {
            "Lo sentimos: {subject} no se ha podido completar. Alguien de nuestro equipo se pondrá en contacto contigo."
        }
        ("es", Cancelled) => "Novedades: {subject} ha sido cancelada.",
        ("ca", Open) => "Hem rebut {subject}.",
        ("ca", AwaitingApproval) => {
            "Hem rebut {subject}. El nostre equip l'ha de revisar; t'avisarem aquí tan bon punt hi hagi una decisió."
        }
        ("ca", Approved) => "Bones notícies: {subject} ha estat aprovada.",
        ("ca", Rejected) => "Ho sentim: {subject} no ha estat aprovada.",
        ("ca", InProgress) => "Novetats: {subject} està en curs.",
        ("ca", Done) => "Fet: {subject} s'ha completat.",
        ("ca", Failed) => {
            "Ho sentim: {subject} no s'ha pogut completar. Algú del nostre equip es posarà en contacte amb tu."
        }
        ("ca", Cancelled) => "Novetats: {subject} ha estat cancel·lada.",
        (_, Open) => "We have received {subject}.",
        (_, AwaitingApproval) => {
            "We have received {subject}. Our team needs to review it; we will tell you here as soon as it is decided."
        }
        (_, Approved) => "Good news: {subject} has been approved.",
        (_, Rejected) => "Sorry: {subject} has not been approved.",
        (_, InProgress) => "Update: {subject} is being processed.",
        (_, Done) => "Done: {subject} has been completed.",
        (_, Failed) => {
            "Sorry: {subject} could not be completed. Someone from our team will contact you."
        }
        (_, Cancelled) => "Update: {subject} has been cancelled.",
    }
}

/// What a task's customer reads when it reaches `status`. `note` is an optional message the
/// back office addressed to the customer (internal reasons stay in the audit trail).
pub struct Notice<'a> {
    pub task_type: &'a TaskType,
    pub status: TaskStatus,
    pub language: &'a str,
    pub order_id: Option<&'a str>,
    pub currency: Option<&'a str>,
    pub payload: &'a Value,
    pub note: Option<&'a str>,
}

impl Notice<'_> {
    pub fn text(&self) -> String {
        let subject = subject(
            self.task_type,
            self.language,
            self.order_id,
            self.payload,
            self.currency,
        );
        let mut text = template(self.status, self.language).replace("{subject}", &subject);
        if let Some(note) = self.note.map(str::trim).filter(|note| !note.is_empty()) {
            text.push(' ');
            text.push_str(note);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::settings::WorkflowSettings;
    use crate::workflow::types::TaskTypes;
    use serde_json::json;

    #[test]
    fn notices_speak_the_conversation_language() {
        let types = TaskTypes::from_settings(&WorkflowSettings::default()).unwrap();
        let refund = types.get("refund").unwrap();
        let payload = json!({"amount_cents": 2050});
        let notice = |status, language| {
            Notice {
                task_type: refund,
                status,
                language,
                order_id: Some("1001"),
                currency: Some("EUR"),
                payload: &payload,
                note: None,
            }
            .text()
        };
        assert_eq!(
            notice(TaskStatus::Approved, "en"),
            "Good news: your refund request (20.50 EUR) for order 1001 has been approved."
        );
        assert_eq!(
            notice(TaskStatus::Approved, "es"),
            "Buenas noticias: tu solicitud de reembolso (20,50 EUR) del pedido 1001 ha sido aprobada."
        );
        assert!(
            notice(TaskStatus::Done, "ca").starts_with("Fet: la teva sol·licitud de reemborsament")
        );
        for language in LANGUAGES {
            for status in TaskStatus::ALL {
                assert!(!notice(status, language).contains('{'));
            }
        }
    }

    #[test]
    fn language_tags_map_to_supported_languages() {
        assert_eq!(language_of(Some("es-ES"), "en"), "es");
        assert_eq!(language_of(Some("ca_ES"), "en"), "ca");
        assert_eq!(language_of(Some("fr"), "es"), "es");
        assert_eq!(language_of(None, "ca"), "ca");
        assert_eq!(language_of(None, "xx"), "en");
    }
}
