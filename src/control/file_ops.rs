//! The service's side of a torrent's file priorities (the qBittorrent API's
//! `torrents/filePrio`): kept in the torrent's qBittorrent settings, and handed to the engine
//! as the plan of wanted pieces ([`crate::download::want`]) whenever a torrent object is
//! served or the settings change.
//!
//! A download whose wanted pieces are all verified is finished: it seeds what it has (qBittorrent
//! shows it as seeding with progress below 1), is not announced `completed`, and a file made
//! wanted again later makes it download again, as qBittorrent does.

use super::*;
use crate::download::want::{self, Want};

/// Most file indices one `filePrio` call may name (a torrent has at most 100 000 files).
pub const MAX_FILE_IDS: usize = crate::metainfo::layout::MAX_FILES;

/// The plan of wanted pieces an entry's settings make.
fn plan(e: &Entry) -> Want {
    let q = &e.org.qbt;
    Want::plan(
        &e.meta.info.layout,
        &q.file_prio,
        q.first_last_prio,
        q.seq_dl,
    )
}

/// The priorities of `files` data files after setting `ids` to `priority` (`prio`: the saved
/// ones, empty meaning all normal). `None`: an index is not a file of the torrent.
pub fn with_priority(prio: &[u8], files: usize, ids: &[usize], priority: u8) -> Option<Vec<u8>> {
    if ids.iter().any(|&i| i >= files) {
        return None;
    }
    let mut out: Vec<u8> = (0..files)
        .map(|k| prio.get(k).copied().unwrap_or(want::NORMAL))
        .collect();
    for &i in ids {
        out[i] = priority;
    }
    if out.iter().all(|&p| p == want::NORMAL) {
        out.clear();
    }
    Some(out)
}

/// The layout indices of the data files at priority 0.
pub fn skipped_files(
    layout: &crate::metainfo::FileLayout,
    prio: &[u8],
) -> std::collections::HashSet<usize> {
    layout
        .data_files()
        .enumerate()
        .filter(|(k, _)| prio.get(*k) == Some(&want::SKIP))
        .map(|(_, (i, _))| i)
        .collect()
}

impl Service {
    /// Hands an entry's plan of wanted pieces to its torrent object. A finished download that
    /// wants pieces again (a skipped file made wanted) downloads again, as long as its files are
    /// still where its torrent object writes them.
    pub(super) fn apply_want(&self, e: &mut Entry) {
        let Some(t) = e.torrent.clone() else { return };
        t.set_want(plan(e));
        let writes_here =
            t.data_dir == e.data_dir || e.download_dir.as_ref().is_some_and(|d| *d == t.data_dir);
        if !t.wanted_complete()
            && t.downloads()
            && writes_here
            && !e.downloading
            && e.status == Status::Ready
        {
            // the seeding time so far is kept; it counts again once finished
            if let Some(since) = e.seeding_since {
                e.seeding_base += since.elapsed().as_secs();
                e.seeding_since = Some(Instant::now());
            }
            e.downloading = true;
        }
    }

    /// Sets the priority of the data files `ids` (indices as `torrents/files` lists them) of
    /// torrent `id`: saved, then acted on by the download. `Ok(false)`: an index is not one of
    /// its files (nothing changed).
    pub fn set_file_priority(
        &self,
        id: [u8; 20],
        ids: &[usize],
        priority: u8,
    ) -> Result<bool, ControlError> {
        if !want::valid_priority(priority) {
            return Err(ControlError::BadRequest(format!(
                "priority {priority} is not one of 0, 1, 6, 7"
            )));
        }
        let valid = std::cell::Cell::new(true);
        self.set_qbt(&[id], |s, meta| {
            let files = meta.info.layout.data_files().count();
            match with_priority(&s.file_prio, files, ids, priority) {
                Some(p) => s.file_prio = p,
                None => valid.set(false),
            }
            Ok(())
        })?;
        Ok(valid.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_set_per_file_and_all_normal_is_empty() {
        assert_eq!(with_priority(&[], 3, &[1], 0), Some(vec![1, 0, 1]));
        assert_eq!(
            with_priority(&[1, 0, 1], 3, &[0, 2], 7),
            Some(vec![7, 0, 7])
        );
        assert_eq!(with_priority(&[1, 0, 1], 3, &[1], 1), Some(vec![]));
        assert_eq!(with_priority(&[1, 0], 3, &[3], 0), None);
        // a saved list of the wrong length (a hand-edited state) is read as normal past its end
        assert_eq!(with_priority(&[0], 2, &[1], 6), Some(vec![0, 6]));
    }
}
