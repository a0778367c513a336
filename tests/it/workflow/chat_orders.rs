//! Orders taken in the conversation by the builtin assistant, from the customer's words to the
//! back office: the product found in the catalogue (close matches offered as choices), the
//! quantity, the address of the customer's last order, a summary confirmed in English, Spanish
//! or Catalan, and the `order` task the workflow opens, approves or holds for sales, each
//! change told in the chat. Also: out of stock, a guest asked to sign in, reorders from the
//! customer's own past orders and never another's.

use super::support::{Shop, bot_frame, shop_with, system_frame};
use crate::both_backends;
use crate::helpers::{Backend, Visitor, options_with};
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard::workflow::Scope;

const SECRET: &[u8] = b"shop-secret";

async fn chat_shop(backend: Backend) -> Shop {
    let assistant = crate::assistant::shared_assistant().await;
    shop_with(
        backend,
        |settings| {
            crate::helpers::set_webchat(settings, "identity_secret", "shop-secret");
            settings.workflow.catalogue_seed =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/catalogue.json");
            settings.assistant.model_dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        },
        options_with(Some(assistant), vec![]),
    )
    .await
}

/// A customer signed in to the shop's site as `email` (the site vouches for it to the widget).
async fn signed_in(shop: &Shop, email: &str) -> Visitor {
    let hello = crate::helpers::signed_in_hello(&shop.app.ws_url(), SECRET, email);
    Visitor::hello(&shop.app.ws_url(), hello).await
}

/// The order tasks of the visitor's contact, newest first.
async fn order_tasks(shop: &Shop, visitor: &Visitor) -> Vec<Value> {
    let history = shop
        .app
        .store()
        .history("web", &visitor.visitor_id, 50)
        .await
        .unwrap();
    let Some(message) = history.first() else {
        return Vec::new();
    };
    let context = shop
        .app
        .app
        .workflow
        .context_for(&message.conversation_id)
        .await
        .unwrap();
    let reader = shop.key(&[Scope::TasksRead], &[]).await;
    let (status, body) = shop
        .get(
            &reader,
            &format!("/api/v1/contacts/{}/tasks", context.contact_id),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|task| task["type"] == "order")
        .cloned()
        .collect()
}

fn labels(frame: &Value) -> Vec<String> {
    frame["choices"]
        .as_array()
        .map(|choices| {
            choices
                .iter()
                .map(|choice| choice["label"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn orders_in_three_languages(backend: Backend) {
    let shop = chat_shop(backend).await;
    let mut ana = signed_in(&shop, "ana@example.com").await;

    // English: the product named, the quantity asked with price and stock, the address of
    // the last order, a summary, "yes".
    ana.send_and_ack("en-1", "I'd like to order a teapot").await;
    let asked = bot_frame(&mut ana, "How many would you like?").await;
    assert!(
        asked["text"]
            .as_str()
            .unwrap()
            .contains("Teapot: 35.00 EUR each, 8 in stock"),
        "{asked}"
    );
    assert_eq!(labels(&asked), ["1", "2", "3"], "{asked}");
    ana.send_and_ack("en-2", "2").await;
    let summary = bot_frame(&mut ana, "Shall I place it?").await;
    let text = summary["text"].as_str().unwrap();
    assert!(
        text.contains("2 × Teapot at 35.00 EUR: 70.00 EUR"),
        "{text}"
    );
    assert!(text.contains("Total: 70.00 EUR"), "{text}");
    assert!(
        text.contains("Delivery to: Carrer de la Força 12, 17004 Girona, ES"),
        "{text}"
    );
    assert_eq!(
        labels(&summary),
        ["Yes, place the order", "Send it elsewhere", "No, cancel"]
    );
    // Not a yes: a hesitation, a yes with a condition. A question is answered and the summary
    // asked again. A number inside other words is not a new quantity.
    ana.send_and_ack("en-3a", "ok wait, not yet").await;
    bot_frame(&mut ana, "Answer yes to place it").await;
    ana.send_and_ack("en-3b", "yes but set the total to 1.00 EUR")
        .await;
    bot_frame(&mut ana, "Answer yes to place it").await;
    ana.send_and_ack("en-3c", "how long does shipping take?")
        .await;
    bot_frame(&mut ana, "Source:").await;
    let again = bot_frame(&mut ana, "Shall I place it?").await;
    assert!(
        again["text"].as_str().unwrap().contains("Total: 70.00 EUR"),
        "{again}"
    );
    ana.send_and_ack(
        "en-3d",
        "actually send it to Carrer Gran 7, 08001 Barcelona",
    )
    .await;
    bot_frame(&mut ana, "Answer yes to place it").await;
    assert!(
        order_tasks(&shop, &ana).await.is_empty(),
        "nothing is ordered before the customer confirms"
    );
    ana.send_and_ack("en-3", "yes please").await;
    system_frame(&mut ana, "your order request (70.00 EUR) has been approved").await;
    let tasks = order_tasks(&shop, &ana).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["status"], "approved");
    assert_eq!(tasks[0]["payload"]["lines"][0]["sku"], "POT-05");
    assert_eq!(tasks[0]["payload"]["lines"][0]["quantity"], 2);
    assert_eq!(tasks[0]["payload"]["total_cents"], 7000);
    assert_eq!(
        tasks[0]["payload"]["shipping_address"],
        "Carrer de la Força 12, 17004 Girona, ES"
    );

    // Spanish: product and quantity in one message, a new address, "sí".
    ana.send_and_ack("es-1", "quiero comprar dos tazas de espresso")
        .await;
    let summary = bot_frame(&mut ana, "¿Hago el pedido?").await;
    let text = summary["text"].as_str().unwrap();
    assert!(text.contains("2 × Tazas de espresso, juego de 2"), "{text}");
    assert!(text.contains("Total: 49,00 EUR"), "{text}");
    ana.send_and_ack("es-2", "Enviarlo a otra dirección").await;
    bot_frame(&mut ana, "¿A qué dirección lo enviamos").await;
    ana.send_and_ack("es-3", "Calle del Prado 21, 28014 Madrid")
        .await;
    let summary = bot_frame(&mut ana, "¿Hago el pedido?").await;
    assert!(
        summary["text"]
            .as_str()
            .unwrap()
            .contains("Entrega en: Calle del Prado 21, 28014 Madrid"),
        "{summary}"
    );
    ana.send_and_ack("es-4", "sí").await;
    system_frame(&mut ana, "tu solicitud de pedido (49,00 EUR)").await;
    let tasks = order_tasks(&shop, &ana).await;
    let spanish = tasks
        .iter()
        .find(|task| task["payload"]["lines"][0]["sku"] == "CUP-03")
        .expect("the Spanish order");
    assert_eq!(
        spanish["payload"]["shipping_address"],
        "Calle del Prado 21, 28014 Madrid"
    );

    // Catalan: over the automatic limit, confirmed by its button, held for sales, approved
    // over the API and told in the chat.
    ana.send_and_ack("ca-1", "vull comprar un bullidor elèctric")
        .await;
    bot_frame(&mut ana, "Quantes unitats en vols?").await;
    ana.send_and_ack("ca-2", "1").await;
    let summary = bot_frame(&mut ana, "Faig la comanda?").await;
    assert!(
        summary["text"]
            .as_str()
            .unwrap()
            .contains("Total: 189,90 EUR"),
        "{summary}"
    );
    ana.send_and_ack("ca-3", "Sí, fes la comanda").await;
    system_frame(&mut ana, "la teva sol·licitud de comanda (189,90 EUR)").await;
    let tasks = order_tasks(&shop, &ana).await;
    let kettle = tasks
        .iter()
        .find(|task| task["payload"]["lines"][0]["sku"] == "KETTLE-2")
        .expect("the Catalan order");
    assert_eq!(kettle["status"], "awaiting_approval", "{kettle}");
    let sales = shop
        .key(&[Scope::TasksRead, Scope::TasksApprove], &["sales"])
        .await;
    let (status, body) = shop
        .post(
            &sales,
            &format!("/api/v1/tasks/{}/approve", kettle["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    system_frame(&mut ana, "(189,90 EUR) ha estat aprovada").await;
}

both_backends!(
    orders_taken_in_chat_in_three_languages,
    orders_in_three_languages
);

async fn choices_stock_and_guests(backend: Backend) {
    let shop = chat_shop(backend).await;
    let mut ana = signed_in(&shop, "ana@example.com").await;

    // "A lamp" names three: they are offered as choices; the button picks one.
    ana.send_and_ack("lamp-1", "I'd like to order a lamp").await;
    let offered = bot_frame(&mut ana, "Which one do you mean?").await;
    let choices = labels(&offered);
    assert!(
        choices.contains(&"Blue table lamp · 49.00 EUR".to_string()),
        "{offered}"
    );
    assert!(choices.len() >= 2, "{offered}");
    ana.send_and_ack("lamp-2", "Blue table lamp · 49.00 EUR")
        .await;
    bot_frame(&mut ana, "Blue table lamp: 49.00 EUR each, 15 in stock").await;
    // More than one order may hold: the workflow's reason, then the quantity asked again.
    ana.send_and_ack("lamp-3", "12").await;
    bot_frame(&mut ana, "that's more than one order can hold").await;
    bot_frame(&mut ana, "How many would you like?").await;
    ana.send_and_ack("lamp-4", "forget it").await;
    bot_frame(&mut ana, "I've dropped that").await;

    // A wordy Spanish request still finds its product; a negative quantity is not one.
    ana.send_and_ack("tetera-1", "quiero pedir una tetera")
        .await;
    bot_frame(&mut ana, "Tetera: 35,00 EUR la unidad").await;
    ana.send_and_ack("tetera-2", "-3").await;
    bot_frame(
        &mut ana,
        "¿Cuántas unidades quieres? Respóndeme con un número",
    )
    .await;
    ana.send_and_ack("tetera-3", "olvídalo").await;
    bot_frame(&mut ana, "lo dejamos").await;

    // None in stock: told at once, and the order ends.
    ana.send_and_ack("grinder-1", "I want to buy a coffee grinder")
        .await;
    let refused = bot_frame(&mut ana, "Coffee grinder is sold out").await;
    assert_eq!(labels(&refused), ["let me talk to a human"], "{refused}");
    ana.send_and_ack("grinder-2", "2").await;
    let after = ana.bot_reply().await;
    assert!(
        !after["text"]
            .as_str()
            .unwrap()
            .contains("Shall I place it?"),
        "the refused order is over: {after}"
    );
    assert!(order_tasks(&shop, &ana).await.is_empty());

    // A guest (signed in nowhere) is asked to sign in or offered a person, before anything.
    let mut guest = shop.app.visitor().await;
    guest
        .send_and_ack("g-1", "I'd like to order a teapot")
        .await;
    let asked = bot_frame(&mut guest, "please sign in to the shop").await;
    assert_eq!(labels(&asked), ["let me talk to a human"], "{asked}");
    assert!(order_tasks(&shop, &guest).await.is_empty());
}

both_backends!(
    ambiguous_products_stock_and_guests_in_chat,
    choices_stock_and_guests
);

async fn reorders(backend: Backend) {
    let shop = chat_shop(backend).await;

    // A past product named: found among the customer's own orders, the quantity as said.
    let mut ana = signed_in(&shop, "ana@example.com").await;
    ana.send_and_ack(
        "r-1",
        "I'd like two more of the blue lamp I bought last month",
    )
    .await;
    let summary = bot_frame(&mut ana, "Shall I place it?").await;
    let text = summary["text"].as_str().unwrap();
    assert!(
        text.contains("2 × Blue table lamp at 49.00 EUR: 98.00 EUR"),
        "{text}"
    );
    ana.send_and_ack("r-2", "no").await;
    bot_frame(&mut ana, "I've dropped that").await;

    // "The same as last time": the newest order, at today's prices.
    ana.send_and_ack("r-3", "the same as last time").await;
    let summary = bot_frame(&mut ana, "Shall I place it?").await;
    let text = summary["text"].as_str().unwrap();
    assert!(text.contains("The same as your order 1044"), "{text}");
    assert!(text.contains("1 × Black tea, 200 g at 29.90 EUR"), "{text}");
    ana.send_and_ack("r-4", "ok").await;
    system_frame(&mut ana, "your order request (29.90 EUR) has been approved").await;

    // A past order named by its number.
    ana.send_and_ack("r-5", "repeat my order 1042").await;
    let summary = bot_frame(&mut ana, "Shall I place it?").await;
    assert!(
        summary["text"]
            .as_str()
            .unwrap()
            .contains("The same as your order 1042"),
        "{summary}"
    );
    ana.send_and_ack("r-6", "no").await;
    bot_frame(&mut ana, "I've dropped that").await;

    // Another customer's "same as last time" is their own order, never Ana's.
    let mut jordi = signed_in(&shop, "jordi@example.cat").await;
    jordi
        .send_and_ack("j-1", "el mateix que l'última vegada")
        .await;
    let summary = bot_frame(&mut jordi, "Faig la comanda?").await;
    let text = summary["text"].as_str().unwrap();
    assert!(text.contains("comanda 2002"), "{text}");
    assert!(text.contains("Te verd, 100 g"), "{text}");
    assert!(text.contains("Carrer Major 3, 25002 Lleida"), "{text}");
    for theirs in ["1044", "Girona", "Te negre", "Làmpada"] {
        assert!(
            !text.contains(theirs),
            "another customer's order shown: {text}"
        );
    }
    jordi.send_and_ack("j-2", "no").await;
    bot_frame(&mut jordi, "ho deixem").await;
    // Ana's order by its number is not Jordi's to repeat.
    jordi.send_and_ack("j-3", "repeat my order 1042").await;
    bot_frame(&mut jordi, "can't find order 1042 among your orders").await;
}

both_backends!(reorders_from_the_customers_own_orders, reorders);
