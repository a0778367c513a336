//! The ceiling `bench router --baseline` reads the router against: a bare WebSocket server
//! that answers the web chat frames the load sends (`hello` with a `welcome`, `message` with
//! an `ack` and the bot's echo) over the same kind of sockets (axum, `TCP_NODELAY`), with no
//! storage, no router and no assistant. The router's figure divided by this one is its cost
//! per message as a share of what the machine and the load generator allow, which stays
//! comparable across machines and runs where absolute figures do not.

use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{Message, WebSocket};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// A running baseline server; stopped on drop.
pub struct Baseline {
    pub ws_url: String,
    task: JoinHandle<()>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the bare server on a free loopback port.
pub async fn start() -> anyhow::Result<Baseline> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/ws", get(upgrade));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Baseline {
        ws_url: format!("ws://{addr}/ws"),
        task,
    })
}

/// The web chat's socket buffers (connectors/webchat/src/socket.rs), so that both servers
/// read and write the same way.
async fn upgrade(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(visitor)
}

/// A frame to the browser, fields in the order the web chat writes them (the load generator
/// recognises a reply by its first bytes).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame<'a> {
    Welcome {
        token: &'a str,
        visitor_id: &'a str,
        conversation_id: Option<&'a str>,
        resumed: bool,
        history: [(); 0],
    },
    Ack {
        client_id: &'a str,
        id: String,
        seq: i64,
        duplicate: bool,
    },
    Message {
        id: String,
        seq: i64,
        author: &'a str,
        text: String,
        created_at: String,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

/// What the browser sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Hello {},
    Message { client_id: String, text: String },
    Typing {},
}

/// One visitor's socket: each frame parsed and answered as the web chat would, from memory.
async fn visitor(mut socket: WebSocket) {
    let visitor_id = uuid::Uuid::now_v7().to_string();
    let mut seq = 0i64;
    while let Some(Ok(frame)) = socket.recv().await {
        let Message::Text(text) = frame else { continue };
        let sent = match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Hello {}) => {
                let welcome = Frame::Welcome {
                    token: "",
                    visitor_id: &visitor_id,
                    conversation_id: None,
                    resumed: false,
                    history: [],
                };
                send(&mut socket, &welcome).await
            }
            Ok(ClientFrame::Message { client_id, text }) => {
                seq += 2;
                let ack = Frame::Ack {
                    client_id: &client_id,
                    id: uuid::Uuid::now_v7().to_string(),
                    seq: seq - 1,
                    duplicate: false,
                };
                let reply = Frame::Message {
                    id: uuid::Uuid::now_v7().to_string(),
                    seq,
                    author: "bot",
                    text: format!("echo: {text}"),
                    created_at: crate::store::rfc3339(crate::store::now_ms()),
                };
                match send(&mut socket, &ack).await {
                    Ok(()) => send(&mut socket, &reply).await,
                    Err(error) => Err(error),
                }
            }
            Ok(ClientFrame::Typing {}) => Ok(()),
            Err(_) => {
                let error = Frame::Error {
                    code: "bad_frame",
                    message: "not a web chat frame",
                };
                send(&mut socket, &error).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn send(socket: &mut WebSocket, frame: &Frame<'_>) -> Result<(), axum::Error> {
    let text = serde_json::to_string(frame).expect("frames serialise");
    socket.send(Message::text(text)).await
}
