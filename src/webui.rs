//! The web UI: the files of `webui/` (hand-written HTML, JS and CSS, no build step), embedded in
//! the binary and served on the control listener, so the page works offline and needs no
//! install of its own.
//!
//! | path | file |
//! |---|---|
//! | `GET /` | `webui/index.html` |
//! | `GET /webui/{name}` | `webui/{name}`, for the names in [`ASSETS`] only |
//!
//! The page itself holds no secret and needs no token: it shows a login form and then talks only
//! the qBittorrent Web API v2 under `/api/v2/` (with that API's session cookie), so the same
//! files also run as qbittorrent-nox's alternative UI (`tests/helpers/webui_qbt.py`).
//!
//! An asset is looked up by its exact name in a fixed table, never by a path on disk, so no
//! request can reach another file (`..`, encoded slashes and the like name nothing). Every answer
//! carries a strict Content-Security-Policy (the page's own script and style only: no inline
//! script, no other origin), `nosniff`, `X-Frame-Options: DENY` and an `ETag` (a hash of the
//! content) with `Cache-Control: no-cache`: a browser revalidates on each load and gets a 304
//! while the binary is the same.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;

/// The policy for every answer: only this origin's script, style, images and API; no plugins,
/// no framing, no `<base>` tricks. `data:` images are allowed for nothing but inline icons.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                       base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every file of the UI: name, content type, content.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../webui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../webui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../webui/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../webui/icon.svg"),
    ),
];

/// One asset, with its entity tag.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// `"` + the first 16 bytes of the content's SHA-256 in hex + `"`.
    pub etag: String,
}

fn table() -> &'static [Asset] {
    static TABLE: OnceLock<Vec<Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|&(name, content_type, body)| {
                let digest = sha2::Sha256::digest(body);
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                Asset {
                    name,
                    content_type,
                    body,
                    etag: format!("\"{hex}\""),
                }
            })
            .collect()
    })
}

/// The asset called exactly `name`, if any.
pub fn find(name: &str) -> Option<&'static Asset> {
    table().iter().find(|a| a.name == name)
}

/// Whether an `If-None-Match` value names `etag` (a list of tags, weak or strong, or `*`):
/// then the client's copy is current and the answer is 304.
pub fn not_modified(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The headers every answer of the UI carries.
fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// The answer for `name`: the asset, 304 when the client has it, or 404.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = find(name) else {
        let mut r = (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Not Found",
        )
            .into_response();
        security_headers(r.headers_mut());
        return r;
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| not_modified(v, &asset.etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = r.headers_mut();
    security_headers(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(tag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, tag);
    }
    r
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// The UI's routes (GET, and HEAD through it). Merged into the control API's router after its
/// token check, so loading the page needs no token: the page holds nothing and asks for a login.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/webui/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_found_by_exact_name_only() {
        assert!(find("index.html").is_some());
        assert!(find("app.js").is_some());
        for bad in [
            "",
            ".",
            "..",
            "../Cargo.toml",
            "/index.html",
            "webui/app.js",
            "APP.JS",
            "app.js ",
            "app.js/",
        ] {
            assert!(find(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn etags_are_content_hashes() {
        let a = find("app.js").map(|a| a.etag.clone());
        let b = find("app.css").map(|a| a.etag.clone());
        assert!(a.is_some() && a != b);
        let a = a.unwrap_or_default();
        assert_eq!(a.len(), 34);
        assert!(a.starts_with('"') && a.ends_with('"'));
    }

    #[test]
    fn if_none_match_lists() {
        let e = "\"abc\"";
        assert!(not_modified("\"abc\"", e));
        assert!(not_modified("W/\"abc\"", e));
        assert!(not_modified("\"x\", \"abc\"", e));
        assert!(not_modified("*", e));
        assert!(!not_modified("\"abd\"", e));
        assert!(!not_modified("abc", e));
        assert!(!not_modified("", e));
    }

    #[test]
    fn the_page_uses_no_inline_script_or_other_origin() {
        let html =
            std::str::from_utf8(find("index.html").map_or(&[][..], |a| a.body)).unwrap_or_default();
        assert!(html.contains("<script src=\"webui/app.js\""));
        // Every <script> has a src (CSP forbids inline script), and no URL leaves the origin.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=").count()
        );
        for handler in [
            "onclick=",
            "onload=",
            "onerror=",
            "onsubmit=",
            "oninput=",
            "javascript:",
        ] {
            assert!(!html.contains(handler), "inline handler {handler}");
        }
        for asset in table() {
            let text = String::from_utf8_lossy(asset.body);
            // The SVG's xmlns is a name, not a fetch.
            let text = text.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!text.contains("http://"), "{}", asset.name);
            assert!(!text.contains("https://"), "{}", asset.name);
        }
        // Data from the server reaches the page as text only.
        let js = String::from_utf8_lossy(find("app.js").map_or(&[][..], |a| a.body));
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
        let total: usize = table().iter().map(|a| a.body.len()).sum();
        assert!(total < 200 * 1024, "the UI grew to {total} bytes");
    }
}
