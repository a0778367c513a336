//! The fake's gateway: Hello, Identify and READY, heartbeats, dispatches with a sequence,
//! Resume, Reconnect and closing a connection.

use super::*;

pub(super) async fn gateway_socket(
    State(shared): State<Arc<Shared>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if shared.state.lock().unwrap().held {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    upgrade.on_upgrade(move |socket| session(shared, socket))
}

fn frame(value: Value) -> WsMessage {
    WsMessage::Text(value.to_string().into())
}

/// One gateway connection.
async fn session(shared: Arc<Shared>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<Push>();
    if sink
        .send(frame(
            json!({"op": 10, "d": {"heartbeat_interval": 41_250}, "s": null, "t": null}),
        ))
        .await
        .is_err()
    {
        return;
    }
    let next_seq = |shared: &Shared| {
        let mut state = shared.state.lock().unwrap();
        state.seq += 1;
        state.seq
    };
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(incoming)) = incoming else { break };
                let WsMessage::Text(text) = incoming else {
                    if matches!(incoming, WsMessage::Close(_)) { break }
                    continue;
                };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else { continue };
                match payload["op"].as_u64() {
                    Some(1) => {
                        let _ = sink.send(frame(json!({"op": 11, "d": null, "s": null, "t": null}))).await;
                    }
                    Some(2) => {
                        if payload["d"]["token"].as_str() != Some(TOKEN) && payload["d"]["token"].as_str() != Some(&format!("Bot {TOKEN}")) {
                            let _ = sink.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                                code: 4004, reason: "Authentication failed.".into() }))).await;
                            break;
                        }
                        if shared.state.lock().unwrap().refuse_intents {
                            let _ = sink.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                                code: 4014, reason: "Disallowed intent(s).".into() }))).await;
                            break;
                        }
                        let session_id = format!("session-{}", shared.snowflake());
                        {
                            let mut state = shared.state.lock().unwrap();
                            state.identifies += 1;
                            state.sessions.insert(session_id.clone());
                            state.seq = 0;
                            state.deaf = false;
                            state.connection = Some(push_tx.clone());
                        }
                        let ready = json!({"v": 10, "user": bot_user(), "guilds": [],
                            "session_id": session_id,
                            "resume_gateway_url": format!("ws://{}/gateway", shared.base),
                            "application": {"id": APPLICATION_ID.to_string(), "flags": 0}});
                        let seq = next_seq(&shared);
                        let _ = sink.send(frame(json!({"op": 0, "t": "READY", "s": seq, "d": ready}))).await;
                    }
                    Some(6) => {
                        let session_id = payload["d"]["session_id"].as_str().unwrap_or_default().to_string();
                        let known = shared.state.lock().unwrap().sessions.contains(&session_id);
                        if !known {
                            let _ = sink.send(frame(json!({"op": 9, "d": false, "s": null, "t": null}))).await;
                            continue;
                        }
                        {
                            let mut state = shared.state.lock().unwrap();
                            state.resumes += 1;
                            state.deaf = false;
                            state.connection = Some(push_tx.clone());
                        }
                        // Nothing missed is replayed: only history brings it back.
                        let seq = next_seq(&shared);
                        let _ = sink.send(frame(json!({"op": 0, "t": "RESUMED", "s": seq, "d": {}}))).await;
                    }
                    _ => {}
                }
            }
            push = push_rx.recv() => {
                let Some(push) = push else { break };
                match push {
                    Push::Dispatch(kind, data) => {
                        let seq = next_seq(&shared);
                        if sink.send(frame(json!({"op": 0, "t": kind, "s": seq, "d": data}))).await.is_err() {
                            break;
                        }
                    }
                    Push::Reconnect => {
                        let _ = sink.send(frame(json!({"op": 7, "d": null, "s": null, "t": null}))).await;
                    }
                    Push::Raw(text) => {
                        let _ = sink.send(WsMessage::Text(text.into())).await;
                    }
                    Push::Close(code) => {
                        let _ = sink.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                            code, reason: "closed by the fake".into() }))).await;
                        break;
                    }
                }
            }
        }
    }
    let mut state = shared.state.lock().unwrap();
    if state
        .connection
        .as_ref()
        .is_some_and(|connection| connection.same_channel(&push_tx))
    {
        state.connection = None;
    }
}
