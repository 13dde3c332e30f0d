//! One line of `all_quotes.jsonl` read into a quote: its `text` and its other fields as
//! metadata (scalars as they are, lists of scalars joined with ", ", nulls dropped, a key given
//! twice refused, a field named like one of the engine's keys kept as `quote_<name>`), or the
//! reason the line is a bad record.

use serde_json::Value;

use crate::record::{MetaValue, Metadata};

/// One line: `Ok(None)` for a blank line, the quote's text and metadata, or why it is bad.
pub(in crate::sources) fn parse_record(
    line: &[u8],
    first: bool,
) -> Result<Option<(String, Metadata)>, String> {
    let line = if first {
        line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
    } else {
        line
    };
    let line = std::str::from_utf8(line)
        .map_err(|e| format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to()))?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Fields(fields) = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let mut text = None;
    let mut own = Vec::new();
    for (key, value) in fields {
        if key == "text" {
            match value {
                Value::String(s) if !s.trim().is_empty() => text = Some(s),
                Value::String(_) => return Err("`text` is empty".into()),
                _ => return Err("`text` is not a string".into()),
            }
            continue;
        }
        if let Some(flat) = flatten(&key, value)? {
            own.push((key, flat));
        }
    }
    let text = text.ok_or("missing required field `text`")?;
    Ok(Some((text, metadata_of(own))))
}

/// A quote's own fields as metadata. A field named like one of the engine's keys, or that a
/// store would refuse (empty, or starting with `$` or `#`, which Chroma keeps for its
/// operators), is kept as `quote_<name>` (then `quote_<name>_2`...), never overwriting another
/// field: every value survives, the same way for every store.
fn metadata_of(own: Vec<(String, MetaValue)>) -> Metadata {
    let mut metadata = Metadata::new();
    let mut renamed = Vec::new();
    for (key, value) in own {
        if needs_renaming(&key) {
            renamed.push((key, value));
        } else {
            metadata.insert(key, value);
        }
    }
    for (key, value) in renamed {
        let base = format!("quote_{key}");
        let mut name = base.clone();
        let mut n = 1;
        while metadata.contains_key(&name) || crate::record::keys::is_reserved(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        metadata.insert(name, value);
    }
    metadata
}

pub(in crate::sources) fn needs_renaming(key: &str) -> bool {
    crate::record::keys::is_reserved(key) || key.is_empty() || key.starts_with(['$', '#'])
}

/// A JSON object's fields in order, a key given twice refused (JSON parsers keep either one).
struct Fields(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let mut fields: Vec<(String, Value)> = Vec::new();
                // A set, not a scan of `fields`: a line of a megabyte can hold 100,000 keys.
                let mut seen = std::collections::HashSet::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicated key `{key}`")));
                    }
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn flatten(key: &str, value: Value) -> Result<Option<MetaValue>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => MetaValue::Bool(b),
        Value::String(s) => MetaValue::Str(s),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => MetaValue::Int(i),
            // Beyond what a signed 64-bit integer holds, and so beyond what a double holds
            // exactly: kept exactly, as text.
            (None, Some(u)) => MetaValue::Str(u.to_string()),
            (None, None) => MetaValue::Float(
                n.as_f64()
                    .ok_or_else(|| format!("field `{key}`: number out of range"))?,
            ),
        },
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => parts.push(s),
                    Value::Number(n) => parts.push(n.to_string()),
                    Value::Bool(b) => parts.push(b.to_string()),
                    Value::Null => {}
                    _ => {
                        return Err(format!(
                            "field `{key}`: a list holding a list or an object cannot be flattened"
                        ))
                    }
                }
            }
            MetaValue::Str(parts.join(", "))
        }
        Value::Object(_) => {
            return Err(format!(
                "field `{key}`: an object cannot be flattened into metadata"
            ))
        }
    }))
}
