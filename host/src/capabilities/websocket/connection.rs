//! One task per open connection: reads the client's frames, writes the queued
//! messages, pings, and enforces the app's limits. Its idle state is the
//! socket, the protocol's small buffers (4 KiB read buffer, no write batching)
//! and a timer; a message is handled by running the app's `on-message` inside
//! this task, one at a time, so a client cannot make the host run more than
//! one instance per connection. While a handler runs the task keeps writing
//! (a handler may send to its own connection) but stops reading: the client's
//! next frames wait in the socket.

use super::{
    Event, Message, WebSocketApp, WebsocketTriggerPre,
    hub::{Conn, Outgoing},
    run_event,
};
use crate::{metrics::WsDropReason, trigger::Invoker};
use futures::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Error as WsError,
        error::CapacityError,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};

/// How long a closing handshake may take before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close code reported to `on-close` when there was no close frame.
const ABNORMAL: u16 = 1006;

#[allow(clippy::too_many_arguments)]
pub async fn serve<T: Send + 'static>(
    app: Invoker<T>,
    trigger: WebsocketTriggerPre<T>,
    ws_app: Arc<WebSocketApp>,
    conn: Arc<Conn>,
    seq: u64,
    id: String,
    queue: mpsc::Receiver<Outgoing>,
    upgrade: hyper::upgrade::OnUpgrade,
) {
    let code = match upgrade.await {
        Ok(upgraded) => {
            let limits = &ws_app.limits;
            let max = limits.max_message.bytes() as usize;
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_write_buffer_size(max + 64 * 1024)
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            run(&app, &trigger, &ws_app, &conn, &id, socket, queue).await
        }
        Err(_) => ABNORMAL,
    };
    ws_app.hub.remove(seq).await;
    ws_app.metrics.connections.dec();
    let _ = run_event(&app, &trigger, Event::Close(id, code)).await;
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Handler<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The connection's life; answers the close code for `on-close`.
async fn run<T: Send + 'static>(
    app: &Invoker<T>,
    trigger: &WebsocketTriggerPre<T>,
    ws_app: &WebSocketApp,
    conn: &Conn,
    id: &str,
    mut socket: Socket,
    mut queue: mpsc::Receiver<Outgoing>,
) -> u16 {
    let limits = &ws_app.limits;
    let metrics = &ws_app.metrics;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the client sent anything since the last ping.
    let mut answered = true;
    let mut handler: Option<Handler<'_>> = None;
    let code = loop {
        tokio::select! {
            () = conn.killed() => break 1008,
            outgoing = queue.recv() => match outgoing {
                // The charge of the message's bytes is given back once it is written.
                Some(Outgoing::Message(message, _charge)) => {
                    tokio::select! {
                        sent = tokio::time::timeout(limits.send_timeout, socket.send(message)) => match sent {
                            Ok(Ok(())) => metrics.messages_out.inc(),
                            Ok(Err(_)) => break ABNORMAL,
                            Err(_) => {
                                conn.kill(WsDropReason::SendTimeout);
                                break 1008;
                            }
                        },
                        () = conn.killed() => break 1008,
                    };
                }
                Some(Outgoing::Close(code, reason)) => {
                    close(&mut socket, code, reason).await;
                    break code;
                }
                None => break ABNORMAL,
            },
            // The precondition keeps this branch from being polled without a
            // handler; if it ever were, it waits instead of panicking the loop.
            () = async {
                match handler.as_mut() {
                    Some(running) => running.await,
                    None => std::future::pending().await,
                }
            }, if handler.is_some() => {
                handler = None;
                // The client's frames waited while the handler ran: not its silence.
                answered = true;
            }
            frame = socket.next(), if handler.is_none() => {
                answered = true;
                let message = match frame {
                    Some(Ok(tungstenite::Message::Text(text))) => Message::Text(text.as_str().to_string()),
                    Some(Ok(tungstenite::Message::Binary(bytes))) => Message::Binary(bytes.to_vec()),
                    Some(Ok(tungstenite::Message::Close(frame))) => {
                        // The protocol crate queued the answering close frame: send it.
                        let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                        break frame.map_or(1005, |f| u16::from(f.code));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        conn.kill(WsDropReason::MessageTooLarge);
                        close(&mut socket, 1009, format!("a message is at most {} bytes", limits.max_message.bytes())).await;
                        break 1009;
                    }
                    Some(Err(_)) | None => break ABNORMAL,
                };
                metrics.messages_in.inc();
                handler = Some(Box::pin(async move {
                    let _ = run_event(app, trigger, Event::Message(id.to_string(), message)).await;
                }));
            }
            _ = ping.tick() => {
                if handler.is_some() {
                    continue;
                }
                if !answered {
                    conn.kill(WsDropReason::PingTimeout);
                    break ABNORMAL;
                }
                answered = false;
                match tokio::time::timeout(limits.send_timeout, socket.send(tungstenite::Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break ABNORMAL,
                    Err(_) => {
                        conn.kill(WsDropReason::SendTimeout);
                        break 1008;
                    }
                }
            }
        }
    };
    // A message being handled finishes before `on-close` runs.
    if let Some(handler) = handler {
        handler.await;
    }
    code
}

/// Sends a close frame and waits (briefly) for the client's answer.
async fn close(socket: &mut Socket, code: u16, reason: String) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        socket
            .send(tungstenite::Message::Close(Some(frame)))
            .await?;
        while let Some(frame) = socket.next().await {
            frame?;
        }
        Ok::<(), WsError>(())
    })
    .await;
}
