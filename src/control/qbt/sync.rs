//! `sync/maindata`: the polling API dashboards use. Each session remembers its last answer and
//! the one the client acknowledged last (by sending its `rid` back); a request naming either
//! gets only what changed since, anything else a full answer (qBittorrent 4.5.2
//! `SyncController`). Pure: the caller builds the full data.

use serde_json::{Map, Value, json};

/// `rid`s cycle 1…this.
const MAX_RID: u64 = 1_000_000;

/// What one session was sent: at most two snapshots, so a session's memory is bounded by
/// twice the size of one answer.
#[derive(Debug, Clone, Default)]
pub struct History {
    last: Option<(u64, Map<String, Value>)>,
    acked: Option<(u64, Map<String, Value>)>,
}

impl History {
    /// The answer to a request with `rid` when the data is now `full` (with `categories`,
    /// `server_state`, `tags`, `torrents`, `trackers`).
    pub fn answer(&mut self, rid: i64, full: Map<String, Value>) -> Map<String, Value> {
        let names = |h: &Option<(u64, Map<String, Value>)>| {
            rid > 0 && h.as_ref().is_some_and(|(r, _)| *r as i64 == rid)
        };
        // the base snapshot is moved out, not copied (one answer's worth per poll)
        let (base, from_last) = if names(&self.last) {
            (self.last.take(), true)
        } else if names(&self.acked) {
            (self.acked.take(), false)
        } else {
            (None, false)
        };
        let next = match (&base, from_last) {
            (Some((r, _)), true) => r % MAX_RID + 1,
            (Some(_), false) => self.last.as_ref().map_or(1, |(r, _)| r % MAX_RID + 1),
            (None, _) => 1,
        };
        let mut out = match &base {
            Some((_, old)) => delta(old, &full),
            None => {
                let mut m = full.clone();
                m.insert("full_update".into(), json!(true));
                m
            }
        };
        out.insert("rid".into(), json!(next));
        self.acked = base;
        self.last = Some((next, full));
        out
    }
}

fn object_delta(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    new.iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn empty() -> Map<String, Value> {
    Map::new()
}

/// Per-item delta of a map of objects (`torrents`, `categories`): new items whole, changed ones
/// with their changed fields; the names of removed ones.
fn items_delta(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> (Map<String, Value>, Vec<Value>) {
    let mut changed = Map::new();
    for (k, v) in new {
        match (old.get(k), v) {
            (Some(Value::Object(o)), Value::Object(n)) => {
                let d = object_delta(o, n);
                if !d.is_empty() {
                    changed.insert(k.clone(), Value::Object(d));
                }
            }
            (Some(o), n) if o == n => {}
            _ => {
                changed.insert(k.clone(), v.clone());
            }
        }
    }
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| json!(k))
        .collect();
    (changed, removed)
}

/// What changed from `old` to `new`, in qBittorrent's delta form.
pub fn delta(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let obj = |m: &Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(empty)
    };
    let mut out = Map::new();
    for (key, removed_key) in [
        ("torrents", "torrents_removed"),
        ("categories", "categories_removed"),
    ] {
        let (changed, removed) = items_delta(&obj(old, key), &obj(new, key));
        if !changed.is_empty() {
            out.insert(key.into(), Value::Object(changed));
        }
        if !removed.is_empty() {
            out.insert(removed_key.into(), Value::Array(removed));
        }
    }
    let state = object_delta(&obj(old, "server_state"), &obj(new, "server_state"));
    if !state.is_empty() {
        out.insert("server_state".into(), Value::Object(state));
    }
    let list = |m: &Map<String, Value>| {
        m.get("tags")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (old_tags, new_tags) = (list(old), list(new));
    let added: Vec<Value> = new_tags
        .iter()
        .filter(|t| !old_tags.contains(t))
        .cloned()
        .collect();
    let gone: Vec<Value> = old_tags
        .iter()
        .filter(|t| !new_tags.contains(t))
        .cloned()
        .collect();
    if !added.is_empty() {
        out.insert("tags".into(), Value::Array(added));
    }
    if !gone.is_empty() {
        out.insert("tags_removed".into(), Value::Array(gone));
    }
    // a tracker whose list of torrents changed is sent whole
    let (changed, removed) = items_delta(&obj(old, "trackers"), &obj(new, "trackers"));
    let whole: Map<String, Value> = changed
        .keys()
        .filter_map(|k| obj(new, "trackers").get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    if !whole.is_empty() {
        out.insert("trackers".into(), Value::Object(whole));
    }
    if !removed.is_empty() {
        out.insert("trackers_removed".into(), Value::Array(removed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn full_then_deltas() {
        let mut h = History::default();
        let d1 = data(
            json!({"categories":{},"server_state":{"dl_info_speed":0},"tags":["a"],
            "torrents":{"h1":{"name":"x","state":"stalledUP"},"h2":{"name":"y","state":"metaDL"}},
            "trackers":{"http://t/announce":["h1","h2"]}}),
        );
        let full = h.answer(0, d1.clone());
        assert_eq!(full["rid"], json!(1));
        assert_eq!(full["full_update"], json!(true));
        assert_eq!(full["torrents"]["h1"]["name"], json!("x"));
        let same = h.answer(1, d1.clone());
        assert_eq!(Value::Object(same), json!({"rid": 2}), "nothing changed");
        let d2 = data(
            json!({"categories":{},"server_state":{"dl_info_speed":5},"tags":["a","b"],
            "torrents":{"h1":{"name":"x","state":"stoppedUP"}},
            "trackers":{"http://t/announce":["h1"]}}),
        );
        let d = h.answer(2, d2.clone());
        assert_eq!(
            Value::Object(d),
            json!({"rid":3,"server_state":{"dl_info_speed":5},"tags":["b"],
                "torrents":{"h1":{"state":"stoppedUP"}},"torrents_removed":["h2"],
                "trackers":{"http://t/announce":["h1"]}})
        );
        // the client missed rid 3 and asks from 2 again: delta against 2 (the acknowledged one)
        let again = h.answer(2, d2.clone());
        assert_eq!(again["rid"], json!(4));
        assert_eq!(again["torrents_removed"], json!(["h2"]));
        // an unknown rid: full
        assert_eq!(h.answer(77, d2)["full_update"], json!(true));
    }
}
