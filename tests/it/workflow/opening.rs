//! What a customer's first message already says is taken, not asked for again, by the builtin
//! assistant: a reason after the request, an address in it, in English and Spanish; and a
//! request the shop would refuse (an order already shipped, a refund already open) is told at
//! once, before the customer is asked for details; an order number still to come is offered
//! from the customer's own orders.

use serde_json::Value;
use switchboard::workflow::Scope;
use switchboard_connector::AuthorKind;

use super::support::{Shop, bot_frame, shop_with, system_frame};
use crate::helpers::{Backend, Visitor, options_with, signed_in_hello};

async fn tasks(shop: &Shop) -> Vec<Value> {
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (_, body) = shop.get(&reader, "/api/v1/tasks").await;
    body["data"].as_array().cloned().unwrap_or_default()
}

fn task_of<'a>(tasks: &'a [Value], kind: &str, order: &str) -> &'a Value {
    tasks
        .iter()
        .find(|task| task["type"] == kind && task["order_id"] == order)
        .unwrap_or_else(|| panic!("no {kind} task for order {order} in {tasks:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_opening_message_is_read_for_details_and_refusals_come_first() {
    let shop = shop_with(
        Backend::Sqlite,
        |settings| crate::helpers::set_webchat(settings, "identity_secret", "shop-secret"),
        options_with(Some(crate::assistant::shared_assistant().await), vec![]),
    )
    .await;
    let hello = signed_in_hello(&shop.app.ws_url(), b"shop-secret", "ana@example.com");
    let mut visitor = Visitor::hello(&shop.app.ws_url(), hello).await;

    // The order and the reason in one sentence: the refund is opened at once.
    visitor
        .send_and_ack(
            "c-1",
            "I'd like my money back for order 1043, the lamp arrived damaged",
        )
        .await;
    system_frame(&mut visitor, "needs to review it").await;
    let refund = task_of(&tasks(&shop).await, "refund", "1043").clone();
    assert_eq!(refund["payload"]["reason"], "the lamp arrived damaged");

    // Asked again while that refund is open: told so, not asked for a reason first.
    visitor
        .send_and_ack("c-2", "can I get a refund for order 1043?")
        .await;
    bot_frame(
        &mut visitor,
        "There is already an open refund request for order 1043",
    )
    .await;

    // A new address for an order already delivered: refused before the address is asked for.
    visitor
        .send_and_ack("c-3", "I need to change the delivery address of order 1042")
        .await;
    bot_frame(&mut visitor, "Order 1042 has already shipped").await;

    // A greeting is not a reason: it is asked for.
    visitor
        .send_and_ack("c-4", "Hi, I want a refund for order 1046")
        .await;
    bot_frame(&mut visitor, "What is the reason?").await;
    visitor.send_and_ack("c-5", "the strap broke").await;
    system_frame(&mut visitor, "order 1046").await;
    assert_eq!(
        task_of(&tasks(&shop).await, "refund", "1046")["payload"]["reason"],
        "the strap broke"
    );

    // The new address in the request itself.
    visitor
        .send_and_ack(
            "c-6",
            "Please change the delivery address of order 1044 to Carrer de Mallorca 401, 08013 Barcelona",
        )
        .await;
    system_frame(&mut visitor, "order 1044").await;
    assert_eq!(
        task_of(&tasks(&shop).await, "address_change", "1044")["payload"]["address_text"],
        "Carrer de Mallorca 401, 08013 Barcelona"
    );

    // In Spanish, the reason after "porque".
    visitor
        .send_and_ack(
            "c-7",
            "Quiero un reembolso del pedido 1045 porque la lámpara llegó rota",
        )
        .await;
    system_frame(&mut visitor, "1045").await;
    assert_eq!(
        task_of(&tasks(&shop).await, "refund", "1045")["payload"]["reason"],
        "la lámpara llegó rota"
    );

    // No order number: the customer's own orders are offered to pick from.
    visitor
        .send_and_ack("c-8", "I want to cancel an order")
        .await;
    let asked = bot_frame(&mut visitor, "order number").await;
    let offered: Vec<&str> = asked["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|choice| choice["label"].as_str().unwrap())
        .collect();
    assert!(
        offered.iter().any(|label| label.starts_with("1044 (")),
        "{offered:?}"
    );
    assert!(
        !offered.iter().any(|label| label.starts_with("2001")),
        "{offered:?}"
    );
    let pick = offered
        .iter()
        .find(|label| label.starts_with("1044 ("))
        .unwrap()
        .to_string();
    visitor.send_and_ack("c-9", &pick).await;
    system_frame(&mut visitor, "1044").await;
    assert!(
        tasks(&shop)
            .await
            .iter()
            .any(|task| task["type"] == "cancellation" && task["order_id"] == "1044")
    );

    // Asked for nothing else along the way.
    let conversation_id = shop.app.conversation_of(&visitor).await;
    let bot: Vec<String> = shop
        .app
        .store()
        .conversation_messages(&conversation_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|message| message.author == AuthorKind::Bot)
        .map(|message| message.text)
        .collect();
    assert_eq!(bot.len(), 4, "{bot:#?}");
}
