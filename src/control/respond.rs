//! Answers shared by the control API's route files ([`super::api`], [`super::org_api`]):
//! JSON bodies, blocking service calls off the control thread, a torrent's view.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ControlError, Service, parse_info_hash};

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) fn ok<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    json_response(status, &serde_json::to_value(v).unwrap_or(Value::Null))
}

/// Runs blocking service work (hashing setup, database waits, asking the workers) off the
/// control thread.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Io(format!("control task: {e}")))?
}

/// One torrent's view, read off the control thread (the torrents' lock may be held by a
/// check or a save).
pub(super) async fn view(service: &Service, id: [u8; 20]) -> Result<Response, ControlError> {
    let service = service.clone();
    let v = blocking(move || service.get(id)).await?;
    Ok(ok(StatusCode::OK, &v))
}

pub(super) fn id_of(hash: &str) -> Result<[u8; 20], ControlError> {
    parse_info_hash(hash)
}
