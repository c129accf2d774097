//! Reading what the `restic` CLI says about a repository.

use std::collections::BTreeMap;

/// The files in the output of `restic ls --json`, by path, with the size each records.
pub fn ls_file_sizes(ls_json: &str) -> BTreeMap<String, u64> {
    ls_json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "file")
        .filter_map(|v| Some((v["path"].as_str()?.to_string(), v["size"].as_u64()?)))
        .collect()
}
