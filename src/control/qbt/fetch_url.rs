//! `torrents/add`'s `urls` that are `http(s)://` links to .torrent files, fetched as qBittorrent
//! does (autobrr, Prowlarr and the *arrs hand the client a link to the indexer's .torrent).
//!
//! Bounded: at most [`crate::control::MAX_TORRENT_FILE`] bytes, [`FETCH_TIMEOUT`] in all, a few
//! redirects, no proxy. The caller is logged in (the API's rule), so the link may point
//! anywhere the operator's indexers are, loopback included.

use std::time::Duration;

/// Longest a fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;

/// Whether `url` is an `http://` or `https://` link (what this module fetches).
pub fn is_http(url: &str) -> bool {
    let l = url.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Fetches `url`: the body of a 2xx answer, at most `max` bytes.
pub async fn fetch(url: &str, max: usize) -> Result<Vec<u8>, String> {
    let tls = crate::tracker::client::tls_config().map_err(|e| format!("TLS setup: {e}"))?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("ringseed/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("fetching: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading: {e}"))? {
        if body.len() + chunk.len() > max {
            return Err(format!("larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`fetch`] from a blocking thread of the runtime (where the API's endpoints run).
pub fn fetch_blocking(url: &str, max: usize) -> Result<Vec<u8>, String> {
    let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    handle.block_on(async {
        tokio::time::timeout(FETCH_TIMEOUT + CONNECT_TIMEOUT, fetch(url, max))
            .await
            .map_err(|_| "timed out".to_string())?
    })
}
