//! The client side of the control API, for `ringseed ctl`: one request, a JSON answer.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::types::{
    AddPeersRequest, AddRequest, CategoryRequest, ErrorBody, LimitsRequest, SetCategoryRequest,
    SettingsRequest, TagsRequest, TorrentTagsRequest,
};

/// What went wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP client setup: {0}")]
    Setup(String),
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    /// The API answered with an error status; `message` is its `error` field.
    #[error("{status}: {message}")]
    Api { status: u16, message: String },
    #[error("request body: {0}")]
    Body(String),
    #[error("{url}: the answer is not JSON: {detail}")]
    NotJson { url: String, detail: String },
}

/// Largest answer read (a list of a million torrents is well under this).
const MAX_ANSWER: usize = 1 << 30;

/// A connection to one node's control API.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ApiClient {
    /// `base` like `http://127.0.0.1:9708`.
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, ClientError> {
        let setup = |e: &dyn std::fmt::Display| ClientError::Setup(e.to_string());
        let tls = crate::tracker::client::tls_config().map_err(|e| setup(&e))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(120))
            .no_proxy()
            .build()
            .map_err(|e| setup(&e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(&e))?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            runtime,
        })
    }

    /// Sends one `ringseed ctl` request and returns the API's answer as it came.
    pub fn send(&self, request: &Request) -> Result<Value, ClientError> {
        let torrent = |h: &str| format!("/api/v1/torrents/{h}");
        match request {
            Request::List => self.call(Method::GET, "/api/v1/torrents", None),
            Request::Show(hash) => self.call(Method::GET, &torrent(hash), None),
            Request::Add(add) => self.call(Method::POST, "/api/v1/torrents", Some(&to_body(add)?)),
            Request::Remove { hash, delete_data } => self.call(
                Method::DELETE,
                &format!("{}?delete_data={delete_data}", torrent(hash)),
                None,
            ),
            Request::Pause(hash) => self.call(Method::POST, &(torrent(hash) + "/pause"), None),
            Request::Resume(hash) => self.call(Method::POST, &(torrent(hash) + "/resume"), None),
            Request::Recheck(hash) => self.call(Method::POST, &(torrent(hash) + "/recheck"), None),
            Request::Peers(hash) => self.call(Method::GET, &(torrent(hash) + "/peers"), None),
            Request::AddPeers { hash, peers } => self.call(
                Method::POST,
                &(torrent(hash) + "/peers"),
                Some(&to_body(peers)?),
            ),
            Request::Limits { hash, change } => {
                let path = match hash {
                    Some(h) => torrent(h) + "/limits",
                    None => "/api/v1/limits".to_string(),
                };
                match (hash, change.is_empty()) {
                    // Nothing to change: show them (a torrent's are part of its view).
                    (Some(h), true) => {
                        Ok(self.call(Method::GET, &torrent(h), None)?["limits"].take())
                    }
                    (None, true) => self.call(Method::GET, &path, None),
                    (_, false) => self.call(Method::PUT, &path, Some(&to_body(change)?)),
                }
            }
            Request::Stats => self.call(Method::GET, "/api/v1/stats", None),
            Request::Categories => self.call(Method::GET, "/api/v1/categories", None),
            Request::CreateCategory(c) => {
                self.call(Method::POST, "/api/v1/categories", Some(&to_body(c)?))
            }
            Request::EditCategory { name, change } => self.call(
                Method::PUT,
                &format!("/api/v1/categories/{}", segment(name)),
                Some(&to_body(change)?),
            ),
            Request::RemoveCategory(name) => self.call(
                Method::DELETE,
                &format!("/api/v1/categories/{}", segment(name)),
                None,
            ),
            Request::Tags => self.call(Method::GET, "/api/v1/tags", None),
            Request::CreateTags(t) => self.call(Method::POST, "/api/v1/tags", Some(&to_body(t)?)),
            Request::DeleteTags(t) => {
                self.call(Method::POST, "/api/v1/tags/delete", Some(&to_body(t)?))
            }
            Request::SetCategory { hash, change } => self.call(
                Method::PUT,
                &(torrent(hash) + "/category"),
                Some(&to_body(change)?),
            ),
            Request::TorrentTags { hash, change } => self.call(
                Method::PUT,
                &(torrent(hash) + "/tags"),
                Some(&to_body(change)?),
            ),
            Request::Action { hash, action } => {
                self.call(Method::POST, &format!("{}/{action}", torrent(hash)), None)
            }
            Request::Settings(None) => self.call(Method::GET, "/api/v1/settings", None),
            Request::Settings(Some(change)) => {
                self.call(Method::PUT, "/api/v1/settings", Some(&to_body(change)?))
            }
        }
    }

    /// Sends one request; an error status becomes [`ClientError::Api`] with the API's message.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut req = self.http.request(method, &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(b).unwrap_or_default());
            }
            let http = |source| ClientError::Http {
                url: url.clone(),
                source,
            };
            let resp = req.send().await.map_err(http)?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(http)?;
            if bytes.len() > MAX_ANSWER {
                return Err(ClientError::NotJson {
                    url: url.clone(),
                    detail: format!("{} bytes, more than {MAX_ANSWER}", bytes.len()),
                });
            }
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::NotJson {
                url: url.clone(),
                detail: e.to_string(),
            })?;
            if !status.is_success() {
                let message = serde_json::from_value::<ErrorBody>(v)
                    .map_or_else(|_| "(no message)".to_string(), |b| b.error);
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    message,
                });
            }
            Ok(v)
        })
    }
}

/// One `ringseed ctl` request; its body is one of the API's typed bodies ([`super::types`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    List,
    /// One torrent, by info-hash.
    Show(String),
    Add(AddRequest),
    Remove {
        hash: String,
        delete_data: bool,
    },
    Pause(String),
    Resume(String),
    Recheck(String),
    Peers(String),
    /// Peers to fetch a magnet's metadata from, or a torrent's data.
    AddPeers {
        hash: String,
        peers: AddPeersRequest,
    },
    /// A torrent's limits, or without `hash` the global ones; an empty change shows them.
    Limits {
        hash: Option<String>,
        change: LimitsRequest,
    },
    Stats,
    Categories,
    CreateCategory(CategoryRequest),
    EditCategory {
        name: String,
        change: CategoryRequest,
    },
    RemoveCategory(String),
    Tags,
    CreateTags(TagsRequest),
    DeleteTags(TagsRequest),
    SetCategory {
        hash: String,
        change: SetCategoryRequest,
    },
    TorrentTags {
        hash: String,
        change: TorrentTagsRequest,
    },
    /// `POST /api/v1/torrents/{hash}/{action}` (queue moves, force start).
    Action {
        hash: String,
        action: String,
    },
    /// The global queueing and share-limit settings; `None` shows them.
    Settings(Option<SettingsRequest>),
}

/// A path segment, percent-encoded (category names hold spaces and `/`).
///
/// ```
/// use ringseed::control::client::segment;
/// assert_eq!(segment("tv/hd x"), "tv%2Fhd%20x");
/// ```
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The API's base URL for a node whose `control.listen` is `listen`: a wildcard listener is
/// reached on loopback.
///
/// ```
/// use ringseed::control::client::api_url;
/// assert_eq!(api_url("0.0.0.0:9708").unwrap(), "http://127.0.0.1:9708");
/// assert_eq!(api_url("[::]:9708").unwrap(), "http://[::1]:9708");
/// ```
pub fn api_url(listen: &str) -> Result<String, std::net::AddrParseError> {
    use std::net::IpAddr;
    let listen: std::net::SocketAddr = listen.parse()?;
    let ip = match listen.ip() {
        IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(v) if v.is_unspecified() => "[::1]".to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
        ip => ip.to_string(),
    };
    Ok(format!("http://{ip}:{}", listen.port()))
}

/// A typed body as the JSON value the client sends.
fn to_body<T: serde::Serialize>(body: &T) -> Result<Value, ClientError> {
    serde_json::to_value(body).map_err(|e| ClientError::Body(e.to_string()))
}
