//! End-to-end tests: the real `alorig-host` binary, real sockets, guests built
//! from source. One module per area; each test starts its own host.

// A test (and its harness) fails by panicking: unwrap is how it says "this must work".
#![allow(clippy::unwrap_used)]

mod harness;
mod load;
mod postgres_server;
mod redis_server;
mod shipped_apps;
mod stub;

mod alorig;
mod astrotiming;
mod caddy;
mod cli;
mod cluster;
mod cluster_kubernetes;
mod cluster_shares;
mod cpu;
mod deploy;
mod escape;
mod files;
mod guest_faults;
mod host_memory;
mod igny8;
mod ingress;
mod limits;
mod observer;
mod operators;
mod outbound;
mod postgres;
mod production;
mod psydge;
mod python;
mod redis;
mod reuse;
mod routing;
mod sandbox;
mod seeds;
mod sitebuilder;
mod snapify;
mod soak;
mod supply_chain;
mod timers;
mod websocket;
