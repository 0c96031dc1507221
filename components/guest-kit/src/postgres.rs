//! `alorig:host/postgres` for guests: the generated import plus small helpers.
//! The host binds it to the app's own database; there is nothing to configure.

wit_bindgen::generate!({
    path: "../../wit/postgres.wit",
    inline: "package alorig:guest-kit; world postgres-guest { import alorig:host/postgres@0.1.0; }",
    world: "alorig:guest-kit/postgres-guest",
    generate_all,
});

pub use alorig::host::postgres::*;

impl Error {
    /// The error's SQLSTATE and message, whatever its kind.
    pub fn parts(&self) -> (&str, &str) {
        match self {
            Error::ConstraintViolation(c) => (&c.sqlstate, &c.message),
            Error::Unavailable(i) | Error::Timeout(i) | Error::BadParameter(i) | Error::TooLarge(i) | Error::Other(i) => {
                (&i.sqlstate, &i.message)
            }
        }
    }

    /// A short name of the kind: `constraint`, `unavailable`, `timeout`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ConstraintViolation(_) => "constraint",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::BadParameter(_) => "bad-parameter",
            Error::TooLarge(_) => "too-large",
            Error::Other(_) => "other",
        }
    }
}

impl Error {
    /// One line for logs: kind (or constraint), SQLSTATE and message.
    pub fn describe(&self) -> String {
        let (sqlstate, message) = self.parts();
        match self {
            Error::ConstraintViolation(c) => format!("constraint {} [{sqlstate}]: {message}", c.constraint),
            _ => format!("{} [{sqlstate}]: {message}", self.kind()),
        }
    }
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Numeric(s) | Value::Json(s) | Value::Jsonb(s) | Value::Uuid(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int16(i) => Some(i.into()),
            Value::Int32(i) => Some(i.into()),
            Value::Int64(i) => Some(i),
            _ => None,
        }
    }
}
