//! End-to-end tests: the real `alorig-host` binary, real sockets, guests built
//! from source. One module per area; each test starts its own host.

mod harness;

mod caddy;
mod cli;
mod deploy;
mod ingress;
mod limits;
mod operators;
mod reuse;
mod routing;
mod sandbox;
