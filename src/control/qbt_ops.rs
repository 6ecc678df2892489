//! The service's side of the qBittorrent API's per-torrent settings beyond ringseed's own
//! (issue 14): a torrent's shown name, sequential download and first/last piece priority (kept
//! and reported), automatic torrent management, its tracker list as edited, and moving its data
//! (`setLocation`, and a category's save path under automatic management).
//!
//! Every change follows the service's rule ([`Service::change`]): checked, saved, applied once
//! the save is durable, under the state lock. A move is the exception that must do I/O first:
//! the data is moved, then the new directory saved; a failed move leaves the torrent where it was.

use super::*;
use crate::state::QbtSettings;

/// Most trackers one torrent may have after edits, and longest tracker URL.
pub const MAX_TRACKERS: usize = 200;
pub const MAX_TRACKER_URL: usize = 2048;

/// Why a tracker edit is refused (the qBittorrent layer maps each to its status and text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerEditError {
    /// `editTracker`'s `origUrl` is not one of its trackers.
    NoSuchTracker,
    /// `editTracker`'s `newUrl` is one already.
    Exists,
    /// Not a tracker URL (`http(s)://` or `udp://`, bounded).
    BadUrl,
    /// More than [`MAX_TRACKERS`].
    TooMany,
}

/// Whether `url` may be a tracker: `http://`, `https://` or `udp://` with a host, bounded.
pub fn tracker_url_ok(url: &str) -> bool {
    if url.len() > MAX_TRACKER_URL || url.chars().any(char::is_whitespace) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    ["http://", "https://", "udp://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len())
}

/// What `addTrackers` makes of `tiers`: each new URL (valid, not there yet) at the end of the
/// first tier (qBittorrent 4.5.2 adds them with tier 0); the rest skipped.
pub fn add_trackers(
    mut tiers: Vec<Vec<String>>,
    urls: &[String],
) -> Result<Vec<Vec<String>>, TrackerEditError> {
    for u in urls {
        if !tracker_url_ok(u) || tiers.iter().flatten().any(|x| x == u) {
            continue;
        }
        if tiers.iter().map(Vec::len).sum::<usize>() >= MAX_TRACKERS {
            return Err(TrackerEditError::TooMany);
        }
        match tiers.first_mut() {
            Some(first) => first.push(u.clone()),
            None => tiers.push(vec![u.clone()]),
        }
    }
    Ok(tiers)
}

/// What `editTracker` makes of `tiers`: `from` replaced by `to` in its place (`from` = `to`
/// changes nothing, as qBittorrent answers it: 200).
pub fn edit_tracker(
    mut tiers: Vec<Vec<String>>,
    from: &str,
    to: &str,
) -> Result<Vec<Vec<String>>, TrackerEditError> {
    if !tracker_url_ok(to) {
        return Err(TrackerEditError::BadUrl);
    }
    if from == to && tiers.iter().flatten().any(|x| x == from) {
        return Ok(tiers);
    }
    if tiers.iter().flatten().any(|x| x == to) {
        return Err(TrackerEditError::Exists);
    }
    let slot = tiers
        .iter_mut()
        .flatten()
        .find(|x| *x == from)
        .ok_or(TrackerEditError::NoSuchTracker)?;
    *slot = to.to_string();
    Ok(tiers)
}

/// What `removeTrackers` makes of `tiers`: the URLs named gone, empty tiers dropped. `None`
/// when none of them was there.
pub fn remove_trackers(tiers: Vec<Vec<String>>, urls: &[String]) -> Option<Vec<Vec<String>>> {
    let before: usize = tiers.iter().map(Vec::len).sum();
    let out: Vec<Vec<String>> = tiers
        .into_iter()
        .map(|t| t.into_iter().filter(|u| !urls.contains(u)).collect())
        .filter(|t: &Vec<String>| !t.is_empty())
        .collect();
    let after: usize = out.iter().map(Vec::len).sum();
    (after < before).then_some(out)
}

impl Service {
    /// A torrent's tracker tiers as they are now (edited, else its metainfo's); `None` for an
    /// unknown torrent or a magnet without metadata.
    pub fn tracker_tiers(&self, id: [u8; 20]) -> Option<Vec<Vec<String>>> {
        let all = self.lock();
        let e = all.get(&id)?;
        Some(
            e.org
                .qbt
                .trackers
                .clone()
                .unwrap_or_else(|| e.meta.trackers.clone()),
        )
    }

    /// Changes the qBittorrent settings of each of `ids` (unknown ones and magnets without
    /// metadata are skipped): saved, then applied (a tracker edit reaches the live announcer).
    pub fn set_qbt(
        &self,
        ids: &[[u8; 20]],
        f: impl Fn(&mut QbtSettings, &Metainfo) -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        let _changing = self.changes();
        for id in ids {
            let wanted = {
                let all = self.lock();
                let Some(e) = all.get(id) else { continue };
                let mut q = e.org.qbt.clone();
                f(&mut q, &e.meta)?;
                // the metainfo's own list is kept as "not edited"
                if q.trackers.as_ref() == Some(&e.meta.trackers) {
                    q.trackers = None;
                }
                if q == e.org.qbt {
                    continue;
                }
                q
            };
            let saved = wanted.clone();
            let id = *id;
            self.inner
                .db
                .call(move |c| state::save_qbt(c, &id, &saved))?
                .recv_result()?;
            let mut all = self.lock();
            if let Some(e) = all.get_mut(&id) {
                if let Some(t) = &e.torrent {
                    t.set_tiers(wanted.trackers.clone());
                }
                e.org.qbt = wanted;
                self.apply_want(id, e);
            }
        }
        Ok(())
    }

    /// Moves the data of each of `ids` into `location` (inside the data root; created),
    /// keeping it seeding or downloading from there (`torrents/setLocation`). Unknown ids are
    /// skipped; a torrent being checked is refused.
    pub fn set_location(&self, ids: &[[u8; 20]], location: &str) -> Result<(), ControlError> {
        let root = self.options().data_root.ok_or_else(|| {
            ControlError::BadRequest(
                "[torrents] data_dir is not set: save paths are inside it".into(),
            )
        })?;
        let dir = confine_save_path(&root, location)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ControlError::Io(format!("creating {}: {e}", dir.display())))?;
        let _changing = self.changes();
        for id in ids {
            self.relocate(*id, &dir)?;
        }
        Ok(())
    }

    /// Moves one torrent's data to `dir` and reopens it there.
    fn relocate(&self, id: [u8; 20], dir: &Path) -> Result<(), ControlError> {
        let mut all = self.lock();
        let Some(e) = all.get_mut(&id) else {
            return Ok(());
        };
        if e.data_dir == dir {
            return Ok(());
        }
        if e.status == Status::Checking {
            return Err(ControlError::BadRequest(format!(
                "{} is being checked: move it once the check is done",
                e.meta.info.name
            )));
        }
        let from = e.data_dir.clone();
        // A download in the incomplete directory has nothing in its data directory yet: only
        // where it goes once complete changes.
        let data_here = e.download_dir.is_none();
        let was_serving = e.serving();
        self.unserve(id, e);
        let old = e.torrent.take();
        let bits = old.as_ref().map(|t| t.verified_bitfield());
        let downloads = old.as_ref().is_some_and(|t| t.downloads());
        if let Some(o) = &old {
            e.uploaded_base += o.uploaded();
            e.org.downloaded_base += o.downloaded();
        }
        // the files close before they move (a copy across file systems must not race writes)
        drop(old);
        let tops: BTreeSet<String> = e
            .meta
            .info
            .layout
            .data_files()
            .filter_map(|(_, f)| f.path.first().cloned())
            .collect();
        let moved = if data_here {
            let present: BTreeSet<String> = tops
                .iter()
                .filter(|t| from.join(t).symlink_metadata().is_ok())
                .cloned()
                .collect();
            move_data(&present, &from, dir).map(drop)
        } else {
            Ok(())
        };
        let now_dir = if moved.is_ok() {
            dir.to_path_buf()
        } else {
            from.clone()
        };
        e.data_dir = now_dir.clone();
        self.reopen(id, e, bits.as_deref(), downloads, was_serving);
        e.files = state::stamp_files(&e.meta.info.layout, &e.data_dir);
        let save = DataSave::of(id, e);
        let new_dir = now_dir.display().to_string();
        drop(all);
        let saved = self.inner.db.call(move |c| {
            state::save_data_dir(c, &id, &new_dir)?;
            save.run(c)
        });
        saved?.recv_result()?;
        match moved {
            Ok(()) => {
                tracing::info!(to = %dir.display(), "moved the data of {}", hex(&id));
                Ok(())
            }
            Err(why) => Err(ControlError::Io(why)),
        }
    }

    /// Opens an entry's torrent object again where its data is now (its download directory,
    /// else its data directory) with the verified pieces `bits` of the object closed before
    /// (`None`: it had none, nothing is opened), writable if it was (`downloads`), and serves
    /// it again if it was served. A move or a rename of its files closes and reopens it so.
    pub(super) fn reopen(
        &self,
        id: [u8; 20],
        e: &mut Entry,
        bits: Option<&[u8]>,
        downloads: bool,
        was_serving: bool,
    ) {
        let open_dir = e.download_dir.clone().unwrap_or_else(|| e.data_dir.clone());
        let opened = match bits {
            Some(bits) if downloads => Torrent::open_download(
                e.meta.clone(),
                &open_dir,
                Start::Trust(bits.to_vec()),
                self.options().preallocate,
            ),
            Some(bits) => Torrent::open(e.meta.clone(), &open_dir, None).inspect(|(t, _)| {
                for i in 0..t.pieces.num_pieces() {
                    let byte = bits.get(i as usize / 8).copied().unwrap_or(0);
                    if byte & (0x80 >> (i % 8)) == 0 {
                        t.pieces.verified.clear(i);
                    }
                }
            }),
            None => Err(std::io::Error::other("no data opened")),
        };
        match opened {
            Ok((t, _)) => {
                e.torrent = Some(Arc::new(t));
                if was_serving {
                    self.serve(id, e);
                } else {
                    self.apply_want(id, e);
                }
            }
            Err(err) if bits.is_some() => {
                e.status = Status::Error(format!("opening the moved data: {err}"));
            }
            Err(_) => {}
        }
    }

    /// Turns automatic torrent management on or off for `ids`; turned on, a torrent with a
    /// category whose save path differs from where it is moves there (as qBittorrent does).
    pub fn set_auto_tmm(&self, ids: &[[u8; 20]], on: bool) -> Result<(), ControlError> {
        self.set_qbt(ids, |q, _| {
            q.auto_tmm = on;
            Ok(())
        })?;
        if on {
            self.follow_categories(ids)?;
        }
        Ok(())
    }

    /// Moves each of `ids` under automatic management to its category's save path (the data
    /// root for no category or a category without one).
    pub fn follow_categories(&self, ids: &[[u8; 20]]) -> Result<(), ControlError> {
        let Some(root) = self.options().data_root else {
            return Ok(());
        };
        let wanted: Vec<([u8; 20], String)> = {
            let all = self.lock();
            let cats = crate::engine::lock(&self.inner.categories);
            ids.iter()
                .filter_map(|id| {
                    let e = all.get(id).filter(|e| e.org.qbt.auto_tmm)?;
                    let path = e
                        .org
                        .category
                        .as_ref()
                        .and_then(|c| cats.get(c))
                        .filter(|p| !p.is_empty())
                        .cloned()
                        .unwrap_or_else(|| root.display().to_string());
                    Some((*id, path))
                })
                .collect()
        };
        for (id, path) in wanted {
            self.set_location(&[id], &path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(t: &[&[&str]]) -> Vec<Vec<String>> {
        t.iter()
            .map(|x| x.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn tracker_edits() {
        let t = tiers(&[&["http://a/announce", "http://b/announce"]]);
        let added = add_trackers(
            t.clone(),
            &[
                "udp://c:1".into(),
                "http://a/announce".into(),
                "nope".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            added,
            tiers(&[&["http://a/announce", "http://b/announce", "udp://c:1"]])
        );
        assert_eq!(
            add_trackers(Vec::new(), &["udp://c:1".into()]).unwrap(),
            tiers(&[&["udp://c:1"]])
        );
        assert_eq!(
            edit_tracker(t.clone(), "http://a/announce", "http://a/announce").unwrap(),
            t
        );
        assert_eq!(
            edit_tracker(t.clone(), "http://b/announce", "http://d/x").unwrap(),
            tiers(&[&["http://a/announce", "http://d/x"]])
        );
        assert_eq!(
            edit_tracker(t.clone(), "http://z/", "http://d/x"),
            Err(TrackerEditError::NoSuchTracker)
        );
        assert_eq!(
            edit_tracker(t.clone(), "http://b/announce", "http://a/announce"),
            Err(TrackerEditError::Exists)
        );
        assert_eq!(
            edit_tracker(t.clone(), "http://b/announce", "ftp://x"),
            Err(TrackerEditError::BadUrl)
        );
        assert_eq!(
            remove_trackers(added.clone(), &["udp://c:1".into()]),
            Some(t.clone())
        );
        assert_eq!(
            remove_trackers(
                tiers(&[&["http://a/"], &["http://b/"]]),
                &["http://a/".into()]
            ),
            Some(tiers(&[&["http://b/"]]))
        );
        assert_eq!(remove_trackers(t.clone(), &["udp://c:1".into()]), None);
        let many: Vec<String> = (0..MAX_TRACKERS + 1)
            .map(|i| format!("http://t{i}/"))
            .collect();
        assert_eq!(
            add_trackers(Vec::new(), &many),
            Err(TrackerEditError::TooMany)
        );
        assert!(!tracker_url_ok(&format!("http://{}", "a".repeat(3000))));
    }
}
