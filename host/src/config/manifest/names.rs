//! The validated names a manifest is keyed by: the app's name (used in paths,
//! metric labels, Redis prefixes and role names, so its alphabet is narrow) and
//! route host patterns (checked against the Public Suffix List). Both validate
//! while deserializing, so their errors carry the manifest's line.

use serde::Deserialize;

/// `[a-z0-9-]{1,32}`: safe in paths, metric labels, Redis prefixes and role names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct AppName(String);

impl AppName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(AppName(name))
        } else {
            Err(format!(
                "app name {name:?} must be 1 to 32 characters of a-z, 0-9 and -"
            ))
        }
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An exact host name, or `*.domain` matching any name below `domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum HostPattern {
    Exact(String),
    /// The suffix including its leading dot: `.sites.alorig.com`.
    Wildcard(String),
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(host: String) -> Result<Self, String> {
        let host = host.to_ascii_lowercase();
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(rest) => (HostPattern::Wildcard(format!(".{rest}")), rest.to_string()),
            None => (HostPattern::Exact(host.clone()), host.clone()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "route host {host:?} must be a host name like \"api.example.com\" or \"*.example.com\" (no scheme, port or path)"
            ));
        }
        // `*.com` or `*.co.uk` would let one app claim every site under a public
        // suffix (the Public Suffix List, compiled in by `psl`).
        if matches!(pattern, HostPattern::Wildcard(_)) && psl::domain(name.as_bytes()).is_none() {
            return Err(format!(
                "route host {host:?}: a wildcard must be below a registrable domain (\"{name}\" is a public suffix), e.g. \"*.example.com\""
            ));
        }
        Ok(pattern)
    }
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}
