//! sea-query's values bound to rusqlite as sqlx binds them (sea-query-binder's SQLite
//! arguments, sqlx-sqlite's encodings), and rows read back as sea-orm's proxy rows typed by
//! each column's declared type, so that a file reads the same whichever connection wrote it.
//!
//! A proxy row's value must have the variant the model's field asks for (an `Option<Uuid>`
//! field reads a `Value::Uuid`, and reads a value of any other variant as NULL), so the type is
//! taken from the column's declaration in the schema the migrations make: `uuid_text`,
//! `timestamp_with_timezone_text` (every timestamp of the schema is a `DateTimeUtc`),
//! `integer` (i32), `bigint` (i64), `boolean`, `varchar(..)` and `text`. A column declared
//! otherwise is refused rather than guessed; an expression (no declaration) is read by what it
//! holds.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, SecondsFormat, TimeZone, Utc};
use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Batch, Connection};
use sea_orm::{ProxyRow, Statement, Value};

/// Runs a statement, or several separated by `;` (their values bound in order across them);
/// answers the rows they changed and the last rowid inserted. Several outside a transaction go
/// in one of their own (BEGIN IMMEDIATE), so that they stand or fall together.
pub(super) fn execute(conn: &Connection, stmt: &Statement) -> rusqlite::Result<(u64, u64)> {
    let values = bind_all(stmt)?;
    if !stmt.sql.contains(';') {
        let changed = conn
            .prepare_cached(&stmt.sql)?
            .execute(rusqlite::params_from_iter(&values))?;
        return Ok((changed as u64, conn.last_insert_rowid() as u64));
    }
    let own = conn.is_autocommit();
    if own {
        conn.execute_batch("BEGIN IMMEDIATE")?;
    }
    let ran = each(conn, &stmt.sql, &values).and_then(|changed| {
        if own {
            conn.execute_batch("COMMIT")?;
        }
        Ok(changed)
    });
    if ran.is_err() && own && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Ok((ran?, conn.last_insert_rowid() as u64))
}

/// The statements of `sql` one after another, each bound to the next of `values`.
fn each(conn: &Connection, sql: &str, values: &[Sql]) -> rusqlite::Result<u64> {
    let mut changed = 0;
    let mut at = 0;
    let mut batch = Batch::new(conn, sql);
    while let Some(mut statement) = batch.next()? {
        let wanted = statement.parameter_count();
        let these = values
            .get(at..at + wanted)
            .ok_or_else(|| rusqlite::Error::InvalidParameterCount(at + wanted, values.len()))?;
        for (i, value) in these.iter().enumerate() {
            statement.raw_bind_parameter(i + 1, value)?;
        }
        at += wanted;
        changed += statement.raw_execute()? as u64;
    }
    if at != values.len() {
        return Err(rusqlite::Error::InvalidParameterCount(at, values.len()));
    }
    Ok(changed)
}

/// Runs a query; answers its rows, or (inner error) a value no column type reads, naming the
/// column.
pub(super) fn query(
    conn: &Connection,
    stmt: &Statement,
) -> rusqlite::Result<Result<Vec<ProxyRow>, String>> {
    let values = bind_all(stmt)?;
    let mut prepared = conn.prepare_cached(&stmt.sql)?;
    let columns: Vec<(String, Option<String>)> = prepared
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.decl_type().map(str::to_owned)))
        .collect();
    let mut rows = prepared.query(rusqlite::params_from_iter(&values))?;
    let mut read = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = BTreeMap::new();
        for (i, (name, declared)) in columns.iter().enumerate() {
            match typed(declared.as_deref(), row.get_ref(i)?) {
                Ok(value) => values.insert(name.clone(), value),
                Err(e) => return Ok(Err(format!("column {name}: {e}"))),
            };
        }
        read.push(ProxyRow::new(values));
    }
    Ok(Ok(read))
}

fn bind_all(stmt: &Statement) -> rusqlite::Result<Vec<Sql>> {
    let values = stmt.values.as_ref().map_or(&[][..], |v| &v.0[..]);
    values
        .iter()
        .map(|v| bind(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into())))
        .collect()
}

/// A value as sqlx binds it to SQLite.
fn bind(value: &Value) -> Result<Sql, String> {
    let int = |i: Option<i64>| i.map_or(Sql::Null, Sql::Integer);
    let text = |s: Option<String>| s.map_or(Sql::Null, Sql::Text);
    Ok(match value {
        Value::Bool(b) => int(b.map(i64::from)),
        Value::TinyInt(i) => int(i.map(i64::from)),
        Value::SmallInt(i) => int(i.map(i64::from)),
        Value::Int(i) => int(i.map(i64::from)),
        Value::BigInt(i) => int(*i),
        Value::TinyUnsigned(i) => int(i.map(i64::from)),
        Value::SmallUnsigned(i) => int(i.map(i64::from)),
        Value::Unsigned(i) => int(i.map(i64::from)),
        Value::BigUnsigned(i) => match i {
            Some(i) => Sql::Integer(i64::try_from(*i).map_err(|_| format!("{i} exceeds i64"))?),
            None => Sql::Null,
        },
        Value::Float(f) => f.map_or(Sql::Null, |f| Sql::Real(f64::from(f))),
        Value::Double(f) => f.map_or(Sql::Null, Sql::Real),
        Value::String(s) => text(s.as_deref().cloned()),
        Value::Char(c) => text(c.map(String::from)),
        Value::Bytes(b) => b.as_deref().map_or(Sql::Null, |b| Sql::Blob(b.clone())),
        Value::Json(j) => text(j.as_deref().map(|j| j.to_string())),
        Value::Uuid(u) => u
            .as_deref()
            .map_or(Sql::Null, |u| Sql::Blob(u.as_bytes().to_vec())),
        Value::ChronoDateTimeUtc(t) => text(t.as_deref().map(rfc3339)),
        Value::ChronoDateTimeWithTimeZone(t) => text(t.as_deref().map(rfc3339)),
        Value::ChronoDateTimeLocal(t) => text(t.as_deref().map(rfc3339)),
        Value::ChronoDateTime(t) => text(t.as_deref().map(|t| t.format("%F %T%.f").to_string())),
        Value::ChronoDate(d) => text(d.as_deref().map(|d| d.format("%F").to_string())),
        Value::ChronoTime(t) => text(t.as_deref().map(|t| t.format("%T%.f").to_string())),
        #[allow(unreachable_patterns)]
        other => return Err(format!("{other:?} is not a value SQLite takes")),
    })
}

/// sqlx-sqlite's text for a timestamp with a zone.
fn rfc3339<Tz: TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The types a column can be declared with in the jobs database's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Declared {
    Uuid,
    Timestamp,
    Int,
    BigInt,
    Bool,
    Text,
    Real,
    Blob,
}

fn declared(decl: &str) -> Result<Declared, String> {
    let decl = decl.to_ascii_lowercase();
    Ok(match decl.as_str() {
        "uuid_text" | "uuid" => Declared::Uuid,
        "timestamp_with_timezone_text" | "timestamptz" => Declared::Timestamp,
        "integer" | "int" => Declared::Int,
        "bigint" => Declared::BigInt,
        "boolean" | "bool" => Declared::Bool,
        "text" => Declared::Text,
        "real" | "double" | "float" => Declared::Real,
        "blob" => Declared::Blob,
        d if d.starts_with("varchar") || d.starts_with("char") => Declared::Text,
        other => return Err(format!("declared {other:?}, a type not read here")),
    })
}

/// The value of a column declared `decl` (`None`: an expression, read by what it holds).
fn typed(decl: Option<&str>, value: ValueRef<'_>) -> Result<Value, String> {
    let kind = match decl {
        Some(decl) => declared(decl)?,
        None => match value {
            ValueRef::Null => return Ok(Value::String(None)),
            ValueRef::Integer(i) => return Ok(Value::BigInt(Some(i))),
            ValueRef::Real(f) => return Ok(Value::Double(Some(f))),
            ValueRef::Text(_) => Declared::Text,
            ValueRef::Blob(b) => return Ok(Value::Bytes(Some(Box::new(b.to_vec())))),
        },
    };
    if let ValueRef::Null = value {
        return Ok(match kind {
            Declared::Uuid => Value::Uuid(None),
            Declared::Timestamp => Value::ChronoDateTimeUtc(None),
            Declared::Int => Value::Int(None),
            Declared::BigInt => Value::BigInt(None),
            Declared::Bool => Value::Bool(None),
            Declared::Text => Value::String(None),
            Declared::Real => Value::Double(None),
            Declared::Blob => Value::Bytes(None),
        });
    }
    let wrong = || format!("{:?} holds {:?}", kind, value.data_type());
    let text = || value.as_str().map_err(|e| e.to_string());
    Ok(match (kind, value) {
        (Declared::Uuid, ValueRef::Blob(b)) => Value::Uuid(Some(Box::new(
            uuid::Uuid::from_slice(b).map_err(|e| e.to_string())?,
        ))),
        (Declared::Uuid, ValueRef::Text(_)) => Value::Uuid(Some(Box::new(
            uuid::Uuid::parse_str(text()?).map_err(|e| e.to_string())?,
        ))),
        (Declared::Timestamp, ValueRef::Text(_)) => {
            let at = timestamp(text()?).ok_or_else(|| format!("{:?} is no timestamp", text()))?;
            Value::ChronoDateTimeUtc(Some(Box::new(at.with_timezone(&Utc))))
        }
        (Declared::Timestamp, ValueRef::Integer(seconds)) => {
            let at = DateTime::from_timestamp(seconds, 0).ok_or_else(wrong)?;
            Value::ChronoDateTimeUtc(Some(Box::new(at)))
        }
        (Declared::Int, ValueRef::Integer(i)) => Value::Int(Some(
            i32::try_from(i).map_err(|_| format!("{i} exceeds i32"))?,
        )),
        (Declared::BigInt, ValueRef::Integer(i)) => Value::BigInt(Some(i)),
        (Declared::Bool, ValueRef::Integer(i)) => Value::Bool(Some(i != 0)),
        (Declared::Text, ValueRef::Text(_)) => Value::String(Some(Box::new(text()?.to_owned()))),
        (Declared::Real, ValueRef::Real(f)) => Value::Double(Some(f)),
        (Declared::Real, ValueRef::Integer(i)) => Value::Double(Some(i as f64)),
        (Declared::Blob, ValueRef::Blob(b)) => Value::Bytes(Some(Box::new(b.to_vec()))),
        _ => return Err(wrong()),
    })
}

/// A timestamp in any text sqlx-sqlite reads as one: RFC 3339 (what it writes), else SQLite's
/// own date-time formats, without a zone meaning UTC.
fn timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at);
    }
    const FORMATS: [&str; 12] = [
        "%F %T%.f",
        "%F %R",
        "%F %RZ",
        "%F %R%:z",
        "%F %T%.fZ",
        "%F %T%.f%:z",
        "%FT%R",
        "%FT%RZ",
        "%FT%R%:z",
        "%FT%T%.f",
        "%FT%T%.fZ",
        "%FT%T%.f%:z",
    ];
    FORMATS.iter().find_map(|format| {
        DateTime::parse_from_str(text, format).ok().or_else(|| {
            NaiveDateTime::parse_from_str(text, format)
                .ok()
                .map(|at| Utc.fix().from_utc_datetime(&at))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_declared_with_a_type_the_schema_never_uses_is_refused_naming_it() {
        assert_eq!(
            typed(Some("json_text"), ValueRef::Text(b"{}")),
            Err("declared \"json_text\", a type not read here".to_owned())
        );
    }

    #[test]
    fn nulls_have_their_columns_types_so_optional_fields_read_them_as_none() {
        assert_eq!(
            typed(Some("timestamp_with_timezone_text"), ValueRef::Null),
            Ok(Value::ChronoDateTimeUtc(None))
        );
        assert_eq!(
            typed(Some("uuid_text"), ValueRef::Null),
            Ok(Value::Uuid(None))
        );
        assert_eq!(
            typed(Some("varchar(64)"), ValueRef::Null),
            Ok(Value::String(None))
        );
    }

    #[test]
    fn timestamps_read_in_every_form_sqlx_reads() {
        for text in [
            "2026-12-05T16:10:05.989675788+00:00",
            "2026-12-05 16:10:05.989675788",
            "2026-12-05T17:10:05.989675788+01:00",
        ] {
            assert_eq!(
                timestamp(text).map(|t| t.with_timezone(&Utc)),
                Some(
                    Utc.with_ymd_and_hms(2026, 12, 5, 16, 10, 5).unwrap()
                        + chrono::Duration::nanoseconds(989_675_788)
                ),
                "{text}"
            );
        }
        assert_eq!(timestamp("yesterday"), None);
    }
}
