//! The label vocabulary of every series: the label sets (`app` on all of
//! them) and the closed lists of reasons and kinds. Kept apart from the
//! registry so a capability can name a reason (`PgErrorKind::Timeout`) without
//! seeing how families are registered; the strings are CONTRACT.md's.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStatusLabel {
    pub app: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppReasonLabel {
    pub app: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppDestinationLabel {
    pub app: String,
    /// The allow-list entry the request matched, or `denied`.
    pub destination: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeployLabel {
    pub app: String,
    /// `ok`, or the error code that refused the deploy (`budget_exceeded`, …).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppDirectionLabel {
    pub app: String,
    /// `in` (from clients) or `out` (to clients).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppKindLabel {
    pub app: String,
    pub kind: &'static str,
}

/// Trap reasons (label `reason` of `alorig_app_traps_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapReason {
    MemoryLimit,
    Deadline,
    Trap,
}

impl TrapReason {
    pub(super) fn label(self) -> &'static str {
        match self {
            TrapReason::MemoryLimit => "memory_limit",
            TrapReason::Deadline => "deadline",
            TrapReason::Trap => "trap",
        }
    }
}

/// Rejection reasons (label `reason` of `alorig_app_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    MemoryBudget,
    Concurrency,
}

impl RejectReason {
    pub(super) fn label(self) -> &'static str {
        match self {
            RejectReason::MemoryBudget => "memory_budget",
            RejectReason::Concurrency => "concurrency",
        }
    }
}

/// Declares a label vocabulary: an enum whose variants index an array of
/// handles resolved once per app (so `errors[PgErrorKind::Timeout]` reads as
/// what it counts, and a new variant cannot be forgotten in the array).
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

labels! {
    /// Kinds of `alorig_app_pg_errors_total`.
    PgErrorKind {
        Constraint => "constraint",
        Unavailable => "unavailable",
        Timeout => "timeout",
        BadParameter => "bad_parameter",
        TooLarge => "too_large",
        Other => "other",
    }
}

labels! {
    /// Reasons of `alorig_app_redis_errors_total`.
    RedisErrorReason {
        WrongType => "wrong_type",
        Unavailable => "unavailable",
        Timeout => "timeout",
        Invalid => "invalid",
        Other => "other",
    }
}

labels! {
    /// Reasons of `alorig_app_ws_dropped_total`: why the host refused or dropped a connection.
    WsDropReason {
        MaxConnections => "max_connections",
        MessageTooLarge => "message_too_large",
        SlowConsumer => "slow_consumer",
        SendTimeout => "send_timeout",
        PingTimeout => "ping_timeout",
    }
}
