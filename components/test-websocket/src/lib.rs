//! Test guest for WebSockets (`alorig:host/websocket` and `websocket-handler`).
//!
//! On open (query of the upgrade request): `refuse=1` refuses (403); every
//! `group=G` joins G; `hello=1` sends `id:<connection id>` first.
//!
//! Messages: binary ones are echoed; text commands are
//! * `close` — the app closes the connection with 4000 "bye";
//! * `trap` — the instance traps (the connection stays open);
//! * `join:G` / `leave:G` — answers `joined:G` / `left:G` (or the error);
//! * `group:G:TEXT` — sends TEXT to group G;
//! * `to:ID:TEXT` — sends TEXT to connection ID (on whichever host holds it);
//! * `big:N` — sends back N bytes (past max_message: answers the error);
//! * anything else is echoed.
//!
//! HTTP: `POST /broadcast?group=G&n=N` sends the body N times to group G
//! (`n` defaults to 1) and answers `sent N`; `POST /send?to=ID` sends the body to
//! one connection.

wit_bindgen::generate!({
    inline: "
        package test:websocket;
        world guest {
            import alorig:host/websocket@0.1.0;
            export alorig:host/websocket-handler@0.1.0;
        }
    ",
    path: "../../wit",
    generate_all,
});

use alorig::host::websocket::{self as ws, Error, Message};
use exports::alorig::host::websocket_handler::{Guest as Handler, OpenRequest};
use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Guest;

fn describe(err: Error) -> String {
    match err {
        Error::Closed => "closed".into(),
        Error::Invalid(why) => format!("invalid: {why}"),
        Error::Unavailable => "unavailable".into(),
    }
}

fn reply(connection: &str, text: String) -> Result<(), String> {
    ws::send(connection, &Message::Text(text)).map_err(describe)
}

fn params<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query
        .split('&')
        .filter_map(move |pair| pair.strip_prefix(name)?.strip_prefix('='))
}

impl Handler for Guest {
    fn on_open(request: OpenRequest) -> Result<(), String> {
        if params(&request.query, "refuse").any(|v| v == "1") {
            return Err("refused by the test guest".into());
        }
        for group in params(&request.query, "group") {
            ws::join(&request.connection, group).map_err(describe)?;
        }
        if params(&request.query, "hello").any(|v| v == "1") {
            reply(&request.connection, format!("id:{}", request.connection))?;
        }
        Ok(())
    }

    fn on_message(connection: String, message: Message) -> Result<(), String> {
        let text = match message {
            Message::Binary(bytes) => {
                return ws::send(&connection, &Message::Binary(bytes)).map_err(describe);
            }
            Message::Text(text) => text,
        };
        if text == "close" {
            return ws::close(&connection, 4000, "bye").map_err(describe);
        }
        if text == "trap" {
            unreachable!("the test guest traps on request");
        }
        if let Some(group) = text.strip_prefix("join:") {
            let answer = ws::join(&connection, group).map(|()| format!("joined:{group}"));
            return reply(&connection, answer.unwrap_or_else(describe));
        }
        if let Some(group) = text.strip_prefix("leave:") {
            let answer = ws::leave(&connection, group).map(|()| format!("left:{group}"));
            return reply(&connection, answer.unwrap_or_else(describe));
        }
        if let Some((group, body)) = text
            .strip_prefix("group:")
            .and_then(|rest| rest.split_once(':'))
        {
            return ws::send_group(group, &Message::Text(body.to_string())).map_err(describe);
        }
        if let Some((to, body)) = text
            .strip_prefix("to:")
            .and_then(|rest| rest.split_once(':'))
        {
            let answer = ws::send(to, &Message::Text(body.to_string()));
            return reply(
                &connection,
                answer.map(|()| "sent".to_string()).unwrap_or_else(describe),
            );
        }
        if let Some(n) = text
            .strip_prefix("big:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            return match ws::send(&connection, &Message::Binary(vec![b'x'; n])) {
                Ok(()) => Ok(()),
                Err(err) => reply(&connection, describe(err)),
            };
        }
        reply(&connection, text)
    }

    fn on_close(_connection: String, _code: u16) {}
}

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&req);
        let body = guest_kit::read_body(&req);
        let message = || match String::from_utf8(body.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(body.clone()),
        };
        let result = match path.as_str() {
            "/broadcast" => {
                let group = guest_kit::query_param(&req, "group").unwrap_or_default();
                let n: u32 = guest_kit::query_param(&req, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                (0..n)
                    .try_for_each(|_| ws::send_group(&group, &message()))
                    .map(|()| format!("sent {n}"))
            }
            "/send" => {
                let to = guest_kit::query_param(&req, "to").unwrap_or_default();
                ws::send(&to, &message()).map(|()| "sent".to_string())
            }
            _ => {
                guest_kit::respond(out, 404, "text/plain", b"no such route");
                return;
            }
        };
        match result {
            Ok(text) => guest_kit::respond(out, 200, "text/plain", text.as_bytes()),
            Err(Error::Closed) => guest_kit::respond(out, 410, "text/plain", b"closed"),
            Err(err) => guest_kit::respond(out, 503, "text/plain", describe(err).as_bytes()),
        }
    }
}

export!(Guest);
wasip2::http::proxy::export!(Guest with_types_in wasip2);
