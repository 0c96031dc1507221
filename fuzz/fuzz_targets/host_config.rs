//! F1: any text as host.toml. Oracle: no panic; accepted timeouts are within
//! the bounds hyper and tokio can take.
#![no_main]

use alorig_host::config::HostConfig;
use libfuzzer_sys::fuzz_target;
use std::{path::Path, time::Duration};

fuzz_target!(|text: &str| {
    let Ok(config) = HostConfig::parse(Path::new("fuzz/host.toml"), text) else {
        return;
    };
    for timeout in [config.header_read_timeout, config.write_timeout] {
        assert!(timeout >= Duration::from_millis(100) && timeout <= Duration::from_secs(3600));
    }
    assert!(config.keep_versions >= 1 && (1..=100_000).contains(&config.max_instances));
});
