//! Whose fault a failure is — the `fault` field of operator log events and the
//! split the admin API answers by (STYLE.md's three audiences for errors).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The app's component: a trap, a handler error, a missing export or import.
    Guest,
    /// The app's manifest or the host's configuration: fix a file and retry.
    Operator,
    /// A service the host depends on (PostgreSQL, Redis) is unreachable or
    /// failing: retry later, nothing to fix in the app.
    Dependency,
    /// The host itself (a bug, or the machine: disk, random source).
    Host,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Guest => "guest",
            Fault::Operator => "operator",
            Fault::Dependency => "dependency",
            Fault::Host => "host",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
