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
            Error::Unavailable(i)
            | Error::Timeout(i)
            | Error::BadParameter(i)
            | Error::TooLarge(i)
            | Error::Other(i) => (&i.sqlstate, &i.message),
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
            Error::ConstraintViolation(c) => {
                format!("constraint {} [{sqlstate}]: {message}", c.constraint)
            }
            _ => format!("{} [{sqlstate}]: {message}", self.kind()),
        }
    }
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Json(s)
            | Value::Jsonb(s)
            | Value::Uuid(s) => Some(s),
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

/// Applies the numbered migrations (`migrations[0]` is version 1) this database
/// has not seen, each statement separated by `;` at the end of a line, all in
/// one transaction under an advisory lock, so two hosts starting together apply
/// each one once. The versions applied are kept in `table`. Cheap when nothing
/// is missing (one query), so a component calls it at the start of each request.
pub fn migrate(table: &str, migrations: &[&str]) -> Result<(), Error> {
    let current = query(
        &format!("SELECT coalesce(max(version), 0) FROM {table}"),
        &[],
    );
    let done = match current {
        Ok(rows) => rows.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0),
        Err(e) if e.parts().0 == "42P01" => -1,
        Err(e) => return Err(e),
    };
    if done >= migrations.len() as i64 {
        return Ok(());
    }
    let tx = begin()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[Value::Text(table.to_string())],
    )?;
    tx.execute(&format!("CREATE TABLE IF NOT EXISTS {table} (version integer PRIMARY KEY, applied_ms bigint NOT NULL)"), &[])?;
    let rows = tx.query(
        &format!("SELECT coalesce(max(version), 0) FROM {table}"),
        &[],
    )?;
    let done = rows.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0) as usize;
    for (i, migration) in migrations.iter().enumerate().skip(done) {
        for statement in migration.split(";\n").filter(|s| !s.trim().is_empty()) {
            tx.execute(statement, &[])?;
        }
        tx.execute(
            &format!("INSERT INTO {table} (version, applied_ms) VALUES ($1, $2)"),
            &[Value::Int32(i as i32 + 1), Value::Int64(crate::now_ms())],
        )?;
    }
    Transaction::commit(tx)
}
