//! End-to-end tests: the real `alorig-host` binary, real sockets, guests built
//! from source. One module per area; each test starts its own host.

mod harness;
mod redis_server;

mod cli;
mod ingress;
mod limits;
mod redis;
mod routing;
mod sandbox;
