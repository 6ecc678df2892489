//! The control API's bodies, defined once for the server ([`super::api`]) and the client
//! ([`super::client`]), so the wire format cannot drift between them.
//!
//! Requests serialize with serde (the client) and are read back by a checking parser (the
//! server) that names the offending key and keeps every value's bounds; a test holds that
//! what the client sends is what the server reads. Answers are the service's own types
//! ([`TorrentView`], [`ServiceStats`], [`PeerInfo`]) and the small ones here. Keys of the
//! structs are in alphabetical order: that is the order the bodies have on the wire (JSON
//! objects built as maps are sorted).

use serde::Serialize;
use serde_json::{Map, Value};

use super::ControlError;
use crate::state::GlobalLimits;

pub use super::{ServiceStats, TorrentView};
pub use crate::engine::PeerInfo;

/// Largest rate limit, KiB/s (16 TiB/s: "unlimited" is 0, not a huge number).
pub const MAX_RATE_KIB: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0;
/// Largest ratio limit.
pub const MAX_RATIO: f64 = 1e6;
/// Largest seed-time limit, minutes (ten years).
pub const MAX_SEED_TIME_MIN: f64 = 5_256_000.0;

/// `POST /api/v1/torrents`: exactly one of `torrent` (a base64 .torrent), `path` (a .torrent
/// on the node's machine) or `magnet`.
///
/// ```
/// use ringseed::control::types::AddRequest;
/// let r = AddRequest { path: Some("/srv/a.torrent".into()), ..AddRequest::default() };
/// assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"path":"/srv/a.torrent","paused":false}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddRequest {
    /// A category the node has; without `save_path` the torrent goes to its save path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Added paused (absent or null: false).
    pub paused: bool,
    /// Data directory inside the node's data root (absent: the data root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_path: Option<String>,
    /// Absent: the node's `torrents.skip_check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_check: Option<bool>,
    /// Tags (unknown ones join the node's set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torrent: Option<String>,
}

/// The keys an [`AddRequest`] may have, in the order the refusal of another key lists them.
const ADD_KEYS: &[&str] = &[
    "torrent",
    "path",
    "magnet",
    "save_path",
    "paused",
    "skip_check",
    "category",
    "tags",
];

impl AddRequest {
    /// The base64 text of a .torrent file's bytes, for [`AddRequest::torrent`].
    pub fn encode_torrent(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Reads a request body. A null value counts as absent, except that a null `torrent`,
    /// `path` or `magnet` still counts as the one given (and then names no file).
    pub fn from_json(body: &[u8]) -> Result<AddRequest, ControlError> {
        let m = parse_object(body)?;
        reject_unknown(&m, ADD_KEYS)?;
        let save_path = opt_str(&m, "save_path")?.map(str::to_string);
        let paused = opt_bool(&m, "paused")?.unwrap_or(false);
        let skip_check = opt_bool(&m, "skip_check")?;
        let given = ["torrent", "path", "magnet"]
            .iter()
            .filter(|k| m.contains_key(**k))
            .count();
        if given != 1 {
            return Err(ControlError::BadRequest(
                "give exactly one of \"torrent\" (base64 .torrent), \"path\" or \"magnet\"".into(),
            ));
        }
        Ok(AddRequest {
            magnet: opt_str(&m, "magnet")?.map(str::to_string),
            torrent: opt_str(&m, "torrent")?.map(str::to_string),
            path: opt_str(&m, "path")?.map(str::to_string),
            paused,
            save_path,
            skip_check,
            category: opt_str(&m, "category")?.map(str::to_string),
            tags: opt_strings(&m, "tags")?,
        })
    }
}

/// A change to one limit: absent keeps it, null returns it to the global value, a number sets
/// it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum LimitChange {
    #[default]
    Keep,
    Global,
    Set(f64),
}

impl LimitChange {
    fn is_keep(&self) -> bool {
        *self == LimitChange::Keep
    }

    /// The change a command-line value asks for: "none" is [`LimitChange::Global`].
    pub fn from_arg(value: &str) -> Result<LimitChange, std::num::ParseFloatError> {
        if value == "none" {
            Ok(LimitChange::Global)
        } else {
            value.parse::<f64>().map(LimitChange::Set)
        }
    }

    /// Applies the change to `current`, `f` turning the number into the stored unit.
    pub fn apply<T>(self, current: Option<T>, f: impl FnOnce(f64) -> T) -> Option<T> {
        match self {
            LimitChange::Keep => current,
            LimitChange::Global => None,
            LimitChange::Set(v) => Some(f(v)),
        }
    }

    fn read(m: &Map<String, Value>, key: &str, max: f64) -> Result<LimitChange, ControlError> {
        match m.get(key) {
            None => Ok(LimitChange::Keep),
            Some(Value::Null) => Ok(LimitChange::Global),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && (0.0..=max).contains(&v) => Ok(LimitChange::Set(v)),
                _ => Err(ControlError::BadRequest(format!(
                    "{key:?} = {n}: allowed 0..={max}, or null for the global value"
                ))),
            },
            Some(_) => Err(ControlError::BadRequest(format!(
                "{key:?} must be a number or null"
            ))),
        }
    }
}

impl Serialize for LimitChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Keep is skipped by the structs; alone it can only be "no change".
            LimitChange::Keep | LimitChange::Global => s.serialize_none(),
            LimitChange::Set(v) => s.serialize_f64(*v),
        }
    }
}

/// `PUT /api/v1/torrents/{hash}/limits` (without `torrent_upload_rate_kib`) and
/// `PUT /api/v1/limits`: rates in KiB/s, seed time in minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LimitsRequest {
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub ratio: LimitChange,
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub seed_time_min: LimitChange,
    /// Torrent only: seeding minutes without payload activity (fractions allowed).
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub inactive_seed_time_min: LimitChange,
    /// Global only: the rate of each torrent without its own limit.
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub torrent_upload_rate_kib: LimitChange,
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub upload_rate_kib: LimitChange,
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub download_rate_kib: LimitChange,
    /// Global only: the download rate of each torrent without its own limit.
    #[serde(skip_serializing_if = "LimitChange::is_keep")]
    pub torrent_download_rate_kib: LimitChange,
}

impl LimitsRequest {
    /// Whether it changes nothing (`ringseed ctl limits` then shows the limits).
    pub fn is_empty(&self) -> bool {
        *self == LimitsRequest::default()
    }

    /// Reads a torrent's limits body (`global` false) or the global one; every value is checked
    /// before anything changes.
    pub fn from_json(body: &[u8], global: bool) -> Result<LimitsRequest, ControlError> {
        let m = parse_object(body)?;
        if global {
            reject_unknown(
                &m,
                &[
                    "upload_rate_kib",
                    "torrent_upload_rate_kib",
                    "download_rate_kib",
                    "torrent_download_rate_kib",
                    "ratio",
                    "seed_time_min",
                ],
            )?;
        } else {
            reject_unknown(
                &m,
                &[
                    "upload_rate_kib",
                    "download_rate_kib",
                    "ratio",
                    "seed_time_min",
                    "inactive_seed_time_min",
                ],
            )?;
        }
        let upload_rate_kib = LimitChange::read(&m, "upload_rate_kib", MAX_RATE_KIB)?;
        let (torrent_upload_rate_kib, torrent_download_rate_kib) = if global {
            (
                LimitChange::read(&m, "torrent_upload_rate_kib", MAX_RATE_KIB)?,
                LimitChange::read(&m, "torrent_download_rate_kib", MAX_RATE_KIB)?,
            )
        } else {
            (LimitChange::Keep, LimitChange::Keep)
        };
        Ok(LimitsRequest {
            upload_rate_kib,
            torrent_upload_rate_kib,
            download_rate_kib: LimitChange::read(&m, "download_rate_kib", MAX_RATE_KIB)?,
            torrent_download_rate_kib,
            ratio: LimitChange::read(&m, "ratio", MAX_RATIO)?,
            seed_time_min: LimitChange::read(&m, "seed_time_min", MAX_SEED_TIME_MIN)?,
            inactive_seed_time_min: if global {
                LimitChange::Keep
            } else {
                LimitChange::read(&m, "inactive_seed_time_min", MAX_SEED_TIME_MIN)?
            },
        })
    }
}

/// Most addresses in one `POST /api/v1/torrents/{hash}/peers`.
pub const MAX_PEERS_PER_REQUEST: usize = 100;

/// `POST /api/v1/torrents/{hash}/peers`: peer addresses (`IP:port`, `[IPv6]:port`) to fetch a
/// magnet's metadata from, or a torrent's data.
///
/// ```
/// use ringseed::control::types::AddPeersRequest;
/// let r = AddPeersRequest { peers: vec!["127.0.0.1:6881".into()] };
/// assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"peers":["127.0.0.1:6881"]}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddPeersRequest {
    pub peers: Vec<String>,
}

impl AddPeersRequest {
    /// Reads a request body: 1 to [`MAX_PEERS_PER_REQUEST`] addresses, each an IP address and
    /// a port that can be dialled (no port 0, no unspecified, multicast or broadcast address).
    pub fn from_json(body: &[u8]) -> Result<Vec<std::net::SocketAddr>, ControlError> {
        let m = parse_object(body)?;
        reject_unknown(&m, &["peers"])?;
        let bad = |why: String| ControlError::BadRequest(format!("\"peers\": {why}"));
        let Some(Value::Array(list)) = m.get("peers") else {
            return Err(bad("must be a list of \"IP:port\" strings".into()));
        };
        if list.is_empty() || list.len() > MAX_PEERS_PER_REQUEST {
            return Err(bad(format!(
                "{} addresses; give 1 to {MAX_PEERS_PER_REQUEST}",
                list.len()
            )));
        }
        list.iter()
            .map(|v| {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad(format!("{v} is not a string")))?;
                let a: std::net::SocketAddr = s
                    .parse()
                    .map_err(|_| bad(format!("{s:?} is not IP:port")))?;
                let ip = a.ip();
                let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
                if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
                    return Err(bad(format!("{s:?} cannot be dialled")));
                }
                Ok(a)
            })
            .collect()
    }
}

/// The answer to `DELETE /api/v1/torrents/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RemoveResponse {
    /// Its data was deleted, every file of it but those in `kept` (none in `not_deleted`).
    pub data_deleted: bool,
    /// Files left in place because another torrent names them too (cross-seeding).
    #[serde(default)]
    pub kept: Vec<String>,
    /// Files that could not be deleted, each with why (the torrent is removed all the same).
    #[serde(default)]
    pub not_deleted: Vec<String>,
    /// The info-hash as the request gave it.
    pub removed: String,
}

/// The answer of `GET`/`PUT /api/v1/limits`: what the API set (null = the config's) and what
/// is in force.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GlobalLimitsView {
    pub in_force: GlobalLimits,
    pub set: GlobalLimits,
}

/// Every error answer: `{"error": "…"}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /api/v1/categories` (`name`, `save_path`) and `PUT /api/v1/categories/{name}`
/// (`save_path`): `""` or absent is the data root, a relative path is under it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub save_path: String,
}

/// `POST /api/v1/tags` (create) and `DELETE`-like `POST /api/v1/tags/delete`: a list of tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    pub tags: Vec<String>,
}

/// `PUT /api/v1/torrents/{hash}/tags`: tags to add and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentTagsRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `PUT /api/v1/torrents/{hash}/category`: a category name, or null for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCategoryRequest {
    pub category: Option<String>,
}

/// `PUT /api/v1/settings`: queueing and the share-limit action. Absent keys stay; null returns
/// a key to the config's value. `inactive_seed_time_min` may have fractions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double"
    )]
    pub queueing: Option<Option<bool>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double"
    )]
    pub max_active_downloads: Option<Option<i64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double"
    )]
    pub max_active_uploads: Option<Option<i64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double"
    )]
    pub max_active_torrents: Option<Option<i64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double"
    )]
    pub limit_action: Option<Option<crate::config::LimitAction>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double"
    )]
    pub inactive_seed_time_min: Option<Option<f64>>,
}

/// The answer of `GET`/`PUT /api/v1/settings`: what the API set (null = the config's) and
/// what is in force.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SettingsView {
    pub in_force: super::OrgSettings,
    pub set: crate::state::GlobalSettings,
}

/// A key that may be absent (outer `None`), null (`Some(None)`) or a value.
fn double<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Reads a typed body; an unknown key or a wrong type is named in the error.
pub fn from_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| ControlError::BadRequest(format!("body: {e}")))
}

fn opt_strings(m: &Map<String, Value>, k: &str) -> Result<Vec<String>, ControlError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ControlError::BadRequest(format!("{k:?}: {v} is not a string")))
            })
            .collect(),
        Some(_) => Err(ControlError::BadRequest(format!(
            "{k:?} must be a list of strings"
        ))),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ControlError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ControlError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ControlError::BadRequest(format!("malformed JSON: {e}"))),
    }
}

fn reject_unknown(m: &Map<String, Value>, known: &[&str]) -> Result<(), ControlError> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ControlError::BadRequest(format!(
            "unknown key {k:?}; allowed: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, ControlError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ControlError::BadRequest(format!("{k:?} must be a string"))),
    }
}

fn opt_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, ControlError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ControlError::BadRequest(format!(
            "{k:?} must be true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn add_requests_round_trip() {
        let full = AddRequest {
            magnet: None,
            path: None,
            paused: true,
            save_path: Some("sub".into()),
            skip_check: Some(true),
            torrent: Some(AddRequest::encode_torrent(b"d4:infod0:ee")),
            category: Some("tv".into()),
            tags: vec!["a".into(), "b".into()],
        };
        let path = AddRequest {
            path: Some("/srv/a.torrent".into()),
            ..AddRequest::default()
        };
        let magnet = AddRequest {
            magnet: Some("magnet:?xt=urn:btih:00".into()),
            ..AddRequest::default()
        };
        for r in [full, path, magnet] {
            assert_eq!(AddRequest::from_json(wire(&r).as_bytes()).unwrap(), r);
        }
        // What `ctl add --path` has always sent.
        let by_hand = serde_json::json!({ "path": "p", "paused": false });
        let typed = AddRequest {
            path: Some("p".into()),
            ..AddRequest::default()
        };
        assert_eq!(wire(&typed), by_hand.to_string());
    }

    #[test]
    fn add_requests_are_checked() {
        let err = |b: &str| AddRequest::from_json(b.as_bytes()).unwrap_err().to_string();
        assert!(err(r#"{"path":"a","nope":1}"#).starts_with("unknown key \"nope\""));
        assert!(err(r#"{"paused":false}"#).starts_with("give exactly one of"));
        assert!(err(r#"{"path":"a","torrent":"b"}"#).starts_with("give exactly one of"));
        assert_eq!(err(r#"{"path":1}"#), "\"path\" must be a string");
        assert_eq!(
            err(r#"{"path":"a","paused":"yes"}"#),
            "\"paused\" must be true or false"
        );
        assert_eq!(err("[]"), "the body must be a JSON object");
        // A null source still counts as the one given.
        let r = AddRequest::from_json(br#"{"torrent":null}"#).unwrap();
        assert_eq!((r.torrent, r.path, r.magnet), (None, None, None));
    }

    #[test]
    fn limits_round_trip_with_null_for_global() {
        let r = LimitsRequest {
            ratio: LimitChange::Set(2.0),
            seed_time_min: LimitChange::Global,
            torrent_upload_rate_kib: LimitChange::Keep,
            upload_rate_kib: LimitChange::Set(100.0),
            download_rate_kib: LimitChange::Keep,
            torrent_download_rate_kib: LimitChange::Keep,
            inactive_seed_time_min: LimitChange::Keep,
        };
        assert_eq!(
            wire(&r),
            r#"{"ratio":2.0,"seed_time_min":null,"upload_rate_kib":100.0}"#
        );
        assert_eq!(
            LimitsRequest::from_json(wire(&r).as_bytes(), false).unwrap(),
            r
        );
        let g = LimitsRequest {
            torrent_upload_rate_kib: LimitChange::Set(5.0),
            download_rate_kib: LimitChange::Keep,
            torrent_download_rate_kib: LimitChange::Keep,
            ..LimitsRequest::default()
        };
        assert_eq!(
            LimitsRequest::from_json(wire(&g).as_bytes(), true).unwrap(),
            g
        );
        assert!(LimitsRequest::from_json(wire(&g).as_bytes(), false).is_err());
        assert!(LimitsRequest::default().is_empty() && wire(&LimitsRequest::default()) == "{}");
        let e = LimitsRequest::from_json(br#"{"ratio":-1}"#, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"ratio\" = -1: allowed 0..=1000000, or null for the global value"
        );
        assert_eq!(LimitChange::from_arg("none"), Ok(LimitChange::Global));
        assert_eq!(LimitChange::from_arg("1.5"), Ok(LimitChange::Set(1.5)));
        assert!(LimitChange::from_arg("fast").is_err());
    }

    #[test]
    fn peer_requests_round_trip_and_are_checked() {
        let r = AddPeersRequest {
            peers: vec!["127.0.0.1:6881".into(), "[::1]:7".into()],
        };
        assert_eq!(
            AddPeersRequest::from_json(wire(&r).as_bytes()).unwrap(),
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:7".parse().unwrap()
            ]
        );
        let err = |b: &str| {
            AddPeersRequest::from_json(b.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"peers":[],"x":1}"#).starts_with("unknown key \"x\""));
        assert!(err(r#"{"peers":[]}"#).contains("0 addresses"));
        assert!(err(r#"{}"#).contains("must be a list"));
        assert!(err(r#"{"peers":"1.2.3.4:5"}"#).contains("must be a list"));
        assert!(err(r#"{"peers":[5]}"#).contains("5 is not a string"));
        assert!(err(r#"{"peers":["example.org:80"]}"#).contains("is not IP:port"));
        for bad in ["1.2.3.4:0", "0.0.0.0:1", "224.0.0.1:1", "255.255.255.255:1"] {
            let e = err(&format!(r#"{{"peers":["{bad}"]}}"#));
            assert!(e.contains("cannot be dialled"), "{bad}: {e}");
        }
        let many = AddPeersRequest {
            peers: vec!["127.0.0.1:1".into(); MAX_PEERS_PER_REQUEST + 1],
        };
        assert!(AddPeersRequest::from_json(wire(&many).as_bytes()).is_err());
    }

    #[test]
    fn small_answers_keep_their_keys() {
        let r = RemoveResponse {
            data_deleted: false,
            removed: "ab".into(),
            kept: vec!["/d/x".into()],
            not_deleted: Vec::new(),
        };
        assert_eq!(
            wire(&r),
            serde_json::json!({
                "removed": "ab", "data_deleted": false, "kept": ["/d/x"], "not_deleted": []
            })
            .to_string()
        );
        let e = ErrorBody { error: "no".into() };
        assert_eq!(wire(&e), r#"{"error":"no"}"#);
    }
}
