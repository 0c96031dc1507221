//! `alorig:host/timers` for guests: `schedule`/`cancel` jobs, and the exports the
//! host calls at each timer firing and job run.

wit_bindgen::generate!({
    path: "../../wit/timers.wit",
    inline: "package alorig:guest-kit-timers;
             world timers-guest {
                 import alorig:host/timers@0.1.0;
                 export alorig:host/timer-handler@0.1.0;
                 export alorig:host/job-handler@0.1.0;
             }",
    world: "alorig:guest-kit-timers/timers-guest",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "guest_kit::timers",
});

pub use alorig::host::timers::*;
pub use exports::alorig::host::{
    job_handler::Guest as JobHandler, timer_handler::Guest as TimerHandler,
};
