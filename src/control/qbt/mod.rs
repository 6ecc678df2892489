//! The qBittorrent Web API v2 (`/api/v2/…`) on the control listener, so the seedbox tools
//! (Sonarr, Radarr, Prowlarr, autobrr, cross-seed, qbit_manage, qui, `qbittorrent-api`) drive
//! ringseed as they drive qBittorrent. docs/qbittorrent-api.md is the specification, measured on
//! qbittorrent-nox 4.5.2, with ringseed's deliberate differences.
//!
//! | file | concern |
//! |---|---|
//! | [`auth`] | sessions (cookie under any name), the login-flood ban, the password |
//! | [`form`] | parameters: a GET's query, a POST's form or multipart body |
//! | [`torrent`] | the torrent object: names, units, sentinels, states, filters, sort |
//! | [`sync`] | `sync/maindata`'s `rid` deltas |
//! | [`reply`] | answers, error texts, security headers |
//! | [`app`], [`torrents`], [`transfer`] | the endpoints by scope |
//!
//! # Who may call it
//! Not through ringseed's own [`crate::control::api::check_request`] (whose JSON-only rule
//! refuses forms), but with the same safety, answered as qBittorrent answers:
//! 1. `Host` names an IP address, `localhost` or one of `control.hosts` (DNS rebinding), else
//!    401 `Unauthorized` (qBittorrent's answer to a failed Host check);
//! 2. an `Origin` or `Referer` of another site, or `Sec-Fetch-Site: cross-site`, gets 401
//!    (qBittorrent's CSRF answer);
//! 3. every endpoint but `auth/login` needs a session (`auth/login` with `control.username` and
//!    the password: `control.password_file`, else the API token) or `Authorization: Bearer
//!    <API token>` (as qBittorrent 5.2's API keys), else 403 `Forbidden`. Loopback is never
//!    exempt.

pub mod app;
pub mod auth;
pub mod fetch_url;
pub mod file_edit;
pub mod form;
pub mod reply;
pub mod sync;
pub mod torrent;
pub mod torrents;
pub mod transfer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::control::Service;
use crate::control::api::same_secret;
use form::Params;
use reply::Reply;

/// Largest request body: a few .torrent files of the largest size ringseed takes.
const MAX_BODY: usize = crate::control::MAX_TORRENT_FILE * 4;

/// Who may log in, and from where.
#[derive(Debug, Clone)]
pub struct QbtAccess {
    pub username: String,
    pub password: String,
    /// The API token, accepted as `Authorization: Bearer`.
    pub token: String,
    /// Host names besides IP addresses and `localhost` (`control.hosts`), lower case.
    pub hosts: Vec<String>,
    /// The listener's port: a `Host` naming another port is refused (as qBittorrent does),
    /// unless its name is one of `hosts` (a reverse proxy's).
    pub port: Option<u16>,
}

/// Upload rates, sampled every second by [`Qbt::sample_rates`].
#[derive(Debug, Default)]
struct Rates {
    /// Per torrent: when sampled, uploaded then, the rate (bytes/s).
    by_torrent: HashMap<[u8; 20], (Instant, u64, u64)>,
    /// Per torrent: Unix seconds a complete copy was last seen (its own, or a connected peer's).
    seen_complete: HashMap<[u8; 20], i64>,
}

/// The API's state. Cheap to clone.
#[derive(Clone)]
pub struct Qbt {
    pub service: Service,
    access: Arc<QbtAccess>,
    sessions: Arc<Mutex<auth::Sessions>>,
    guard: Arc<Mutex<auth::Guard>>,
    rates: Arc<Mutex<Rates>>,
    /// The BTT layer's counters, when it runs (`ringseed/earnings`).
    speed: Option<Arc<crate::speed::service::SpeedStats>>,
    /// Stops the node as SIGTERM does (`app/shutdown`); `None`: no such endpoint (404).
    shutdown: Option<Arc<dyn Fn() + Send + Sync>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Qbt {
    pub fn new(service: Service, access: QbtAccess) -> Qbt {
        Qbt {
            service,
            access: Arc::new(access),
            sessions: Default::default(),
            guard: Default::default(),
            rates: Default::default(),
            speed: None,
            shutdown: None,
        }
    }

    /// Serves `app/shutdown` with `stop` (called once the answer is on its way).
    pub fn with_shutdown(mut self, stop: Arc<dyn Fn() + Send + Sync>) -> Qbt {
        self.shutdown = Some(stop);
        self
    }

    /// Serves the BTT layer's earnings at `ringseed/earnings` (the web UI's status bar).
    pub fn with_speed(mut self, speed: Option<Arc<crate::speed::service::SpeedStats>>) -> Qbt {
        self.speed = speed;
        self
    }

    /// The routes: everything under `/api/v2/`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/v2/{*path}", any(handle))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    /// Samples every torrent's upload once a second, for `upspeed` (a control-thread task).
    pub async fn sample_rates(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let q = self.clone();
            let done = tokio::task::spawn_blocking(move || q.sample_once()).await;
            if done.is_err() {
                return;
            }
        }
    }

    fn sample_once(&self) {
        let now = Instant::now();
        let ids: Vec<[u8; 20]> = self
            .service
            .list()
            .iter()
            .filter_map(|v| crate::control::parse_info_hash(&v.info_hash).ok())
            .collect();
        let mut next = HashMap::with_capacity(ids.len());
        let mut seen = HashMap::with_capacity(ids.len());
        let unix = crate::control::now_unix();
        let rates = lock(&self.rates);
        for id in ids {
            let Some(t) = self.service.handle_of(id) else {
                continue;
            };
            let copy_seen = if t.pieces.verified.is_full() || t.pieces.complete_peers() > 0 {
                Some(unix)
            } else {
                rates.seen_complete.get(&id).copied()
            };
            if let Some(at) = copy_seen {
                seen.insert(id, at);
            }
            let up = t.uploaded();
            let rate = match rates.by_torrent.get(&id) {
                Some((at, before, _)) if up >= *before => {
                    let dt = now.saturating_duration_since(*at).as_secs_f64();
                    if dt > 0.0 {
                        ((up - before) as f64 / dt) as u64
                    } else {
                        0
                    }
                }
                _ => 0,
            };
            next.insert(id, (now, up, rate));
        }
        drop(rates);
        let mut rates = lock(&self.rates);
        rates.by_torrent = next;
        rates.seen_complete = seen;
    }

    /// A torrent's upload rate (bytes/s) at the last sample.
    pub fn upspeed(&self, id: &[u8; 20]) -> u64 {
        lock(&self.rates).by_torrent.get(id).map_or(0, |r| r.2)
    }

    /// What the API shows of every torrent, in ringseed's order (by time added).
    pub fn all_facts(&self) -> Vec<torrent::Facts> {
        self.service
            .list()
            .into_iter()
            .map(|v| self.facts(v))
            .collect()
    }

    pub fn facts(&self, mut view: crate::control::TorrentView) -> torrent::Facts {
        if let Some(n) = &view.qbt.name {
            view.name = n.clone();
        }
        let id = crate::control::parse_info_hash(&view.info_hash).unwrap_or([0; 20]);
        let handle = self.service.handle_of(id);
        let (trackers, uploaded_session, left, content, magnet_uri, v2) = match &handle {
            Some(t) => {
                let meta = &t.meta;
                let tiers = t.tiers();
                let mut reports = if view.state == "paused" {
                    crate::tracker::report::not_contacted(&tiers)
                } else {
                    crate::engine::lock(&t.trackers).clone()
                };
                // in the list's order, as qBittorrent shows them (the announcer shuffles a
                // tier and moves the one that answers to its front, BEP 12)
                let place: HashMap<&str, usize> = tiers
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, u)| (u.as_str(), i))
                    .collect();
                reports.sort_by_key(|r| place.get(r.url.as_str()).copied().unwrap_or(usize::MAX));
                (
                    reports,
                    t.uploaded(),
                    if view.state == "checking" {
                        view.size
                            .saturating_sub((view.progress * view.size as f64) as u64)
                    } else {
                        t.left()
                    },
                    Some(crate::metainfo::content_layout::content_path(
                        &meta.info.layout,
                    )),
                    torrent::magnet_uri(&view.info_hash, &view.name, &tiers),
                    meta.info
                        .hash
                        .v2
                        .map(|h| h.iter().map(|b| format!("{b:02x}")).collect::<String>())
                        .unwrap_or_default(),
                )
            }
            None => (
                Vec::new(),
                0,
                view.size,
                None,
                torrent::magnet_uri(&view.info_hash, &view.name, &[]),
                String::new(),
            ),
        };
        let has_metadata = handle.is_some();
        // libtorrent counts a seed's size whole, whatever its file priorities
        let wanted_size = handle
            .as_ref()
            .filter(|t| !t.pieces.verified.is_full())
            .and_then(|t| t.want().size(&t.meta.info.layout));
        let swarm = match &handle {
            Some(t) => torrent::SwarmFacts {
                complete_peers: t.pieces.complete_peers(),
                distributed_copies: if left > 0 {
                    t.pieces.distributed_copies()
                } else {
                    0.0
                },
                reannounce_s: crate::engine::lock(&t.next_announce).map_or(0, |at| {
                    at.saturating_duration_since(Instant::now()).as_secs() as i64
                }),
                seen_complete: lock(&self.rates)
                    .seen_complete
                    .get(&id)
                    .copied()
                    .unwrap_or(0),
            },
            None => torrent::SwarmFacts::default(),
        };
        torrent::Facts {
            upspeed: self.upspeed(&id),
            view,
            trackers,
            uploaded_session,
            left,
            wanted_size,
            content,
            has_metadata,
            magnet_uri,
            infohash_v2: v2,
            swarm,
        }
    }
}

/// The host part of a `Host` header value or of a URL's authority.
fn host_name(value: &str) -> String {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_ascii_lowercase();
    }
    value.split(':').next().unwrap_or("").to_ascii_lowercase()
}

/// The authority (`host:port`) of a URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(""))
}

/// Checks 1 and 2 of the module doc: where the request comes from.
pub fn check_origin(access: &QbtAccess, headers: &HeaderMap) -> Result<(), Reply> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = || Err(Reply::status(StatusCode::UNAUTHORIZED));
    let host = text("host").unwrap_or("");
    let name = host_name(host);
    let ok = !name.is_empty()
        && (name.parse::<IpAddr>().is_ok() || name == "localhost" || access.hosts.contains(&name));
    if !ok {
        return unauthorized();
    }
    let given_port = host
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty() && (!host.starts_with('[') || h.ends_with(']')))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    if let (Some(given), Some(own)) = (given_port, access.port)
        && given != own
        && !access.hosts.contains(&name)
    {
        return unauthorized();
    }
    for h in ["origin", "referer"] {
        if let Some(v) = text(h) {
            match authority(v) {
                Some(a) if a.eq_ignore_ascii_case(host) => {}
                _ => return unauthorized(),
            }
        }
    }
    if text("sec-fetch-site") == Some("cross-site") {
        return unauthorized();
    }
    Ok(())
}

/// Who is calling: a session id, or the API token.
enum Caller {
    Session(String),
    Token,
}

impl Qbt {
    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(b) = bearer {
            return same_secret(b.trim(), &self.access.token).then_some(Caller::Token);
        }
        let cookies = auth::cookie_values(headers);
        lock(&self.sessions)
            .find(cookies.iter().map(String::as_str), Instant::now())
            .map(Caller::Session)
    }

    fn login(&self, ip: IpAddr, headers: &HeaderMap, p: &Params) -> Reply {
        let now = Instant::now();
        // a session made before a ban keeps working, its login too (as in qBittorrent)
        if let Some(Caller::Session(_)) = self.caller(headers) {
            return Reply::text("Ok.");
        }
        if lock(&self.guard).banned(ip, now) {
            return Reply::Error(StatusCode::FORBIDDEN, auth::BANNED.into());
        }
        let user = p.get("username").unwrap_or("");
        let pass = p.get("password").unwrap_or("");
        // both compared, always, so the time says nothing about which was wrong
        let user_ok = same_secret(user, &self.access.username);
        let pass_ok = same_secret(pass, &self.access.password);
        if !(user_ok && pass_ok) {
            lock(&self.guard).fail(ip, now);
            tracing::warn!(client = %ip, "qBittorrent API: failed login");
            return Reply::text("Fails.");
        }
        lock(&self.guard).succeed(ip);
        let sid = match auth::new_sid() {
            Ok(s) => s,
            Err(e) => {
                return Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, format!("random: {e}"));
            }
        };
        lock(&self.sessions).open(sid.clone(), now);
        Reply::WithCookie(
            "Ok.".into(),
            format!("SID={sid}; HttpOnly; path=/; SameSite=Strict"),
        )
    }
}

/// Methods that change something: POST only (GET gets 405).
fn post_only(scope: &str, method: &str) -> bool {
    match scope {
        "auth" => true,
        "app" => method == "setPreferences" || method == "shutdown",
        "transfer" => transfer::POST_ONLY.contains(&method),
        "torrents" => torrents::POST_ONLY.contains(&method),
        _ => false,
    }
}

async fn handle(
    State(q): State<Qbt>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_origin(&q.access, &headers) {
        tracing::warn!(client = %peer, "qBittorrent API: cross-site or foreign Host refused");
        return r.into_response();
    }
    let path = uri.path().strip_prefix("/api/v2/").unwrap_or("");
    let (scope, name) = path.split_once('/').unwrap_or((path, ""));
    let (scope, name) = (scope.to_string(), name.to_string());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let params = Params::read(&method, uri.query(), content_type.as_deref(), &body);
    if scope == "auth" && name == "login" {
        if method != Method::POST {
            return Reply::status(StatusCode::METHOD_NOT_ALLOWED).into_response();
        }
        return match params {
            Ok(p) => q.login(peer.ip(), &headers, &p).into_response(),
            Err(_) => Reply::Error(StatusCode::BAD_REQUEST, String::new()).into_response(),
        };
    }
    let Some(caller) = q.caller(&headers) else {
        return Reply::status(StatusCode::FORBIDDEN).into_response();
    };
    if method != Method::POST && method != Method::GET {
        return Reply::status(StatusCode::METHOD_NOT_ALLOWED).into_response();
    }
    if method == Method::GET && post_only(&scope, &name) {
        return Reply::status(StatusCode::METHOD_NOT_ALLOWED).into_response();
    }
    let params = match params {
        Ok(p) => p,
        Err(form::Malformed(why)) => {
            tracing::debug!("qBittorrent API: malformed body: {why}");
            return Reply::Error(StatusCode::BAD_REQUEST, String::new()).into_response();
        }
    };
    let sid = match caller {
        Caller::Session(s) => Some(s),
        Caller::Token => None,
    };
    let reply = tokio::task::spawn_blocking(move || dispatch(&q, &scope, &name, &params, sid))
        .await
        .unwrap_or_else(|e| Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    reply.into_response()
}

/// Runs one endpoint (off the control thread: the service's calls may wait).
fn dispatch(q: &Qbt, scope: &str, name: &str, p: &Params, sid: Option<String>) -> Reply {
    match (scope, name) {
        ("auth", "logout") => {
            if let Some(s) = sid {
                lock(&q.sessions).close(&s);
            }
            Reply::WithCookie(
                String::new(),
                "SID=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/".into(),
            )
        }
        ("app", "shutdown") => match &q.shutdown {
            Some(stop) => {
                tracing::warn!("qBittorrent API: app/shutdown: stopping the node");
                stop();
                Reply::Empty
            }
            None => Reply::not_found(),
        },
        ("app", _) => app::call(q, name, p),
        ("torrents", _) => torrents::call(q, name, p),
        ("transfer", _) => transfer::call(q, name, p),
        // ringseed's own addition (qBittorrent has no such scope: 404 there)
        ("ringseed", "earnings") => transfer::earnings(q.speed.as_deref()),
        ("sync", "maindata") => {
            let rid = p.int("rid").unwrap_or(0);
            let full = transfer::maindata(q);
            match sid {
                Some(s) => {
                    let mut sessions = lock(&q.sessions);
                    match sessions.get_mut(&s) {
                        Some(session) => {
                            Reply::Json(serde_json::Value::Object(session.sync.answer(rid, full)))
                        }
                        None => Reply::status(StatusCode::FORBIDDEN),
                    }
                }
                // an API key has no session to keep a history in: always full
                None => Reply::Json(serde_json::Value::Object(
                    sync::History::default().answer(0, full),
                )),
            }
        }
        _ => Reply::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_host_and_referer() {
        let access = QbtAccess {
            username: "admin".into(),
            password: "p".into(),
            token: "t".into(),
            hosts: vec!["box.example".into()],
            port: Some(8080),
        };
        let check = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            check_origin(&access, &h).is_ok()
        };
        assert!(check(&[("host", "127.0.0.1:8080")]));
        assert!(check(&[("host", "box.example:8080")]));
        assert!(check(&[("host", "[::1]:8080")]));
        assert!(!check(&[("host", "evil.example")]), "rebinding");
        assert!(!check(&[("host", "localhost:1")]), "another port");
        assert!(check(&[("host", "box.example:443")]), "a proxy's name");
        assert!(check(&[("host", "localhost")]));
        assert!(!check(&[]));
        assert!(check(&[
            ("host", "127.0.0.1:8080"),
            ("referer", "http://127.0.0.1:8080/index.html"),
            ("origin", "http://127.0.0.1:8080")
        ]));
        assert!(!check(&[
            ("host", "127.0.0.1:8080"),
            ("referer", "http://evil.example/")
        ]));
        assert!(!check(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ]));
        assert!(!check(&[("host", "127.0.0.1:8080"), ("origin", "null")]));
        assert!(!check(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(post_only("torrents", "delete") && !post_only("torrents", "info"));
    }
}
