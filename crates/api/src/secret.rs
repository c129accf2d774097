//! `v1` Secret: credentials for repositories and databases.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    /// base64-encoded values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain values; merged into `data` when the Secret is stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

// Never print secret values, not even in debug output.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("keys", &self.keys())
            .finish()
    }
}

impl Secret {
    /// Moves `stringData` into `data` (as the API server does) so only one form is stored.
    pub fn normalise(&mut self) {
        let engine = base64::engine::general_purpose::STANDARD;
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data.insert(k, engine.encode(v.as_bytes()));
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self
            .data
            .keys()
            .chain(self.string_data.keys())
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    /// The decoded value of a key, if present and valid base64.
    pub fn get_bytes(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.string_data.get(key) {
            return Some(v.as_bytes().to_vec());
        }
        let v = self.data.get(key)?;
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()
    }

    /// The decoded value of a key as UTF-8 text.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_bytes(key).and_then(|b| String::from_utf8(b).ok())
    }

    /// A copy safe to print: every value replaced by its length.
    pub fn redacted(&self) -> Secret {
        let mut s = self.clone();
        s.normalise();
        for (k, v) in s.data.iter_mut() {
            let n = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map(|b| b.len())
                .unwrap_or(0);
            let _ = k;
            *v = format!("<redacted: {n} bytes>");
        }
        s
    }
}
