//! The client side of the control API, for `ringseed ctl`: one request, a JSON answer.

use std::time::Duration;

use serde_json::Value;

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
                let message = v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string();
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    message,
                });
            }
            Ok(v)
        })
    }
}
