//! Tracker I/O: announces and scrapes over HTTP(S) and UDP on the control thread's tokio runtime.
//!
//! HTTP goes through `reqwest` (HTTP/1.1, rustls with the `ring` provider, the system's CA
//! roots, redirects followed up to a limit, no proxy). UDP follows BEP 15: a connection id per
//! tracker address, cached for its one-minute life, and retransmission after `base · 2^n`.
//! Every wait has a deadline; every reply is bounded before it is parsed.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{
    AnnounceRequest, AnnounceResponse, MAX_REPLY_BYTES, ScrapeResponse, TrackerError, http, udp,
};

/// Timeouts, limits and retry schedule of a [`TrackerClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Whole HTTP request: connect, TLS, redirects and reading the body.
    pub http_timeout: Duration,
    /// TCP and TLS connect of one HTTP request, and the host name lookup of a UDP tracker.
    pub connect_timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
    /// `User-Agent` of HTTP requests.
    pub user_agent: String,
    /// BEP 15 retransmission base: the n-th send of a UDP request waits `base · 2^n` for a reply
    /// (BEP 15 says 15 s).
    pub udp_retry_base: Duration,
    /// Retransmissions of a UDP request after the first send before it times out. The total
    /// wait is `base · (2^(retries+1) − 1)`: 105 s with the defaults.
    pub udp_retries: u32,
    /// How long a UDP connection id is used (BEP 15: a connection id is valid for one minute).
    pub udp_connection_ttl: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            http_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
            user_agent: concat!("ringseed/", env!("CARGO_PKG_VERSION")).to_owned(),
            udp_retry_base: Duration::from_secs(15),
            udp_retries: 2,
            udp_connection_ttl: Duration::from_secs(60),
        }
    }
}

/// Something that can announce to a tracker URL: [`TrackerClient`], or a stand-in in tests.
/// The [`Announcer`](super::Announcer) drives one of these.
pub trait AnnounceTransport {
    /// Announces `req` to the tracker at `url`.
    fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
    ) -> impl Future<Output = Result<AnnounceResponse, TrackerError>>;
}

/// Talks to HTTP, HTTPS and UDP trackers. One per engine: it holds the HTTP connection pool and
/// the UDP connection ids, and every method takes `&self`.
///
/// ```no_run
/// # async fn f() -> Result<(), ringseed::tracker::TrackerError> {
/// use ringseed::tracker::{AnnounceRequest, ClientConfig, Event, TrackerClient};
/// let client = TrackerClient::new(ClientConfig::default())?;
/// let req = AnnounceRequest { event: Event::Started, ..AnnounceRequest::new([1; 20], [2; 20], 6881) };
/// let reply = client.announce("udp://tracker.example:6969/announce", &req).await?;
/// println!("{} peers, next announce in {:?}", reply.peers.len(), reply.interval);
/// # Ok(()) }
/// ```
pub struct TrackerClient {
    http: reqwest::Client,
    config: ClientConfig,
    /// Connection id and when it was obtained, per UDP tracker address.
    udp_connections: Mutex<HashMap<SocketAddr, (u64, Instant)>>,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Which protocol a tracker URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Udp,
}

fn scheme(url: &str) -> Result<Scheme, TrackerError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(Scheme::Http)
    } else if lower.starts_with("udp://") {
        Ok(Scheme::Udp)
    } else {
        Err(TrackerError::UnsupportedScheme(url.to_owned()))
    }
}

/// A tracker URL fit for logs: without its query, which may hold a passkey.
fn shown(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// rustls with the `ring` provider and the system's CA roots, built here so no process-wide
/// crypto provider is installed behind the engine's back (every reqwest client uses this).
pub fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

impl TrackerClient {
    /// Builds the client. Fails only when the TLS setup cannot be made (no usable crypto or
    /// root store).
    pub fn new(config: ClientConfig) -> Result<Self, TrackerError> {
        let setup = |e: &dyn std::fmt::Display| TrackerError::Setup(e.to_string());
        let tls = tls_config().map_err(|e| setup(&e))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.http_timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(config.max_redirects))
            .user_agent(config.user_agent.clone())
            .no_proxy()
            // A fresh connection per announce: trackers are asked every few minutes at most,
            // and many (opentracker among them) close after each reply, so a pooled connection
            // is usually stale and its reuse races the tracker's close (connection reset).
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| setup(&e))?;
        Ok(TrackerClient {
            http,
            config,
            udp_connections: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Announces `req` to the tracker whose announce URL is `url` (`http://`, `https://` or
    /// `udp://`). A tracker's refusal is [`TrackerError::Failure`] with its text.
    pub async fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        match scheme(url)? {
            Scheme::Http => {
                let (status, body) = self.http_get(url, &http::announce_url(url, req)).await?;
                http_result(status, &body, http::parse_announce)
            }
            Scheme::Udp => {
                self.udp_request(
                    url,
                    |conn, tid| udp::announce_request(conn, tid, req).to_vec(),
                    udp::parse_announce,
                )
                .await
            }
        }
    }

    /// Scrapes up to [`MAX_SCRAPE_HASHES`](super::MAX_SCRAPE_HASHES) torrents from the tracker
    /// whose announce URL is `url`. HTTP trackers without a scrape URL by the BEP 48 convention
    /// give [`TrackerError::ScrapeUnsupported`].
    pub async fn scrape(
        &self,
        url: &str,
        info_hashes: &[[u8; 20]],
    ) -> Result<ScrapeResponse, TrackerError> {
        match scheme(url)? {
            Scheme::Http => {
                let full = http::scrape_url(url, info_hashes)?;
                let (status, body) = self.http_get(url, &full).await?;
                http_result(status, &body, http::parse_scrape)
            }
            Scheme::Udp => {
                // Checked before any packet is sent.
                udp::scrape_request(0, 0, info_hashes)?;
                self.udp_request(
                    url,
                    |conn, tid| udp::scrape_request(conn, tid, info_hashes).unwrap_or_default(),
                    |p, tid, _| udp::parse_scrape(p, tid, info_hashes),
                )
                .await
            }
        }
    }

    /// GETs `full` (built from the tracker URL `url`) and returns the status and the body, read
    /// up to [`MAX_REPLY_BYTES`].
    async fn http_get(&self, url: &str, full: &str) -> Result<(u16, Vec<u8>), TrackerError> {
        let net = |e: reqwest::Error| self.http_error(url, e);
        if let Err(e) = reqwest::Url::parse(full) {
            return Err(TrackerError::BadUrl {
                url: shown(url),
                reason: e.to_string(),
            });
        }
        let mut resp = self.http.get(full).send().await.map_err(net)?;
        let status = resp.status().as_u16();
        let too_large = TrackerError::TooLarge {
            limit: MAX_REPLY_BYTES,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
        {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(net)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    fn http_error(&self, url: &str, e: reqwest::Error) -> TrackerError {
        if e.is_timeout() {
            return TrackerError::Timeout {
                url: shown(url),
                after: self.config.http_timeout,
            };
        }
        let e = e.without_url();
        let mut reason = if e.is_redirect() {
            format!("more than {} redirects", self.config.max_redirects)
        } else {
            e.to_string()
        };
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        TrackerError::Network {
            url: shown(url),
            reason,
        }
    }

    /// Resolves a UDP tracker URL and runs the request against its addresses in turn, moving
    /// to the next one only on a local network error (say, an IPv6 address without a route).
    async fn udp_request<T>(
        &self,
        url: &str,
        build: impl Fn(u64, u32) -> Vec<u8>,
        parse: impl Fn(&[u8], u32, bool) -> Result<T, TrackerError>,
    ) -> Result<T, TrackerError> {
        let addrs = self.resolve_udp(url).await?;
        let mut last = None;
        for addr in addrs {
            match self.udp_transaction(url, addr, &build, &parse).await {
                Err(e @ TrackerError::Network { .. }) => last = Some(e),
                result => return result,
            }
        }
        Err(last.unwrap_or_else(|| TrackerError::Resolve {
            host: shown(url),
            reason: "no addresses".to_owned(),
        }))
    }

    /// Resolves a `udp://host:port/...` URL to at most 4 socket addresses.
    async fn resolve_udp(&self, url: &str) -> Result<Vec<SocketAddr>, TrackerError> {
        let bad = |reason: &str| TrackerError::BadUrl {
            url: shown(url),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let port = parsed
            .port()
            .ok_or_else(|| bad("a UDP tracker URL needs a port"))?;
        let host = match parsed.host_str() {
            None | Some("") => return Err(bad("no host")),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        };
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let resolve_err = |reason: String| TrackerError::Resolve {
            host: host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = tokio::time::timeout(self.config.connect_timeout, lookup)
            .await
            .map_err(|_| {
                resolve_err(format!(
                    "no answer within {:?}",
                    self.config.connect_timeout
                ))
            })?
            .map_err(|e| resolve_err(e.to_string()))?
            .take(4)
            .collect();
        if addrs.is_empty() {
            return Err(resolve_err("no addresses".to_owned()));
        }
        Ok(addrs)
    }

    fn cached_connection(&self, addr: SocketAddr) -> Option<u64> {
        let map = self.udp_connections.lock().ok()?;
        map.get(&addr)
            .filter(|(_, at)| at.elapsed() < self.config.udp_connection_ttl)
            .map(|(id, _)| *id)
    }

    fn cache_connection(&self, addr: SocketAddr, id: u64) {
        if let Ok(mut map) = self.udp_connections.lock() {
            if map.len() >= 1024 {
                let ttl = self.config.udp_connection_ttl;
                map.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            map.insert(addr, (id, Instant::now()));
        }
    }

    fn forget_connection(&self, addr: SocketAddr) {
        if let Ok(mut map) = self.udp_connections.lock() {
            map.remove(&addr);
        }
    }

    /// One BEP 15 request to one address: obtains a connection id unless a fresh one is cached, then sends the
    /// request built by `build(connection_id, transaction_id)` until `parse` accepts a reply or
    /// the retransmissions run out. Connect and request share one retransmission count.
    async fn udp_transaction<T>(
        &self,
        url: &str,
        addr: SocketAddr,
        build: &impl Fn(u64, u32) -> Vec<u8>,
        parse: &impl Fn(&[u8], u32, bool) -> Result<T, TrackerError>,
    ) -> Result<T, TrackerError> {
        let net = |e: std::io::Error| TrackerError::Network {
            url: shown(url),
            reason: e.to_string(),
        };
        let local: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local).await.map_err(net)?;
        // A connected socket only receives datagrams from the tracker's address.
        sock.connect(addr).await.map_err(net)?;
        let started = Instant::now();
        let mut buf = vec![0u8; 65536];
        let tid = random_u32();
        let mut attempt = 0u32;
        loop {
            let wait = self.retry_wait(attempt);
            let conn = match self.cached_connection(addr) {
                Some(id) => Some(id),
                None => {
                    let ctid = random_u32();
                    let packet = udp::connect_request(ctid);
                    match round(&sock, &packet, ctid, wait, &mut buf)
                        .await
                        .map_err(net)?
                    {
                        Some(reply) => {
                            let id = udp::parse_connect(reply, ctid)?;
                            self.cache_connection(addr, id);
                            // The connect round trip succeeded: send the request right away.
                            Some(id)
                        }
                        None => None,
                    }
                }
            };
            if let Some(conn) = conn {
                let packet = build(conn, tid);
                let wait = self.retry_wait(attempt);
                if let Some(reply) = round(&sock, &packet, tid, wait, &mut buf)
                    .await
                    .map_err(net)?
                {
                    let result = parse(reply, tid, addr.is_ipv6());
                    if matches!(result, Err(TrackerError::Failure(_))) {
                        // The usual cause is an expired connection id: start afresh next time.
                        self.forget_connection(addr);
                    }
                    return result;
                }
            }
            attempt += 1;
            if attempt > self.config.udp_retries {
                return Err(TrackerError::Timeout {
                    url: shown(url),
                    after: started.elapsed(),
                });
            }
        }
    }

    /// BEP 15: the n-th send waits `base · 2^n` (n capped at 8, as BEP 15 does).
    fn retry_wait(&self, attempt: u32) -> Duration {
        self.config
            .udp_retry_base
            .saturating_mul(1 << attempt.min(8))
    }
}

impl AnnounceTransport for TrackerClient {
    fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
    ) -> impl Future<Output = Result<AnnounceResponse, TrackerError>> {
        TrackerClient::announce(self, url, req)
    }
}

/// Turns an HTTP status and body into a result: a 2xx body is parsed; any other status is an
/// error, which is the tracker's `failure reason` when the body carries one.
fn http_result<T>(
    status: u16,
    body: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, TrackerError>,
) -> Result<T, TrackerError> {
    if (200..300).contains(&status) {
        return parse(body);
    }
    match parse(body) {
        Err(TrackerError::Failure(reason)) => Err(TrackerError::Failure(reason)),
        _ => Err(TrackerError::HttpStatus { status }),
    }
}

/// Sends `packet` once and waits up to `wait` for a reply carrying `tid`. Datagrams with another
/// transaction id (late answers to other requests, strays, spoofs) are ignored. `None` when the
/// wait ran out.
async fn round<'b>(
    sock: &UdpSocket,
    packet: &[u8],
    tid: u32,
    wait: Duration,
    buf: &'b mut [u8],
) -> std::io::Result<Option<&'b [u8]>> {
    sock.send(packet).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
            Err(_elapsed) => return Ok(None),
            Ok(r) => r?,
        };
        if udp::transaction_id(&buf[..n]) == Some(tid) {
            return Ok(Some(&buf[..n]));
        }
    }
}

/// A random 32-bit number for transaction ids and keys. Falls back to the clock if the kernel's
/// generator is unavailable, which only weakens spoofing resistance.
pub(crate) fn random_u32() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)
    })
}
