//! The control API: HTTP/JSON on the control thread (axum).
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/torrents` | list with stats |
//! | `POST /api/v1/torrents` | add: `{"torrent": BASE64}` or `{"path": FILE}` or `{"magnet": URI}` (state `metadata` until peers give its info dictionary), optional `save_path`, `paused`, `skip_check` |
//! | `GET /api/v1/torrents/{hash}` | one torrent |
//! | `DELETE /api/v1/torrents/{hash}[?delete_data=true]` | remove, keeping or deleting its data |
//! | `POST /api/v1/torrents/{hash}/pause`, `/resume`, `/recheck` | |
//! | `GET /api/v1/torrents/{hash}/peers` | its connected peers |
//! | `POST /api/v1/torrents/{hash}/peers` | `{"peers": ["IP:port", …]}` (1–100): a magnet waiting for its metadata keeps them and fetches again from every peer it knows; a torrent dials them |
//! | `PUT /api/v1/torrents/{hash}/limits` | `{"upload_rate_kib", "download_rate_kib", "ratio", "seed_time_min"}`: a number, or null for the global value; absent keys stay |
//! | `GET`/`PUT /api/v1/limits` | global limits `{"upload_rate_kib", "torrent_upload_rate_kib", "download_rate_kib", "torrent_download_rate_kib", "ratio", "seed_time_min"}`, kept in the state; null = the config's value |
//! | `GET /api/v1/stats` | resumed torrents, checks by reason, upload total, the DHT (`dht`: port, nodes, lookups, announces, peers found; absent when off) |
//! | `GET /`, `GET /webui/{name}` | the web UI's page and assets ([`crate::webui`]; no token) |
//! | `GET`/`POST /api/v1/categories`, `PUT`/`DELETE /api/v1/categories/{name}`, `GET`/`POST /api/v1/tags`, `POST /api/v1/tags/delete`, `PUT /api/v1/torrents/{hash}/category`, `PUT /api/v1/torrents/{hash}/tags`, `GET`/`PUT /api/v1/settings` | organisation: see [`super::org_api`] |
//! | `POST /api/v1/torrents/{hash}/queue_top`, `/queue_bottom`, `/queue_up`, `/queue_down`, `/force_start`, `/unforce_start` | the queue (409 with queueing off) |
//!
//! Errors are `{"error": "…"}` with a 4xx/5xx status, and a failed request changes nothing.
//!
//! # Who may call it
//! Loopback is no boundary: on a shared seedbox every local user reaches it, and so does any web
//! page in the operator's browser (a "simple" cross-site POST needs no preflight, and DNS
//! rebinding turns an attacker's name into 127.0.0.1). So every request passes four checks, in
//! this order ([`check_request`]):
//! 1. `Host` names an IP address, `localhost` or one of `control.hosts` (a rebound DNS name is
//!    refused: 421);
//! 2. an `Origin`, if sent, is this API's own (`http(s)://` + the `Host`); a cross-site one or
//!    `null` is refused (403), as is `Sec-Fetch-Site: cross-site`;
//! 3. a request with a body, or with a `Content-Type`, says `application/json` (415): a browser
//!    cannot send that cross-site without a preflight, which is never answered;
//! 4. `Authorization: Bearer TOKEN` (401), unless the client is in `control.no_token_from` (empty
//!    by default). There is always a token: generated on first start if none is configured
//!    ([`super::token`]). It is compared in constant time (SHA-256 of both sides, then every
//!    byte).
//!
//! The server under it ([`crate::httpd`]) bounds header time, idle time, request time and
//! connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;

use sha2::Digest;

use super::types::{
    AddPeersRequest, AddRequest, ErrorBody, GlobalLimitsView, LimitsRequest, RemoveResponse,
};
use super::{AddOptions, ControlError, Service};
use crate::config::IpNet;
use crate::state::{GlobalLimits, Limits};

use super::respond::{blocking, id_of, ok, view};

/// Largest request body: a base64 .torrent of [`super::MAX_TORRENT_FILE`] plus the JSON around it.
const MAX_BODY: usize = super::MAX_TORRENT_FILE / 3 * 4 + 64 * 1024;

/// Who may use the API.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: String,
    pub no_token_from: Vec<IpNet>,
    /// Host names a request may name besides IP addresses and `localhost` (`control.hosts`),
    /// lower case.
    pub hosts: Vec<String>,
}

#[derive(Clone)]
pub(super) struct ApiState {
    pub(super) service: Service,
    access: Arc<Access>,
}

impl axum::extract::FromRef<ApiState> for Service {
    fn from_ref(s: &ApiState) -> Service {
        s.service.clone()
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self {
            ControlError::BadRequest(_) | ControlError::OutsideDataDir { .. } => {
                StatusCode::BAD_REQUEST
            }
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::AlreadyAdded(_)
            | ControlError::UnknownCategory(_)
            | ControlError::CategoryExists(_)
            | ControlError::QueueingDisabled => StatusCode::CONFLICT,
            ControlError::InvalidName(_) => StatusCode::BAD_REQUEST,
            ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ControlError::Refused(status, _) => *status,
            ControlError::Db(_) | ControlError::Session(_) | ControlError::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ok(
            status,
            &ErrorBody {
                error: self.to_string(),
            },
        )
    }
}

/// Whether two secrets are equal, in time independent of where they differ (hashing first also
/// hides their lengths).
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// Decides whether a client may use the API: the token, unless the client is in
/// `no_token_from`.
pub fn authorize(
    access: &Access,
    peer: std::net::IpAddr,
    headers: &HeaderMap,
) -> Result<(), ControlError> {
    if access.no_token_from.iter().any(|n| n.contains(peer)) {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same_secret(g, &access.token) => Ok(()),
        Some(_) => Err(ControlError::Unauthorized("wrong token".into())),
        None => Err(ControlError::Unauthorized(format!(
            "a token is required from {peer}: send \"Authorization: Bearer TOKEN\" (`ringseed ctl` \
             reads it from the node's token file, api-token in its state directory by default)"
        ))),
    }
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_part(value: &str) -> Option<&str> {
    if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(v6);
    }
    Some(value.split_once(':').map_or(value, |(h, _)| h))
}

/// Checks 1–3 of the module doc (where a request comes from and what it carries), then the
/// token.
pub fn check_request(
    access: &Access,
    peer: std::net::IpAddr,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<(), ControlError> {
    use axum::http::Method;
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    // 1. Host: an IP address can't be rebound; a name must be one the operator listed.
    let host = text(header::HOST).unwrap_or("");
    let name = host_part(host).unwrap_or("").to_ascii_lowercase();
    let host_ok = !name.is_empty()
        && (name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || access.hosts.contains(&name));
    if !host_ok {
        return Err(ControlError::Refused(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not this API's: use an IP address or localhost, or list the \
                 name in control.hosts"
            ),
        ));
    }
    // 2. A browser says where a request comes from; only this API's own pages may call it.
    if let Some(origin) = text(header::ORIGIN) {
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
        if !own {
            return Err(ControlError::Refused(
                StatusCode::FORBIDDEN,
                format!("cross-site request from Origin {origin:?} refused"),
            ));
        }
    }
    if text(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Err(ControlError::Refused(
            StatusCode::FORBIDDEN,
            "cross-site request refused (Sec-Fetch-Site)".into(),
        ));
    }
    // 3. JSON only: a body (or a declared type) must be application/json.
    let has_body = text(header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let content_type = text(header::CONTENT_TYPE);
    let json = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    let reads_nothing = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !json && (has_body || content_type.is_some()) && !reads_nothing {
        return Err(ControlError::Refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "request bodies must be JSON (Content-Type: application/json), not {:?}",
                content_type.unwrap_or("(none)")
            ),
        ));
    }
    // 4. The token.
    authorize(access, peer, headers)
}

async fn auth(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let verdict = match peer {
        Some(ip) => check_request(&s.access, ip, req.method(), req.headers()),
        None => Err(ControlError::Unauthorized("unknown client address".into())),
    };
    match verdict {
        Ok(()) => {
            let resp = next.run(req).await;
            if resp.status().is_client_error() {
                s.service
                    .counters()
                    .api_bad_requests
                    .fetch_add(1, Ordering::Relaxed);
            }
            resp
        }
        Err(e) => {
            s.service
                .counters()
                .api_unauthorized
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = ?peer, "control API: {e}");
            e.into_response()
        }
    }
}

async fn add(State(s): State<ApiState>, body: Bytes) -> Result<Response, ControlError> {
    let req = AddRequest::from_json(&body)?;
    let options = AddOptions {
        save_path: req.save_path,
        paused: req.paused,
        skip_check: req.skip_check,
        source: None,
        trusted_path: false,
        peers: Vec::new(),
        category: req.category,
        tags: req.tags,
        content_layout: Default::default(),
    };
    let service = s.service.clone();
    let id = if let Some(uri) = req.magnet {
        blocking(move || service.add_magnet(&uri, options)).await?
    } else if let Some(b64) = req.torrent {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ControlError::BadRequest(format!("\"torrent\" is not base64: {e}")))?;
        blocking(move || service.add(bytes, options)).await?
    } else {
        let path = req.path.unwrap_or_default();
        blocking(move || service.add_path(std::path::Path::new(&path), options)).await?
    };
    let service = s.service.clone();
    let v = blocking(move || service.get(id)).await?;
    Ok(ok(StatusCode::CREATED, &v))
}

async fn list(State(s): State<ApiState>) -> Result<Response, ControlError> {
    let service = s.service.clone();
    let all = blocking(move || Ok(service.list())).await?;
    Ok(ok(StatusCode::OK, &all))
}

async fn one(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
) -> Result<Response, ControlError> {
    view(&s.service, id_of(&hash)?).await
}

async fn remove(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
    uri: Uri,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let mut delete_data = false;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair {
            "delete_data=true" | "delete_data=1" => delete_data = true,
            "delete_data=false" | "delete_data=0" => delete_data = false,
            other => {
                return Err(ControlError::BadRequest(format!(
                    "unknown query {other:?}; allowed: delete_data=true|false"
                )));
            }
        }
    }
    let service = s.service.clone();
    let removal = blocking(move || service.remove(id, delete_data)).await?;
    let shown = |v: Vec<std::path::PathBuf>| v.iter().map(|p| p.display().to_string()).collect();
    Ok(ok(
        StatusCode::OK,
        &RemoveResponse {
            data_deleted: delete_data && removal.not_deleted.is_empty(),
            removed: hash,
            kept: shown(removal.kept),
            not_deleted: removal.not_deleted,
        },
    ))
}

async fn action(
    State(s): State<ApiState>,
    Path((hash, what)): Path<(String, String)>,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let service = s.service.clone();
    match what.as_str() {
        "pause" => blocking(move || service.pause(id)).await?,
        "resume" => blocking(move || service.resume(id)).await?,
        "recheck" => service.recheck(id)?,
        "queue_top" => blocking(move || service.queue_top(&[id])).await?,
        "queue_bottom" => blocking(move || service.queue_bottom(&[id])).await?,
        "queue_up" => blocking(move || service.queue_up(&[id])).await?,
        "queue_down" => blocking(move || service.queue_down(&[id])).await?,
        "force_start" => blocking(move || service.set_force_start(&[id], true)).await?,
        "unforce_start" => blocking(move || service.set_force_start(&[id], false)).await?,
        other => {
            return Err(ControlError::BadRequest(format!(
                "unknown action {other:?}; allowed: pause, resume, recheck, queue_top, \
                 queue_bottom, queue_up, queue_down, force_start, unforce_start"
            )));
        }
    }
    view(&s.service, id).await
}

async fn peers(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let service = s.service.clone();
    let list = blocking(move || service.peers(id)).await?;
    Ok(ok(StatusCode::OK, &list))
}

async fn add_peers(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let peers = AddPeersRequest::from_json(&body)?;
    let service = s.service.clone();
    blocking(move || service.add_peers(id, peers)).await?;
    view(&s.service, id).await
}

async fn limits(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let req = LimitsRequest::from_json(&body, false)?;
    let service = s.service.clone();
    let cur = blocking(move || service.get(id)).await?.limits;
    let new = Limits {
        upload_rate: req
            .upload_rate_kib
            .apply(cur.upload_rate, |kib| (kib as u64) << 10),
        download_rate: req
            .download_rate_kib
            .apply(cur.download_rate, |kib| (kib as u64) << 10),
        ratio: req.ratio.apply(cur.ratio, |r| r),
        seed_time_s: req
            .seed_time_min
            .apply(cur.seed_time_s, |min| (min * 60.0) as u64),
        inactive_seed_time_s: req
            .inactive_seed_time_min
            .apply(cur.inactive_seed_time_s, |min| (min * 60.0) as u64),
    };
    let service = s.service.clone();
    blocking(move || service.set_limits(id, new)).await?;
    view(&s.service, id).await
}

async fn global_limits(State(s): State<ApiState>) -> Response {
    ok(
        StatusCode::OK,
        &GlobalLimitsView {
            in_force: s.service.effective_global_limits(),
            set: s.service.global_limits(),
        },
    )
}

async fn set_global_limits(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let req = LimitsRequest::from_json(&body, true)?;
    let cur = s.service.global_limits();
    let new = GlobalLimits {
        upload_rate: req
            .upload_rate_kib
            .apply(cur.upload_rate, |kib| (kib as u64) << 10),
        torrent_upload_rate: req
            .torrent_upload_rate_kib
            .apply(cur.torrent_upload_rate, |kib| (kib as u64) << 10),
        download_rate: req
            .download_rate_kib
            .apply(cur.download_rate, |kib| (kib as u64) << 10),
        torrent_download_rate: req
            .torrent_download_rate_kib
            .apply(cur.torrent_download_rate, |kib| (kib as u64) << 10),
        ratio: req.ratio.apply(cur.ratio, |r| r),
        seed_time_s: req
            .seed_time_min
            .apply(cur.seed_time_s, |min| (min * 60.0) as u64),
    };
    let service = s.service.clone();
    blocking(move || service.set_global_limits(new)).await?;
    Ok(global_limits(State(s)).await)
}

async fn stats(State(s): State<ApiState>) -> Result<Response, ControlError> {
    let service = s.service.clone();
    let st = blocking(move || Ok(service.stats())).await?;
    Ok(ok(StatusCode::OK, &st))
}

async fn not_found(uri: Uri) -> Response {
    ControlError::BadRequest(format!("no endpoint {}", uri.path())).into_response()
}

/// The API's routes over `service`.
pub fn router(service: Service, access: Access) -> Router {
    let state = ApiState {
        service,
        access: Arc::new(access),
    };
    Router::new()
        .route("/api/v1/torrents", get(list).post(add))
        .route("/api/v1/torrents/{hash}", get(one).delete(remove))
        .route("/api/v1/torrents/{hash}/peers", get(peers).post(add_peers))
        .route("/api/v1/torrents/{hash}/limits", put(limits))
        .route("/api/v1/torrents/{hash}/{action}", post(action))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/limits", get(global_limits).put(set_global_limits))
        .merge(super::org_api::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
        // After the token check's layer, so it does not cover them: the page is public (it
        // holds nothing and asks for a login), see crate::webui.
        .merge(crate::webui::router())
}

/// Binds the API's listener (so a taken port is an error at start, and port 0 gets a real one).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ControlError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| ControlError::Io(format!("control API on {addr}: {e}")))
}

/// Serves the API on `listener` within `limits` until the control thread stops (a
/// control-thread task).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    limits: crate::httpd::HttpLimits,
    stats: Arc<crate::httpd::HttpStats>,
) {
    let l = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control API: {e}");
            return;
        }
    };
    crate::httpd::serve(l, app, limits, stats, std::future::pending()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        let access = Access {
            token: "s3cret".into(),
            no_token_from: vec![IpNet::parse("127.0.0.1/32").unwrap()],
            hosts: Vec::new(),
        };
        let mut h = HeaderMap::new();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        assert!(authorize(&access, local, &h).is_ok());
        assert!(authorize(&access, other, &h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(authorize(&access, other, &h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorize(&access, other, &h).is_ok());
        let no_opt_out = Access {
            no_token_from: vec![],
            ..access.clone()
        };
        assert!(authorize(&no_opt_out, local, &HeaderMap::new()).is_err());
        assert!(same_secret("a", "a") && !same_secret("a", "b") && !same_secret("a", "aa"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn status(r: Result<(), ControlError>) -> u16 {
        match r {
            Ok(()) => 200,
            Err(e) => e.into_response().status().as_u16(),
        }
    }

    #[test]
    fn host_origin_and_content_type_are_checked_before_the_token() {
        use axum::http::Method;
        let access = Access {
            token: "t".into(),
            no_token_from: vec![],
            hosts: vec!["box.example".into()],
        };
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let auth = ("authorization", "Bearer t");
        let check = |m: Method, h: &[(&'static str, &str)]| {
            status(check_request(&access, ip, &m, &headers(h)))
        };
        for host in [
            "127.0.0.1:9708",
            "[::1]:9708",
            "localhost:9708",
            "BOX.example",
            "10.0.0.1",
        ] {
            assert_eq!(check(Method::GET, &[("host", host), auth]), 200, "{host}");
        }
        // DNS rebinding: the attacker's name resolves to 127.0.0.1.
        for host in ["evil.example:9708", "", "[::1", "box.example.evil"] {
            assert_eq!(check(Method::GET, &[("host", host), auth]), 421, "{host:?}");
        }
        assert_eq!(check(Method::GET, &[auth]), 421, "no Host");
        let h = ("host", "127.0.0.1:9708");
        let json = ("content-type", "application/json; charset=utf-8");
        let len = ("content-length", "10");
        assert_eq!(check(Method::POST, &[h, auth, json, len]), 200);
        assert_eq!(
            check(
                Method::POST,
                &[h, auth, ("origin", "http://127.0.0.1:9708"), json, len]
            ),
            200,
            "its own page"
        );
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            assert_eq!(
                check(Method::POST, &[h, auth, ("origin", origin), json, len]),
                403,
                "{origin}"
            );
        }
        assert_eq!(
            check(Method::POST, &[h, auth, ("sec-fetch-site", "cross-site")]),
            403
        );
        // The cross-site "simple" POST: text/plain, or a form.
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert_eq!(
                check(Method::POST, &[h, auth, ("content-type", ct), len]),
                415,
                "{ct}"
            );
        }
        assert_eq!(check(Method::POST, &[h, auth, len]), 415, "a body, no type");
        assert_eq!(check(Method::POST, &[h, auth]), 200, "no body: pause");
        assert_eq!(
            check(Method::POST, &[h, ("content-length", "0")]),
            401,
            "no token"
        );
        assert_eq!(
            check(Method::PUT, &[h, auth, ("transfer-encoding", "chunked")]),
            415
        );
    }
}
