//! The HTTP/1.1 server under the control API and `/metrics`, with the bounds a listener open to
//! strangers needs (axum's own `serve` has none of them):
//!
//! - a **header timeout**: a request's headers must arrive within `header_timeout` (hyper's
//!   timer), so a client trickling them a byte at a time is closed;
//! - an **idle timeout**: a connection with no request in flight for `idle_timeout` is closed;
//! - a **request timeout**: a request (its body included) must be answered within
//!   `request_timeout`, so a trickled body cannot hold a connection either;
//! - a **connection cap**: at `max_connections`, a new connection closes the one idle the
//!   longest (as nginx reuses keep-alive connections when it runs out), so a thousand idle
//!   connections cannot lock `ringseed ctl` out; only when every connection has a request in
//!   flight is the new one refused.
//!
//! Every close for one of these reasons is counted ([`HttpStats`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Connections closed by the server's bounds, by reason.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Accepted connections.
    pub accepted: AtomicU64,
    /// Closed after `idle_timeout` without a request.
    pub idle: AtomicU64,
    /// Closed to make room for a new connection (the one idle the longest).
    pub evicted: AtomicU64,
    /// Refused: every connection had a request in flight.
    pub refused: AtomicU64,
    /// Headers not complete within `header_timeout`, or another protocol error.
    pub bad_requests: AtomicU64,
    /// Requests not answered within `request_timeout` (a trickled body).
    pub request_timeouts: AtomicU64,
}

impl HttpStats {
    /// `(reason, count)` of every close counted, for `/metrics`.
    pub fn closes(&self) -> [(&'static str, u64); 5] {
        [
            ("idle", self.idle.load(Relaxed)),
            ("evicted", self.evicted.load(Relaxed)),
            ("refused", self.refused.load(Relaxed)),
            ("bad_request", self.bad_requests.load(Relaxed)),
            ("request_timeout", self.request_timeouts.load(Relaxed)),
        ]
    }
}

/// What the accept loop knows of one open connection.
struct Open {
    id: u64,
    /// Requests in flight (a connection with one is never evicted).
    busy: Arc<AtomicU64>,
    /// When its last request ended (or it was accepted), in ms since the server started.
    last: Arc<AtomicU64>,
    close: Arc<Notify>,
    closed: Arc<AtomicBool>,
}

/// Serves `app` on `listener` within `limits` until `stop` resolves. Handlers see the client's
/// address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    stop: impl std::future::Future<Output = ()>,
) {
    let started = Instant::now();
    let open: Arc<Mutex<Vec<Open>>> = Arc::new(Mutex::new(Vec::new()));
    let mut next_id = 0u64;
    let app = app.layer(axum::middleware::from_fn_with_state(
        (limits.request_timeout, stats.clone()),
        request_deadline,
    ));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: wait, rather than spin on the error.
                tracing::warn!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now_ms = started.elapsed().as_millis() as u64;
        let conn = {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|o| !o.closed.load(Relaxed));
            if open.len() >= limits.max_connections {
                // The connection idle the longest gives its place; none idle: refuse.
                let idlest = open
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.busy.load(Relaxed) == 0)
                    .min_by_key(|(_, o)| o.last.load(Relaxed))
                    .map(|(i, _)| i);
                match idlest {
                    Some(i) => {
                        let o = open.swap_remove(i);
                        o.closed.store(true, Relaxed);
                        o.close.notify_one();
                        stats.evicted.fetch_add(1, Relaxed);
                    }
                    None => {
                        stats.refused.fetch_add(1, Relaxed);
                        drop(stream);
                        continue;
                    }
                }
            }
            next_id += 1;
            let o = Open {
                id: next_id,
                busy: Arc::new(AtomicU64::new(0)),
                last: Arc::new(AtomicU64::new(now_ms)),
                close: Arc::new(Notify::new()),
                closed: Arc::new(AtomicBool::new(false)),
            };
            let handles = (
                o.busy.clone(),
                o.last.clone(),
                o.close.clone(),
                o.closed.clone(),
            );
            open.push(o);
            (next_id, handles)
        };
        stats.accepted.fetch_add(1, Relaxed);
        let (id, (busy, last, close, closed)) = conn;
        let app = app.clone();
        let stats = stats.clone();
        let open = open.clone();
        tokio::spawn(async move {
            connection(
                stream, peer, app, limits, started, &stats, busy, last, close, &closed,
            )
            .await;
            closed.store(true, Relaxed);
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|o| o.id != id);
        });
    }
}

/// Serves one connection until it ends, is idle too long, or is told to close.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    started: Instant,
    stats: &HttpStats,
    busy: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
    close: Arc<Notify>,
    closed: &AtomicBool,
) {
    let svc = {
        let busy = busy.clone();
        let last = last.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            busy.fetch_add(1, Relaxed);
            let app = app.clone();
            let (busy, last) = (busy.clone(), last.clone());
            async move {
                use tower::ServiceExt;
                let resp = app.oneshot(req.map(axum::body::Body::new)).await;
                last.store(started.elapsed().as_millis() as u64, Relaxed);
                busy.fetch_sub(1, Relaxed);
                resp
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if r.is_err() {
                    // A header timeout, a malformed request, a reset: hyper closed it.
                    stats.bad_requests.fetch_add(1, Relaxed);
                }
                return;
            }
            () = close.notified() => return,
            () = tokio::time::sleep(tick) => {
                if closed.load(Relaxed) {
                    return;
                }
                let idle_ms = (started.elapsed().as_millis() as u64)
                    .saturating_sub(last.load(Relaxed));
                if busy.load(Relaxed) == 0 && idle_ms >= limits.idle_timeout.as_millis() as u64 {
                    stats.idle.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }
}

/// Ends a request that takes longer than the deadline (its body trickled in, most likely)
/// with a 408.
async fn request_deadline(
    axum::extract::State((deadline, stats)): axum::extract::State<(Duration, Arc<HttpStats>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            stats.request_timeouts.fetch_add(1, Relaxed);
            (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                [(axum::http::header::CONNECTION, "close")],
                "request not complete in time\n",
            )
                .into_response()
        }
    }
}
