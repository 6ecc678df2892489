//! The control API's organisation routes (issue 14), beside the control API's own:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/categories` | `[{"name", "save_path"}]` |
//! | `POST /api/v1/categories` | `{"name", "save_path"}` creates one (201); `save_path` `""` is the data root, a relative one is under it, an absolute one must be inside it (400 otherwise); an existing name 409; a bad name 400 |
//! | `PUT /api/v1/categories/{name}` | `{"save_path"}`; unknown 409 |
//! | `DELETE /api/v1/categories/{name}` | removes it and clears it from its torrents |
//! | `GET /api/v1/tags` | the node's tags |
//! | `POST /api/v1/tags` | `{"tags": […]}` creates them |
//! | `POST /api/v1/tags/delete` | `{"tags": […]}` deletes them, from every torrent too |
//! | `PUT /api/v1/torrents/{hash}/category` | `{"category": NAME or null}`; an unknown category 409 |
//! | `PUT /api/v1/torrents/{hash}/tags` | `{"add": […], "remove": […]}`; unknown tags added are created |
//! | `GET`/`PUT /api/v1/settings` | `{"queueing", "max_active_downloads", "max_active_uploads", "max_active_torrents", "limit_action", "inactive_seed_time_min"}`; absent keys stay, null is the config's value |
//!
//! Every change is checked before anything changes: a refused request changes nothing.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};

use super::ControlError;
use super::Service;
use super::respond::{blocking, id_of, ok, view};
use super::types::{
    CategoryRequest, SetCategoryRequest, SettingsRequest, SettingsView, TagsRequest,
    TorrentTagsRequest, from_body,
};

async fn categories(State(s): State<Service>) -> Response {
    ok(StatusCode::OK, &s.categories())
}

async fn create_category(State(s): State<Service>, body: Bytes) -> Result<Response, ControlError> {
    let req: CategoryRequest = from_body(&body)?;
    let name = req
        .name
        .ok_or_else(|| ControlError::BadRequest("\"name\" is required".into()))?;
    let service = s.clone();
    blocking(move || service.create_category(&name, &req.save_path)).await?;
    Ok(ok(StatusCode::CREATED, &s.categories()))
}

async fn edit_category(
    State(s): State<Service>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let req: CategoryRequest = from_body(&body)?;
    if req.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ControlError::BadRequest(
            "a category cannot be renamed; \"name\" must be the path's".into(),
        ));
    }
    let service = s.clone();
    blocking(move || service.edit_category(&name, &req.save_path)).await?;
    Ok(ok(StatusCode::OK, &s.categories()))
}

async fn remove_category(
    State(s): State<Service>,
    Path(name): Path<String>,
) -> Result<Response, ControlError> {
    let service = s.clone();
    blocking(move || service.remove_categories(&[name])).await?;
    Ok(ok(StatusCode::OK, &s.categories()))
}

async fn tags(State(s): State<Service>) -> Response {
    ok(StatusCode::OK, &s.tags())
}

async fn create_tags(State(s): State<Service>, body: Bytes) -> Result<Response, ControlError> {
    let req: TagsRequest = from_body(&body)?;
    let service = s.clone();
    blocking(move || service.create_tags(&req.tags)).await?;
    Ok(ok(StatusCode::OK, &s.tags()))
}

async fn delete_tags(State(s): State<Service>, body: Bytes) -> Result<Response, ControlError> {
    let req: TagsRequest = from_body(&body)?;
    let service = s.clone();
    blocking(move || service.delete_tags(&req.tags)).await?;
    Ok(ok(StatusCode::OK, &s.tags()))
}

async fn set_category(
    State(s): State<Service>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let req: SetCategoryRequest = from_body(&body)?;
    let service = s.clone();
    blocking(move || service.set_category(&[id], req.category.as_deref())).await?;
    view(&s, id).await
}

async fn torrent_tags(
    State(s): State<Service>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let id = id_of(&hash)?;
    let req: TorrentTagsRequest = from_body(&body)?;
    let service = s.clone();
    blocking(move || {
        // Both checked before either changes anything.
        if !service.known(&[id]).contains(&id) {
            return Err(ControlError::NotFound(hash));
        }
        if !req.add.is_empty() {
            service.add_tags(&[id], &req.add)?;
        }
        if !req.remove.is_empty() {
            service.remove_tags(&[id], &req.remove)?;
        }
        Ok(())
    })
    .await?;
    view(&s, id).await
}

fn settings_view(s: &Service) -> Response {
    ok(
        StatusCode::OK,
        &SettingsView {
            in_force: s.org_settings(),
            set: s.global_settings(),
        },
    )
}

async fn settings(State(s): State<Service>) -> Response {
    settings_view(&s)
}

async fn set_settings(State(s): State<Service>, body: Bytes) -> Result<Response, ControlError> {
    let req: SettingsRequest = from_body(&body)?;
    let mut g = s.global_settings();
    if let Some(v) = req.queueing {
        g.queueing = v;
    }
    if let Some(v) = req.max_active_downloads {
        g.max_active_downloads = v;
    }
    if let Some(v) = req.max_active_uploads {
        g.max_active_uploads = v;
    }
    if let Some(v) = req.max_active_torrents {
        g.max_active_torrents = v;
    }
    if let Some(v) = req.limit_action {
        g.limit_action = v;
    }
    if let Some(v) = req.inactive_seed_time_min {
        g.inactive_seed_time_s = match v {
            None => None,
            Some(min) if min.is_finite() && (0.0..=5_256_000.0).contains(&min) => {
                Some((min * 60.0) as u64)
            }
            Some(min) => {
                return Err(ControlError::BadRequest(format!(
                    "\"inactive_seed_time_min\" = {min}: allowed 0..=5256000, or null"
                )));
            }
        };
    }
    let service = s.clone();
    blocking(move || service.set_global_settings(g)).await?;
    Ok(settings_view(&s))
}

/// The organisation routes, merged into the control API's router.
pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Service: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/api/v1/categories", get(categories).post(create_category))
        .route(
            "/api/v1/categories/{name}",
            put(edit_category).delete(remove_category),
        )
        .route("/api/v1/tags", get(tags).post(create_tags))
        .route("/api/v1/tags/delete", post(delete_tags))
        .route("/api/v1/torrents/{hash}/category", put(set_category))
        .route("/api/v1/torrents/{hash}/tags", put(torrent_tags))
        .route("/api/v1/settings", get(settings).put(set_settings))
}
