//! WebSocket streams: one pump that forwards a broadcast channel to a client, answering pings
//! and stopping when either side goes away. A client too slow for the channel loses messages
//! (the channel is bounded); `on_lag` says what to tell it instead.

use futures_util::StreamExt as _;
use tokio::sync::broadcast::{self, error::RecvError};

/// Send `backlog`, then every message of `live` that `render` turns into text.
pub fn pump<T: Clone + Send + 'static>(
    mut session: actix_ws::Session,
    mut incoming: actix_ws::MessageStream,
    backlog: Vec<String>,
    mut live: broadcast::Receiver<T>,
    render: impl Fn(&T) -> Option<String> + 'static,
    on_lag: impl Fn(u64) -> Option<String> + 'static,
) {
    actix_web::rt::spawn(async move {
        for text in backlog {
            if session.text(text).await.is_err() {
                return;
            }
        }
        loop {
            let outgoing = tokio::select! {
                received = live.recv() => match received {
                    Ok(item) => render(&item),
                    Err(RecvError::Lagged(n)) => on_lag(n),
                    Err(RecvError::Closed) => break,
                },
                message = incoming.next() => match message {
                    Some(Ok(actix_ws::Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break;
                        }
                        None
                    }
                    Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => None,
                },
            };
            if let Some(text) = outgoing {
                if session.text(text).await.is_err() {
                    break;
                }
            }
        }
        let _ = session.close(None).await;
    });
}
