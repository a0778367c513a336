//! Orders and the contacts they belong to: an order is a customer's when one of the emails a
//! trusted party linked to their contact placed it.

use super::{
    Actor, Order, Scope, VerifiedContext, WorkflowError, WorkflowService, orders, store_error,
};

impl WorkflowService {
    /// One order. Customers see only their own.
    pub async fn order(&self, actor: &Actor, order_id: &str) -> Result<Order, WorkflowError> {
        let contact = self.reader_contact(actor).await?;
        let order = self.fetch_order(order_id).await?;
        let not_found = || WorkflowError::not_found("order_not_found", format!("order {order_id}"));
        let order = order.ok_or_else(not_found)?;
        if let Some(contact) = contact {
            let emails = self.store.contact_emails(&contact).await?;
            if !emails.contains(&order.customer_email) {
                return Err(not_found());
            }
        }
        Ok(order)
    }

    /// A contact the actor may read: it exists and, for a customer, is their own. Any other
    /// is "not found", so a customer cannot tell another contact's id from a made-up one.
    pub(super) async fn require_contact(
        &self,
        actor: &Actor,
        contact_id: &str,
    ) -> Result<(), WorkflowError> {
        let own = self.reader_contact(actor).await?;
        let visible = own.as_ref().is_none_or(|own| own == contact_id)
            && self.store.contact_exists(contact_id).await?;
        if visible {
            Ok(())
        } else {
            Err(WorkflowError::not_found(
                "contact_not_found",
                format!("contact {contact_id}"),
            ))
        }
    }

    /// The orders of a contact (through the emails linked to it). Customers: their own.
    pub async fn orders_of_contact(
        &self,
        actor: &Actor,
        contact_id: &str,
    ) -> Result<Vec<Order>, WorkflowError> {
        self.require_contact(actor, contact_id).await?;
        let mut orders = Vec::new();
        for email in self.store.contact_emails(contact_id).await? {
            let found = self
                .orders
                .orders_of(&email)
                .await
                .map_err(|error| match error {
                    orders::OrderError::Store(error) => WorkflowError::Store(error),
                    other => WorkflowError::OrdersUnavailable(other.to_string()),
                })?;
            orders.extend(found);
        }
        orders.sort_by_key(|order| std::cmp::Reverse(order.placed_at));
        Ok(orders)
    }

    /// A customer's own orders (the assistant's "where is my order?").
    pub async fn customer_orders(
        &self,
        context: VerifiedContext,
    ) -> Result<Vec<Order>, WorkflowError> {
        let contact_id = context.contact_id.clone();
        self.orders_of_contact(&Actor::customer(context), &contact_id)
            .await
    }

    /// Vouch that the contact behind a channel identity is the shop customer with `email`:
    /// from then on they may act on that customer's orders. Admin only.
    pub async fn link_email(
        &self,
        actor: &Actor,
        channel: &str,
        platform_user_id: &str,
        email: &str,
    ) -> Result<String, WorkflowError> {
        actor.require(Scope::Admin)?;
        let email = orders::normalise_email(email);
        if !switchboard_connector::is_plausible_email(&email) {
            return Err(WorkflowError::invalid("email", "is not an email address"));
        }
        let contact_id = self
            .store
            .contact_by_identity(channel, platform_user_id)
            .await?
            .ok_or_else(|| {
                WorkflowError::not_found(
                    "contact_not_found",
                    format!(
                        "contact for user {platform_user_id} on the channel instance {channel:?} \
                         (the name of a [[channel]], such as web; the person must have written \
                         there once)"
                    ),
                )
            })?;
        self.store
            .link_contact_email(&contact_id, &email, &actor.label())
            .await
            .map_err(store_error)?;
        tracing::info!(contact = %contact_id, actor = %actor.label(), "email linked to contact");
        Ok(contact_id)
    }
}
