//! Logins of the qBittorrent Web API: sessions (a random id in a cookie, dropped after an hour
//! without use), and the login-flood ban (five failures in a row from one address ban it from
//! `auth/login` for an hour), as qBittorrent 4.5.2 does them. Pure: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, Control, State};

/// A session unused this long is dropped (`WebUI\SessionTimeout`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most sessions at once: a new login beyond it drops the one unused the longest.
pub const MAX_SESSIONS: usize = 256;
/// Failed logins in a row that ban an address (`WebUI\MaxAuthenticationFailCount`).
pub const MAX_FAILS: u32 = 5;
/// How long a ban lasts (`WebUI\BanDuration`).
pub const BAN_DURATION: Duration = Duration::from_secs(3600);
/// Most addresses whose failures are counted; beyond it the oldest entry is forgotten (a ban
/// included: a flood from many addresses cannot grow the table).
pub const MAX_TRACKED_ADDRESSES: usize = 4096;
/// Length of a session id (qBittorrent's: 32 characters).
pub const SID_LEN: usize = 32;

/// qBittorrent's answer to a banned address.
pub const BANNED: &str =
    "Your IP address has been banned after too many failed authentication attempts.";

/// One login.
#[derive(Debug, Clone)]
pub struct Session {
    pub last_used: Instant,
    /// What `sync/maindata` last sent this session, for its `rid` deltas.
    pub sync: super::sync::History,
}

/// The open sessions, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<String, Session>,
}

impl Sessions {
    /// Opens a session with id `sid`, dropping expired ones and, when full, the one unused
    /// the longest.
    pub fn open(&mut self, sid: String, now: Instant) {
        self.expire(now);
        if self.map.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        self.map.insert(
            sid,
            Session {
                last_used: now,
                sync: Default::default(),
            },
        );
    }

    fn expire(&mut self, now: Instant) {
        self.map
            .retain(|_, s| now.saturating_duration_since(s.last_used) < SESSION_TIMEOUT);
    }

    /// The live session among `candidates` (every cookie value the client sent, whatever its
    /// name), touched.
    pub fn find<'a>(
        &mut self,
        candidates: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Option<String> {
        self.expire(now);
        for c in candidates {
            if c.len() == SID_LEN
                && let Some(s) = self.map.get_mut(c)
            {
                s.last_used = now;
                return Some(c.to_string());
            }
        }
        None
    }

    pub fn get_mut(&mut self, sid: &str) -> Option<&mut Session> {
        self.map.get_mut(sid)
    }

    pub fn close(&mut self, sid: &str) {
        self.map.remove(sid);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    banned_until: Option<Instant>,
}

/// Failed logins per address.
#[derive(Debug, Default)]
pub struct Guard {
    map: HashMap<IpAddr, Failures>,
}

impl Guard {
    /// Whether `ip` is banned now.
    pub fn banned(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.map.get(&ip) {
            Some(Failures {
                banned_until: Some(until),
                ..
            }) if now < *until => true,
            Some(Failures {
                banned_until: Some(_),
                ..
            }) => {
                self.map.remove(&ip);
                false
            }
            _ => false,
        }
    }

    /// Counts a failure; the [`MAX_FAILS`]th in a row bans the address.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) {
        if !self.map.contains_key(&ip) && self.map.len() >= MAX_TRACKED_ADDRESSES {
            // Forget expired bans first, then the entry touched the longest ago.
            self.map
                .retain(|_, f| f.banned_until.is_none_or(|until| now < until));
            if self.map.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = self.map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        let f = self.map.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            banned_until: None,
        });
        f.count += 1;
        f.last = now;
        if f.count >= MAX_FAILS {
            f.banned_until = Some(now + BAN_DURATION);
        }
    }

    /// A successful login resets the count.
    pub fn succeed(&mut self, ip: IpAddr) {
        self.map.remove(&ip);
    }
}

/// A new session id: [`SID_LEN`] random characters from qBittorrent's alphabet (letters and
/// digits).
pub fn new_sid() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; SID_LEN];
    getrandom::fill(&mut raw)?;
    Ok(raw
        .iter()
        .map(|b| ALPHABET[(*b & 63) as usize] as char)
        .collect())
}

/// Every cookie value of a request's `Cookie` headers: the session id is accepted under any
/// name (qBittorrent 4.x says `SID`, 5.2 `QBT_SID_<port>`, generic clients send back whatever
/// they were given).
pub fn cookie_values(headers: &axum::http::HeaderMap) -> Vec<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .take(64)
        .collect()
}

/// The password of `auth/login`: the first line of `control.password_file` (which must not be
/// readable by every user, as the token file), else the API token.
pub fn password(control: &Control, _state: &State, token: &str) -> Result<String, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    if control.password_file.is_empty() {
        return Ok(token.to_string());
    }
    let path = std::path::Path::new(&control.password_file);
    let m = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if m.mode() & 0o004 != 0 {
        return Err(ConfigError::OutOfRange {
            key: "control.password_file",
            value: format!("{} (mode {:o})", path.display(), m.mode() & 0o777),
            allowed: "a file other users cannot read (chmod o-r)",
        });
    }
    crate::config::read_token_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        s.open("a".repeat(SID_LEN), t0);
        assert_eq!(
            s.find(
                ["x", "a".repeat(SID_LEN).as_str()],
                t0 + Duration::from_secs(10)
            ),
            Some("a".repeat(SID_LEN)),
            "any cookie name"
        );
        assert!(
            s.find(["a".repeat(SID_LEN).as_str()], t0 + SESSION_TIMEOUT)
                .is_some()
        );
        assert!(
            s.find(
                ["a".repeat(SID_LEN).as_str()],
                t0 + SESSION_TIMEOUT * 2 + Duration::from_secs(11)
            )
            .is_none(),
            "expired after an hour unused"
        );
        for i in 0..MAX_SESSIONS + 10 {
            s.open(format!("{i:032}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        s.close(&format!("{:032}", MAX_SESSIONS + 9));
        assert_eq!(s.len(), MAX_SESSIONS - 1);
    }

    #[test]
    fn five_failures_ban_for_an_hour() {
        let t0 = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut g = Guard::default();
        for _ in 0..4 {
            g.fail(ip, t0);
        }
        assert!(!g.banned(ip, t0));
        g.succeed(ip);
        for _ in 0..4 {
            g.fail(ip, t0);
        }
        assert!(!g.banned(ip, t0), "a success reset the count");
        g.fail(ip, t0);
        assert!(g.banned(ip, t0 + Duration::from_secs(3599)));
        assert!(!g.banned(ip, t0 + BAN_DURATION));
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + 5 {
            g.fail(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(g.map.len() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn session_ids_and_cookies() {
        let a = new_sid().unwrap();
        assert_eq!(a.len(), SID_LEN);
        assert_ne!(a, new_sid().unwrap());
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "QBT_SID_8080=abc; other=\"x\"".parse().unwrap());
        assert_eq!(cookie_values(&h), vec!["abc", "x"]);
    }
}
