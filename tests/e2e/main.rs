//! End-to-end tests: the real `alorig-host` binary, real sockets, guests built
//! from source. One module per area; each test starts its own host.

mod harness;
mod postgres_server;

mod cli;
mod ingress;
mod limits;
mod postgres;
mod routing;
mod sandbox;
