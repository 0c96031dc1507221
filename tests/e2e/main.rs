//! End-to-end tests: the real `alorig-host` binary, real sockets, guests built
//! from source. One module per area; each test starts its own host.

mod harness;
mod postgres_server;
mod redis_server;

mod caddy;
mod cli;
mod deploy;
mod ingress;
mod limits;
mod operators;
mod outbound;
mod postgres;
mod production;
mod redis;
mod reuse;
mod routing;
mod sandbox;
mod seeds;
mod timers;
mod websocket;
