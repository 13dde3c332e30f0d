//! A record as the engine writes it into any vector store (Chroma's record: id, document,
//! metadata, embedding), and its metadata: one definition below the sources that make records'
//! text and metadata, the stores that write them and the manifest that hashes them.

pub mod keys;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A metadata value as vector stores accept it (Chroma takes str, int, float and bool).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for MetaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

impl From<&str> for MetaValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for MetaValue {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

pub type Metadata = BTreeMap<String, MetaValue>;

/// One record: `id` unique in its collection, `embedding` of the collection's dimension.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    pub id: String,
    pub document: String,
    pub metadata: Metadata,
    pub embedding: Vec<f32>,
}
