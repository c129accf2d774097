//! A writer's own change to a status, applied on what is stored now: the fields this writer
//! changed since `base` (what it read or last wrote) are set, every other field keeps what
//! others wrote meanwhile. Lists of conditions, targets, hosts and snapshots are matched by
//! their key (type, ref, hostname, name), so two writers that each change their own entry both
//! keep it. A session that someone else has ended (Failed past its deadline, Skipped) keeps
//! that ending: a writer that did not see it does not undo it.

use coffer_api::{backup::SessionPhase, Kind, Resource};
use serde_json::Value;

use crate::catalog::{update_status, Catalog};

/// Writes the change from `base` to `mine` (the same resource) through `cat`, retried on
/// conflict. Returns the resource as written, or None (logged) when it could not be written.
pub fn write_change(cat: &dyn Catalog, base: &Resource, mine: &Resource) -> Option<Resource> {
    let base_status = status_of(base);
    let mine_status = status_of(mine);
    if base_status == mine_status {
        return Some(mine.clone());
    }
    let kind = mine.kind();
    update_status(cat, kind, mine.namespace(), mine.name(), &mut |stored| {
        let mut body = stored.to_json();
        let mut st = body.get("status").cloned().unwrap_or(Value::Null);
        merge_status(kind, &mut st, &base_status, &mine_status);
        let o = body.as_object_mut().expect("a resource is an object");
        if st.is_null() {
            o.remove("status");
        } else {
            o.insert("status".into(), st);
        }
        match Resource::from_json(kind, body) {
            Ok(r) => *stored = r,
            // Cannot happen: both sides were resources of this kind.
            Err(p) => tracing::error!("merging the status of {}: {p}", stored.display_name()),
        }
    })
}

fn status_of(r: &Resource) -> Value {
    r.to_json().get("status").cloned().unwrap_or(Value::Null)
}

/// Applies base -> mine onto `stored`, keeping a phase that another writer ended the session
/// with (and its error).
fn merge_status(kind: Kind, stored: &mut Value, base: &Value, mine: &Value) {
    let ended = |v: &Value| {
        v.get("phase")
            .and_then(Value::as_str)
            // Final phases, once stored by another writer, are not overwritten.
            .filter(|p| SessionPhase::parse(p).is_final())
            .map(str::to_string)
    };
    let session = matches!(kind, Kind::BackupSession | Kind::RestoreSession);
    let ended_by_other =
        ended(stored).filter(|p| session && base.get("phase") != Some(&Value::from(p.as_str())));
    let kept = ended_by_other.map(|_| (stored.get("phase").cloned(), stored.get("error").cloned()));
    merge(stored, base, mine);
    if let Some((phase, error)) = kept {
        if let Some(o) = stored.as_object_mut() {
            for (k, v) in [("phase", phase), ("error", error)] {
                match v {
                    Some(v) => o.insert(k.into(), v),
                    None => o.remove(k),
                };
            }
        }
    }
}

/// Writes one writer's successive changes to one resource: each write carries what changed
/// since the previous one this writer made.
pub struct StatusWriter<'a> {
    cat: &'a dyn Catalog,
    base: Resource,
}

impl<'a> StatusWriter<'a> {
    /// A writer whose changes are counted from `read`, the resource as this writer got it.
    pub fn new(cat: &'a dyn Catalog, read: Resource) -> StatusWriter<'a> {
        StatusWriter { cat, base: read }
    }

    /// Writes what changed in `mine` since the last write (retried on conflict; a failure is
    /// logged and its change is carried by the next write). Returns whether it was written.
    pub fn write(&mut self, mine: Resource) -> bool {
        let ok = write_change(self.cat, &self.base, &mine).is_some();
        if ok {
            self.base = mine;
        }
        ok
    }
}

/// Three-way merge of one JSON value: what changed from `base` to `mine` is applied to `stored`.
pub(crate) fn merge(stored: &mut Value, base: &Value, mine: &Value) {
    if base == mine {
        return;
    }
    match (mine, stored.is_object()) {
        (Value::Object(m), true) => {
            let empty = serde_json::Map::new();
            let b = base.as_object().unwrap_or(&empty);
            let s = stored.as_object_mut().expect("object");
            let keys: std::collections::BTreeSet<String> =
                m.keys().chain(b.keys()).cloned().collect();
            for k in keys {
                let bv = b.get(&k).unwrap_or(&Value::Null);
                let mv = m.get(&k).unwrap_or(&Value::Null);
                if bv == mv {
                    continue;
                }
                if mv.is_null() {
                    s.remove(&k);
                    continue;
                }
                let sv = s.entry(k).or_insert(Value::Null);
                merge(sv, bv, mv);
            }
        }
        (Value::Array(m), _) if stored.is_array() && key_of_items(m).is_some() => {
            let key = key_of_items(m).expect("checked");
            let empty = Vec::new();
            let b = base.as_array().unwrap_or(&empty);
            let s = stored.as_array_mut().expect("array");
            let find =
                |items: &[Value], id: &Value| items.iter().position(|i| i.get(key) == Some(id));
            for item in m {
                let id = item.get(key).expect("keyed");
                let bi = find(b, id).map(|i| &b[i]).unwrap_or(&Value::Null);
                if bi == item {
                    continue;
                }
                match find(s, id) {
                    Some(i) => merge(&mut s[i], bi, item),
                    None => s.push(item.clone()),
                }
            }
            for gone in b.iter().filter_map(|i| i.get(key)) {
                if find(m, gone).is_none() {
                    s.retain(|i| i.get(key) != Some(gone));
                }
            }
        }
        _ => *stored = mine.clone(),
    }
}

/// The field that names each item of a list of objects, when every item has one.
fn key_of_items(items: &[Value]) -> Option<&'static str> {
    ["type", "hostname", "ref", "name"]
        .into_iter()
        .find(|k| !items.is_empty() && items.iter().all(|i| i.get(*k).is_some()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::catalog::MemoryCatalog;

    #[test]
    fn only_this_writers_changes_are_applied() {
        let base = json!({"phase": "Running", "conditions": [{"type": "A", "status": "True"}],
            "targets": [{"ref": {"name": "t"}, "stats": [{"hostname": "host-0"}, {"hostname": "host-1"}]}]});
        // Another replica finished host-1, the server set nextRetry and a condition.
        let mut stored = json!({"phase": "Running", "nextRetry": "soon",
            "conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}],
            "targets": [{"ref": {"name": "t"}, "stats": [{"hostname": "host-0"}, {"hostname": "host-1", "phase": "Succeeded"}]}]});
        let mine = json!({"phase": "Running", "conditions": [{"type": "A", "status": "False"}],
            "targets": [{"ref": {"name": "t"}, "stats": [{"hostname": "host-0", "phase": "Succeeded"}, {"hostname": "host-1"}]}]});
        merge_status(Kind::BackupSession, &mut stored, &base, &mine);
        assert_eq!(
            stored,
            json!({"phase": "Running", "nextRetry": "soon",
                "conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}],
                "targets": [{"ref": {"name": "t"}, "stats": [{"hostname": "host-0", "phase": "Succeeded"}, {"hostname": "host-1", "phase": "Succeeded"}]}]})
        );
    }

    #[test]
    fn a_session_ended_by_someone_else_stays_ended() {
        let base = json!({"phase": "Running"});
        let mut stored = json!({"phase": "Failed", "error": "past its deadline"});
        let mine = json!({"phase": "Succeeded", "sessionDuration": "5s"});
        merge_status(Kind::BackupSession, &mut stored, &base, &mine);
        assert_eq!(
            stored,
            json!({"phase": "Failed", "error": "past its deadline", "sessionDuration": "5s"})
        );
        // Its own ending is overwritten by itself, as any other field.
        let mut stored = json!({"phase": "Running"});
        merge_status(Kind::BackupSession, &mut stored, &base, &mine);
        assert_eq!(stored["phase"], "Succeeded");
    }

    #[test]
    fn write_change_keeps_a_concurrent_writers_field() {
        let s = coffer_api::parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\nmetadata: {name: s}\n\
             spec: {invoker: {apiGroup: stash.appscode.com, kind: BackupConfiguration, name: b}}\n",
            "t.yaml",
        )
        .unwrap()
        .remove(0);
        let cat = MemoryCatalog::with([s]);
        let base = cat
            .get(Kind::BackupSession, "default", "s")
            .unwrap()
            .unwrap();
        let other = write_change(&cat, &base, &{
            let mut r = base.clone();
            if let Resource::BackupSession(b) = &mut r {
                b.status_mut().next_retry = Some("later".into());
            }
            r
        });
        assert!(other.is_some());
        let mut mine = base.clone();
        if let Resource::BackupSession(b) = &mut mine {
            b.status_mut().error = Some("mine".into());
        }
        let Some(Resource::BackupSession(w)) = write_change(&cat, &base, &mine) else {
            panic!("not written")
        };
        let st = w.status.unwrap();
        assert_eq!(st.error.as_deref(), Some("mine"));
        assert_eq!(st.next_retry.as_deref(), Some("later"));
    }
}
