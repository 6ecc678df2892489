//! The service's side of the qBittorrent API's per-torrent settings beyond ringseed's own
//! (issue 14): a torrent's shown name, sequential download and first/last piece priority (kept
//! and reported), automatic torrent management, its tracker list as edited, and moving its data
//! (`setLocation`, and a category's save path under automatic management).
//!
//! Every change follows the service's rule ([`Service::change`]): checked, saved, applied once
//! the save is durable, under the state lock. A move is the exception that must do I/O first,
//! and may take hours across file systems: the torrent is marked `moving` under the lock, its
//! data is moved on a mover thread with no lock held (every other call and the tick go on),
//! then the new directory is saved and the torrent opened there; a failed move leaves the
//! torrent where it was, with every file in its old place.

use super::*;
use crate::state::QbtSettings;

/// How long a move waits for the engine's workers to let go of the torrent's files (a
/// download's writes must not race the copy) before it moves them anyway.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// One torrent's move, as the mover thread takes it.
pub(super) struct MoveJob {
    id: [u8; 20],
    from: PathBuf,
    to: PathBuf,
    /// Its top-level files and directories present at `from`.
    present: BTreeSet<String>,
    /// The closed torrent object, until the last worker drops it.
    closing: Option<std::sync::Weak<Torrent>>,
    /// A completed download leaving the incomplete directory `from` for its data directory
    /// `to` (else a `setLocation`: its data directory becomes `to`).
    completing: bool,
}

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
    /// keeping it seeding or downloading from there (`torrents/setLocation`). Returns once the
    /// moves have begun, as qBittorrent does: each torrent shows `moving` until its data is in
    /// place (a mover thread renames it, or copies it across file systems, with no lock held)
    /// and it is opened there again. Unknown ids are skipped; a torrent being checked or
    /// moved is refused.
    pub fn set_location(&self, ids: &[[u8; 20]], location: &str) -> Result<(), ControlError> {
        let root = self.options().data_root.ok_or_else(|| {
            ControlError::BadRequest(
                "[torrents] data_dir is not set: save paths are inside it".into(),
            )
        })?;
        let dir = confine_save_path(&root, location)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ControlError::Io(format!("creating {}: {e}", dir.display())))?;
        let mut jobs = Vec::new();
        let begun = {
            let _changing = self.changes();
            ids.iter().try_for_each(|id| {
                if let Some(job) = self.begin_move(*id, &dir)? {
                    jobs.push(job);
                }
                Ok(())
            })
        };
        self.spawn_moves(jobs);
        begun
    }

    /// Runs `jobs` in order on a mover thread (on this one if no thread can start, rather than
    /// leave the torrents `moving`).
    pub(super) fn spawn_moves(&self, jobs: Vec<MoveJob>) {
        if !jobs.is_empty() {
            let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(jobs)));
            let run = |mover: &Service, q: &Mutex<std::collections::VecDeque<MoveJob>>| {
                while let Some(job) = crate::engine::lock(q).pop_front() {
                    mover.run_move(job);
                }
            };
            let (mover, q) = (self.clone(), queue.clone());
            let started = std::thread::Builder::new()
                .name("ringseed-move".into())
                .spawn(move || run(&mover, &q));
            if let Err(e) = started {
                // No thread to spare: move here rather than leave the torrents `moving`.
                tracing::warn!("starting a mover thread: {e}; moving on the caller's thread");
                run(self, &queue);
            }
        }
    }

    /// The first step of a move, under the state lock: closes the torrent object (its totals
    /// kept), marks the entry `moving` and returns what the mover needs; `None` when there is
    /// nothing to move.
    fn begin_move(&self, id: [u8; 20], dir: &Path) -> Result<Option<MoveJob>, ControlError> {
        let mut all = self.lock();
        let Some(e) = all.get_mut(&id) else {
            return Ok(None);
        };
        if e.data_dir == dir {
            return Ok(None);
        }
        match &e.status {
            Status::Checking => {
                return Err(ControlError::BadRequest(format!(
                    "{} is being checked: move it once the check is done",
                    e.meta.info.name
                )));
            }
            Status::Moving(m) if m.to == dir => return Ok(None),
            Status::Moving(_) => {
                return Err(ControlError::BadRequest(format!(
                    "the data of {} is being moved already: move it again once it is done",
                    e.meta.info.name
                )));
            }
            Status::Ready | Status::Error(_) => {}
        }
        Ok(Some(self.start_move(id, e, dir, false)))
    }

    /// Closes an entry's torrent object (its totals kept), marks it `moving` to `dir` and
    /// returns the mover's job: its data directory's files (a `setLocation`; none for a
    /// download still in the incomplete directory, whose data directory is only where it goes
    /// once complete), or with `completing` those of its incomplete directory.
    pub(super) fn start_move(
        &self,
        id: [u8; 20],
        e: &mut Entry,
        dir: &Path,
        completing: bool,
    ) -> MoveJob {
        let (from, data_here) = match (&e.download_dir, completing) {
            (Some(d), true) => (d.clone(), true),
            (d, _) => (e.data_dir.clone(), d.is_none()),
        };
        let was_serving = e.serving();
        self.unserve(id, e);
        let old = e.torrent.take();
        let size = e.meta.info.layout.total_length;
        let moving = Moving {
            to: dir.to_path_buf(),
            bits: old.as_ref().map(|t| t.verified_bitfield()),
            verified: old.as_ref().map_or(0, |t| t.pieces.verified.count()),
            left: old.as_ref().map_or(size, |t| t.left()),
            // A completed download seeds from its new place (as its files were all written).
            downloads: !completing && old.as_ref().is_some_and(|t| t.downloads()),
            was_serving,
            recheck: false,
        };
        if let Some(o) = &old {
            e.uploaded_base += o.uploaded();
            e.org.downloaded_base += o.downloaded();
        }
        // The workers drop their handles as they let the torrent go; the mover waits for the
        // last one, so no write of a download races the copy.
        let closing = old.as_ref().map(Arc::downgrade);
        drop(old);
        let present: BTreeSet<String> = if data_here {
            e.tops_at(&from)
        } else {
            BTreeSet::new()
        };
        e.status = Status::Moving(moving);
        tracing::info!(to = %dir.display(), "moving the data of {}", e.meta.info.name);
        MoveJob {
            id,
            from,
            to: dir.to_path_buf(),
            present,
            closing,
            completing,
        }
    }

    /// The rest of a move, on the mover thread: the files move with no lock held; then, under
    /// the state lock again, the entry takes its new place (or stays at the old one if the
    /// move failed, with nothing lost), opens there, is saved and served as it was.
    fn run_move(&self, job: MoveJob) {
        if let Some(w) = &job.closing {
            let until = std::time::Instant::now() + CLOSE_WAIT;
            while w.strong_count() > 0 && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        // Noted before the first file moves: a start after a crash part way looks for the data
        // at both places (`Service::recover_move`) instead of finding its files gone.
        let moved = if job.present.is_empty() {
            Ok(())
        } else if !self.note_move(job.id, &job.to) {
            Err("the move could not be noted in the state".to_string())
        } else {
            move_data(&job.present, &job.from, &job.to, Across::Copy).map(drop)
        };
        let _changing = self.changes();
        let mut all = self.lock();
        let Some(e) = all.get_mut(&job.id) else {
            // Removed (without its data) while it moved: the data stays where it went.
            tracing::info!(to = %job.to.display(), "moved the data of a removed torrent ({})", hex(&job.id));
            return;
        };
        // Removed and added again meanwhile: that entry is not this move's.
        if !matches!(e.status, Status::Moving(_)) {
            return;
        }
        let Status::Moving(m) = std::mem::replace(&mut e.status, Status::Ready) else {
            return;
        };
        match (&moved, job.completing) {
            // Complete where it belongs: no incomplete directory any more.
            (Ok(()), true) => e.download_dir = None,
            (Ok(()), false) => e.data_dir = job.to.clone(),
            // Still where it was: its incomplete directory, or its old data directory.
            (Err(_), _) => {}
        }
        let now_dir = e.data_dir.clone();
        self.reopen(
            job.id,
            e,
            m.bits.as_deref(),
            m.downloads,
            m.was_serving && !e.paused,
        );
        e.files = state::stamp_files(&e.meta.info.layout, &e.data_dir);
        if let Err(why) = &moved {
            // As qBittorrent: the torrent goes on where its data still is, the failure logged.
            tracing::error!(
                "moving the data of {} (it stays where it was): {why}",
                e.meta.info.name
            );
        } else {
            tracing::info!(to = %job.to.display(), "moved the data of {}", e.meta.info.name);
        }
        let save = DataSave::of(job.id, e);
        let new_dir = now_dir.display().to_string();
        let recheck = m.recheck && e.status == Status::Ready;
        if recheck {
            e.status = Status::Checking;
        }
        drop(all);
        let saved = self.inner.db.call(move |c| {
            state::save_data_dir(c, &job.id, &new_dir)?;
            save.run(c)
        });
        if let Err(err) = saved
            .map_err(ControlError::from)
            .and_then(|r| Ok(r.recv_result()?))
        {
            self.inner
                .counters
                .db_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("saving the new place of {}: {err}", hex(&job.id));
        }
        if recheck {
            let _ = self.inner.checks.send((job.id, CheckReason::Requested));
        }
        drop(_changing);
        self.apply_queue();
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
