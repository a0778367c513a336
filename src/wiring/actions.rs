//! The assistant's door to the back office. The router hands every [`Action`] the assistant
//! asks for to [`WorkflowActions`], which carries it out as the conversation's customer and says
//! what came of it, in the customer's language.
//!
//! Nothing the assistant produced is trusted here: the customer is the one the store has for the
//! conversation (with the channel's verification), the order must be one of theirs, and the
//! workflow's policies decide. A refused request is explained to the customer; an accepted one
//! is told by the workflow's own status notices (through the outbox, exactly once).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::assistant::{Action, ActionRunner};
use crate::catalogue::ProductIndex;
use crate::workflow::notify::language_of;
use crate::workflow::{NewTask, Order, VerifiedContext, WorkflowError, WorkflowService};

pub struct WorkflowActions {
    pub(super) service: Arc<WorkflowService>,
    /// The catalogue's search; `None` where there is nothing to search (or no model).
    pub(super) products: Option<Arc<ProductIndex>>,
}

impl std::fmt::Debug for WorkflowActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowActions")
            .field("product_search", &self.products.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkflowActions {
    pub fn new(
        service: Arc<WorkflowService>,
        products: Option<Arc<ProductIndex>>,
    ) -> WorkflowActions {
        WorkflowActions { service, products }
    }

    async fn open_task(
        &self,
        context: VerifiedContext,
        kind: &str,
        order_id: Option<&str>,
        details: &Map<String, Value>,
        key: &str,
    ) -> Result<(), WorkflowError> {
        let mut payload = details.clone();
        match kind {
            // A refund asked for in chat is of the whole order unless an amount was given.
            "refund" if !payload.contains_key("amount_cents") => {
                if let Some(order) = self.own_order(context.clone(), order_id).await? {
                    payload.insert("amount_cents".into(), json!(order.total_cents));
                }
            }
            // An address as the customer wrote it: the back office reads it.
            "address_change" => {
                if let Some(text) = payload.remove("new_address") {
                    payload.insert("address_text".into(), text);
                }
            }
            _ => {}
        }
        let request = NewTask {
            kind: kind.to_string(),
            contact_id: None,
            conversation_id: Some(context.conversation_id.clone()),
            order_id: order_id.map(str::to_string),
            queue: None,
            payload: Value::Object(payload),
        };
        self.service.open_task(context, request, Some(key)).await?;
        Ok(())
    }

    /// The customer's order `order_id`, or an error a customer may read about.
    async fn own_order(
        &self,
        context: VerifiedContext,
        order_id: Option<&str>,
    ) -> Result<Option<Order>, WorkflowError> {
        let Some(order_id) = order_id else {
            return Ok(None);
        };
        let orders = self.service.customer_orders(context).await?;
        orders
            .into_iter()
            .find(|order| order.id == order_id)
            .map(Some)
            .ok_or_else(|| WorkflowError::not_found("order_not_found", format!("order {order_id}")))
    }
}

#[async_trait]
impl ActionRunner for WorkflowActions {
    async fn run(
        &self,
        conversation_id: &str,
        language: Option<&str>,
        action: &Action,
        key: &str,
    ) -> Vec<String> {
        let language = language_of(language, &self.service.settings().default_language);
        let context = match self.service.context_for(conversation_id).await {
            Ok(context) => context,
            Err(error) => {
                tracing::error!(conversation = conversation_id, error = %error, "no context for an assistant action");
                return vec![refusal(&error, language, None)];
            }
        };
        let outcome = match action {
            Action::OpenTask {
                kind,
                order_id,
                details,
            } => self
                .open_task(context, kind, order_id.as_deref(), details, key)
                .await
                .map(|()| Vec::new()),
            Action::OrderStatus { order_id } => {
                self.own_order(context, Some(order_id)).await.map(|order| {
                    order
                        .map(|order| status_text(&order, language))
                        .into_iter()
                        .collect()
                })
            }
        };
        outcome.unwrap_or_else(|error| {
            tracing::info!(conversation = conversation_id, error = %error, "assistant action refused");
            vec![refusal(&error, language, action.order_id())]
        })
    }
}

/// A day as `YYYY-MM-DD`.
pub(super) fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|at| at.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Where an order is, for its customer.
fn status_text(order: &Order, language: &str) -> String {
    let id = &order.id;
    let placed = date(order.placed_at);
    let delivered = order.delivered_at.map(date).unwrap_or_default();
    match (language, order.status.as_str()) {
        ("es", "placed") => format!("El pedido {id} se hizo el {placed} y está pendiente de pago."),
        ("es", "paid") => format!("El pedido {id} está pagado y lo estamos preparando."),
        ("es", "shipped") => format!("El pedido {id} ha salido y está en camino."),
        ("es", "delivered") => format!("El pedido {id} se entregó el {delivered}."),
        ("es", "cancelled") => format!("El pedido {id} está cancelado."),
        ("es", "returned") => format!("El pedido {id} se ha devuelto."),
        ("ca", "placed") => {
            format!("La comanda {id} es va fer el {placed} i està pendent de pagament.")
        }
        ("ca", "paid") => format!("La comanda {id} està pagada i l'estem preparant."),
        ("ca", "shipped") => format!("La comanda {id} ha sortit i és de camí."),
        ("ca", "delivered") => format!("La comanda {id} es va lliurar el {delivered}."),
        ("ca", "cancelled") => format!("La comanda {id} està cancel·lada."),
        ("ca", "returned") => format!("La comanda {id} s'ha retornat."),
        (_, "placed") => format!("Order {id} was placed on {placed} and is awaiting payment."),
        (_, "paid") => format!("Order {id} is paid and being prepared."),
        (_, "shipped") => format!("Order {id} has shipped and is on its way."),
        (_, "delivered") => format!("Order {id} was delivered on {delivered}."),
        (_, "cancelled") => format!("Order {id} is cancelled."),
        (_, "returned") => format!("Order {id} has been returned."),
        (_, other) => format!("Order {id}: {other}."),
    }
}

/// The reason code of a refusal: the workflow's, or `unavailable` for an outage.
pub(super) fn refusal_code(error: &WorkflowError) -> &'static str {
    match error {
        WorkflowError::Forbidden { code, .. }
        | WorkflowError::NotFound { code, .. }
        | WorkflowError::Conflict { code, .. }
        | WorkflowError::PolicyRefused { code, .. } => code,
        WorkflowError::OrdersUnavailable(_)
        | WorkflowError::CatalogueUnavailable(_)
        | WorkflowError::Store(_) => "unavailable",
        _ => "other",
    }
}

/// Why a request could not be done, for the customer (the details stay in the logs).
pub(super) fn refusal(error: &WorkflowError, language: &str, order_id: Option<&str>) -> String {
    let order = order_id.unwrap_or("?");
    let code = refusal_code(error);
    match (language, code) {
        ("es", "order_not_found" | "order_not_owned") => format!(
            "No encuentro el pedido {order} entre tus pedidos. Revisa el número o, si prefieres, pide hablar con una persona."
        ),
        ("es", "identity_not_verified" | "customer_not_signed_in") => "Para gestionar un pedido necesito saber quién eres: inicia sesión en la tienda o pide hablar con una persona.".into(),
        ("es", "refund_already_open") => format!("Ya hay una solicitud de reembolso abierta para el pedido {order}; te avisaremos aquí."),
        ("es", "order_already_shipped") => format!("El pedido {order} ya ha salido, así que ya no se puede cancelar ni cambiar la dirección. Si quieres, te paso con una persona."),
        ("es", "order_not_delivered" | "return_window_closed" | "order_not_paid") => format!("Lo siento, nuestra política no lo permite para el pedido {order}. Si quieres, te paso con una persona."),
        ("es", "product_unknown" | "product_unavailable" | "mixed_currencies") => "Lo siento, ese producto no está a la venta. Si quieres, busco otro o te paso con una persona.".into(),
        ("es", "out_of_stock") => "Lo siento, no nos quedan suficientes unidades de ese producto. Puedes pedir menos o hablar con una persona.".into(),
        ("es", "quantity_above_maximum") => "Lo siento, es más cantidad de la que admite un pedido. Pide menos unidades o habla con una persona para un pedido grande.".into(),
        ("es", "unavailable") => "Lo siento, ahora mismo no puedo consultar los pedidos. Vuelve a intentarlo en unos minutos.".into(),
        ("es", _) => "Lo siento, no he podido hacerlo. Si quieres, te paso con una persona.".into(),
        ("ca", "order_not_found" | "order_not_owned") => format!(
            "No trobo la comanda {order} entre les teves comandes. Revisa el número o, si ho prefereixes, demana parlar amb una persona."
        ),
        ("ca", "identity_not_verified" | "customer_not_signed_in") => "Per gestionar una comanda he de saber qui ets: inicia la sessió a la botiga o demana parlar amb una persona.".into(),
        ("ca", "refund_already_open") => format!("Ja hi ha una sol·licitud de reemborsament oberta per a la comanda {order}; t'avisarem aquí."),
        ("ca", "order_already_shipped") => format!("La comanda {order} ja ha sortit, així que ja no es pot cancel·lar ni canviar l'adreça. Si vols, et passo amb una persona."),
        ("ca", "order_not_delivered" | "return_window_closed" | "order_not_paid") => format!("Ho sento, la nostra política no ho permet per a la comanda {order}. Si vols, et passo amb una persona."),
        ("ca", "product_unknown" | "product_unavailable" | "mixed_currencies") => "Ho sento, aquest producte no està a la venda. Si vols, en busco un altre o et passo amb una persona.".into(),
        ("ca", "out_of_stock") => "Ho sento, no ens queden prou unitats d'aquest producte. Pots demanar-ne menys o parlar amb una persona.".into(),
        ("ca", "quantity_above_maximum") => "Ho sento, és més quantitat de la que admet una comanda. Demana'n menys unitats o parla amb una persona per a una comanda gran.".into(),
        ("ca", "unavailable") => "Ho sento, ara mateix no puc consultar les comandes. Torna-ho a provar d'aquí a uns minuts.".into(),
        ("ca", _) => "Ho sento, no ho he pogut fer. Si vols, et passo amb una persona.".into(),
        (_, "order_not_found" | "order_not_owned") => format!(
            "I can't find order {order} among your orders. Please check the number, or ask to talk to a person."
        ),
        (_, "identity_not_verified" | "customer_not_signed_in") => "To act on an order I need to know who you are: please sign in to the shop, or ask to talk to a person.".into(),
        (_, "refund_already_open") => format!("There is already an open refund request for order {order}; you'll hear about it here."),
        (_, "order_already_shipped") => format!("Order {order} has already shipped, so it can no longer be cancelled or sent elsewhere. I can pass you to a person if you like."),
        (_, "order_not_delivered" | "return_window_closed" | "order_not_paid") => format!("Sorry, our policy doesn't allow that for order {order}. I can pass you to a person if you like."),
        (_, "product_unknown" | "product_unavailable" | "mixed_currencies") => "Sorry, that product isn't for sale. I can look for another one, or pass you to a person.".into(),
        (_, "out_of_stock") => "Sorry, we don't have enough of that product in stock. You can order fewer, or talk to a person.".into(),
        (_, "quantity_above_maximum") => "Sorry, that's more than one order can hold. Please order fewer, or talk to a person about a large order.".into(),
        (_, "unavailable") => "Sorry, I can't reach our order system right now. Please try again in a few minutes.".into(),
        _ => "Sorry, I couldn't do that. I can pass you to a person if you like.".into(),
    }
}
