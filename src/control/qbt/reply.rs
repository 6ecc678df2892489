//! Answers as qBittorrent writes them: JSON (`application/json`, compact, keys sorted), text
//! (`text/plain; charset=UTF-8`), empty 200s for actions, errors as a status with a short text
//! body, and its security headers on every answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One answer.
#[derive(Debug)]
pub enum Reply {
    Json(Value),
    Text(String),
    /// 200, empty body (actions).
    Empty,
    /// An error status with its text body (`Not Found`, `Incorrect category name`, …).
    Error(StatusCode, String),
    /// 200 with a text body and a `Set-Cookie` header.
    WithCookie(String, String),
}

impl Reply {
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Text(s.into())
    }

    /// An error whose body is the status's reason phrase (`Not Found`).
    pub fn status(code: StatusCode) -> Reply {
        Reply::Error(code, code.canonical_reason().unwrap_or("").to_string())
    }

    pub fn not_found() -> Reply {
        Reply::status(StatusCode::NOT_FOUND)
    }

    pub fn bad_request() -> Reply {
        Reply::status(StatusCode::BAD_REQUEST)
    }
}

const TEXT: &str = "text/plain; charset=UTF-8";

/// qBittorrent's security headers (4.5.2 `WebApplication::processRequest`).
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             script-src 'self' 'unsafe-inline'; object-src 'none'; form-action 'self'; \
             frame-ancestors 'self';",
        ),
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-xss-protection", "1; mode=block"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let r = match self {
            Reply::Json(v) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&v).unwrap_or_default(),
            )
                .into_response(),
            Reply::Text(s) => (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], s).into_response(),
            Reply::Empty => StatusCode::OK.into_response(),
            Reply::Error(code, s) if s.is_empty() => code.into_response(),
            Reply::Error(code, s) => (code, [(header::CONTENT_TYPE, TEXT)], s).into_response(),
            Reply::WithCookie(body, cookie) => (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, TEXT.to_string()),
                    (header::SET_COOKIE, cookie),
                ],
                body,
            )
                .into_response(),
        };
        secure(r)
    }
}
