//! A torrent's files: `torrents/filePrio`, with qBittorrent 4.5.2's parameter checks in its
//! order (`TorrentsController::filePrioAction`): missing parameters 400, a priority that is not
//! an integer or not one of 0/1/6/7 400, an unknown torrent 404, a file index that is not an
//! integer 400, one that is not a file of the torrent 409; and `torrents/renameFile`,
//! `renameFolder`: missing parameters 400, an unknown torrent 404, every refusal 409 with
//! qBittorrent's text (`control::file_ops::RenameError`).

use axum::http::StatusCode;

use super::Qbt;
use super::form::Params;
use super::reply::Reply;
use crate::control::file_ops::{MAX_FILE_IDS, RenameError};
use crate::control::parse_info_hash;
use crate::download::want;

/// Why a `filePrio` request is refused before the torrent is looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum PrioError {
    Missing,
    PriorityNotInteger,
    PriorityInvalid,
    IdNotInteger,
    /// Negative (qBittorrent parses it, then finds no such file), or too many indices.
    IdInvalid,
}

impl PrioError {
    fn reply(&self) -> Reply {
        let (code, text) = match self {
            PrioError::Missing => return Reply::bad_request(),
            PrioError::PriorityNotInteger => {
                (StatusCode::BAD_REQUEST, "Priority must be an integer")
            }
            PrioError::PriorityInvalid => (StatusCode::BAD_REQUEST, "Priority is not valid"),
            PrioError::IdNotInteger => (StatusCode::BAD_REQUEST, "File IDs must be integers"),
            PrioError::IdInvalid => (StatusCode::CONFLICT, "File ID is not valid"),
        };
        Reply::Error(code, text.into())
    }
}

/// The priority and the file indices of a request (`id`: indices separated by `|`).
pub fn parse(priority: &str, ids: &str) -> Result<(u8, Vec<usize>), PrioError> {
    let p: i64 = priority
        .trim()
        .parse()
        .map_err(|_| PrioError::PriorityNotInteger)?;
    let p = u8::try_from(p)
        .ok()
        .filter(|p| want::valid_priority(*p))
        .ok_or(PrioError::PriorityInvalid)?;
    let mut out = Vec::new();
    for part in ids.split('|') {
        let i: i64 = part.trim().parse().map_err(|_| PrioError::IdNotInteger)?;
        let i = usize::try_from(i).map_err(|_| PrioError::IdInvalid)?;
        if out.len() >= MAX_FILE_IDS {
            return Err(PrioError::IdInvalid);
        }
        out.push(i);
    }
    Ok((p, out))
}

pub fn file_prio(q: &Qbt, p: &Params) -> Reply {
    let (Some(hash), Some(ids), Some(priority)) = (p.get("hash"), p.get("id"), p.get("priority"))
    else {
        return Reply::bad_request();
    };
    let (priority, ids) = match parse(priority, ids) {
        Ok(x) => x,
        // a bad index is only found once the torrent is (qBittorrent's order)
        Err(e) if e != PrioError::IdNotInteger && e != PrioError::IdInvalid => return e.reply(),
        Err(e) => {
            if torrent_of(q, hash).is_none() {
                return Reply::not_found();
            }
            return e.reply();
        }
    };
    let Some(id) = torrent_of(q, hash) else {
        return Reply::not_found();
    };
    if q.service.handle_of(id).is_none() && q.service.tracker_tiers(id).is_none() {
        return Reply::Error(
            StatusCode::CONFLICT,
            "Torrent's metadata has not yet downloaded.".into(),
        );
    }
    match q.service.set_file_priority(id, &ids, priority) {
        Ok(true) => Reply::Empty,
        Ok(false) => PrioError::IdInvalid.reply(),
        Err(e) => {
            tracing::warn!("qBittorrent API: filePrio: {e}");
            Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `renameFile` (`folder` false) or `renameFolder`: `hash`, `oldPath`, `newPath`.
pub fn rename(q: &Qbt, p: &Params, folder: bool) -> Reply {
    let (Some(hash), Some(old), Some(new)) = (p.get("hash"), p.get("oldPath"), p.get("newPath"))
    else {
        return Reply::bad_request();
    };
    let Some(id) = torrent_of(q, hash) else {
        return Reply::not_found();
    };
    match q.service.rename_path(id, old, new, folder) {
        Ok(()) => Reply::Empty,
        Err(e) => {
            if let RenameError::Failed(why) = &e {
                tracing::warn!("qBittorrent API: rename: {why}");
            }
            Reply::Error(StatusCode::CONFLICT, e.text())
        }
    }
}

/// The torrent a `hash` parameter names, if ringseed has it.
fn torrent_of(q: &Qbt, hash: &str) -> Option<[u8; 20]> {
    let id = parse_info_hash(&hash.trim().to_ascii_lowercase()).ok()?;
    q.service.get(id).ok().map(|_| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_as_qbittorrent_reads_them() {
        assert_eq!(parse("0", "1|2"), Ok((0, vec![1, 2])));
        assert_eq!(parse("7", "0"), Ok((7, vec![0])));
        assert_eq!(parse("x", "0"), Err(PrioError::PriorityNotInteger));
        assert_eq!(parse("2", "0"), Err(PrioError::PriorityInvalid));
        assert_eq!(parse("-1", "0"), Err(PrioError::PriorityInvalid));
        assert_eq!(parse("300", "0"), Err(PrioError::PriorityInvalid));
        assert_eq!(parse("1", "0|x"), Err(PrioError::IdNotInteger));
        assert_eq!(parse("1", ""), Err(PrioError::IdNotInteger));
        assert_eq!(parse("1", "-1"), Err(PrioError::IdInvalid));
        let many = vec!["0"; MAX_FILE_IDS + 1].join("|");
        assert_eq!(parse("1", &many), Err(PrioError::IdInvalid));
    }
}
