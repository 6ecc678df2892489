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
    /// wants pieces again (a skipped file made wanted) downloads again: in place when its
    /// torrent object still writes where the data is, else (its data moved out of the
    /// incomplete directory, or opened read-only after a copy there) opened again for download
    /// where the data is now.
    pub(super) fn apply_want(&self, id: [u8; 20], e: &mut Entry) {
        let Some(t) = e.torrent.clone() else { return };
        t.set_want(plan(e));
        if t.wanted_complete() || e.downloading || e.status != Status::Ready {
            return;
        }
        let writes_here =
            t.data_dir == e.data_dir || e.download_dir.as_ref().is_some_and(|d| *d == t.data_dir);
        // the seeding time so far is kept; it counts again once finished
        if let Some(since) = e.seeding_since {
            e.seeding_base += since.elapsed().as_secs();
            e.seeding_since = Some(Instant::now());
        }
        e.downloading = true;
        if t.downloads() && writes_here {
            return;
        }
        let was_serving = e.serving();
        self.unserve(id, e);
        e.uploaded_base += t.uploaded();
        e.org.downloaded_base += t.downloaded();
        let bits = t.verified_bitfield();
        e.torrent = None;
        drop(t);
        // opened at `e.data_dir` (no download directory any more): this object writes there,
        // so the call this makes (through `serve`) leaves it as it is
        self.reopen(id, e, Some(&bits), true, was_serving);
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

/// Why a `renameFile`/`renameFolder` is refused (qBittorrent 4.5.2 answers each 409 with
/// these texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameError {
    /// `The new path is invalid: '…'.` (empty, `.` or `..` components, a NUL, too long).
    Invalid(String),
    /// `Absolute path isn't allowed: '…'.`
    Absolute(String),
    /// `No such file: '…'.` / `No such folder: '…'.`
    NoSuch { folder: bool, path: String },
    /// `The file already exists: '…'.` (a file of the torrent, or something on disk).
    Exists(String),
    /// Being checked, or the disk refused.
    Failed(String),
}

impl RenameError {
    /// qBittorrent's text for it.
    pub fn text(&self) -> String {
        match self {
            RenameError::Invalid(p) => format!("The new path is invalid: '{p}'."),
            RenameError::Absolute(p) => format!("Absolute path isn't allowed: '{p}'."),
            RenameError::NoSuch {
                folder: false,
                path,
            } => format!("No such file: '{path}'."),
            RenameError::NoSuch { folder: true, path } => format!("No such folder: '{path}'."),
            RenameError::Exists(p) => format!("The file already exists: '{p}'."),
            RenameError::Failed(m) => m.clone(),
        }
    }
}

/// Longest path a rename may give (bytes) and deepest.
const MAX_PATH: usize = 4096;
const MAX_DEPTH: usize = 64;

/// The components of a relative path inside the save path: `/`-separated, none empty, `.` or
/// `..` (no way out of the save path, nothing qBittorrent would normalise differently).
pub fn relative_components(path: &str) -> Result<Vec<String>, RenameError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.starts_with('/') {
        return Err(RenameError::Absolute(path.to_string()));
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    let bad = trimmed.is_empty()
        || path.len() > MAX_PATH
        || parts.len() > MAX_DEPTH
        || path.contains(['\0', '\\'])
        || parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..");
    if bad {
        return Err(RenameError::Invalid(path.to_string()));
    }
    Ok(parts.into_iter().map(str::to_string).collect())
}

/// The new paths of the data files `paths` (each as components) after renaming the file (or,
/// with `folder`, the folder) `old` to `new`: `(index into paths, new components)` for each
/// file that moves; empty when `old` is `new`.
pub fn plan_rename(
    paths: &[Vec<String>],
    old: &str,
    new: &str,
    folder: bool,
) -> Result<Vec<(usize, Vec<String>)>, RenameError> {
    let new_parts = relative_components(new)?;
    let no_such = || RenameError::NoSuch {
        folder,
        path: old.to_string(),
    };
    let old_parts = relative_components(old).map_err(|_| no_such())?;
    let moved: Vec<(usize, Vec<String>)> = paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let hit = if folder {
                p.len() > old_parts.len() && p.starts_with(&old_parts)
            } else {
                *p == old_parts
            };
            hit.then(|| {
                let mut to = new_parts.clone();
                to.extend_from_slice(&p[old_parts.len()..]);
                (i, to)
            })
        })
        .collect();
    if moved.is_empty() {
        return Err(no_such());
    }
    if old_parts == new_parts {
        return Ok(Vec::new());
    }
    // a folder into itself (`a` to `a/b`) would move under its own files
    if folder && new_parts.starts_with(&old_parts) {
        return Err(RenameError::Invalid(new.to_string()));
    }
    let staying: Vec<&Vec<String>> = paths
        .iter()
        .enumerate()
        .filter(|(i, _)| !moved.iter().any(|(m, _)| m == i))
        .map(|(_, p)| p)
        .collect();
    for (_, to) in &moved {
        // the same path, or a file where the other needs a folder (or the reverse)
        let clash = staying
            .iter()
            .any(|p| p.starts_with(to) || to.starts_with(p));
        if clash {
            return Err(RenameError::Exists(new.to_string()));
        }
    }
    Ok(moved)
}

/// Checks that the directories `dirs` (components below `base`, outermost first) are real
/// directories where they exist: a symlink planted there could lead a rename out of the save
/// path (the last component of a rename is not followed, the ones before it are).
fn real_dirs(base: &Path, dirs: &[String], new: &str) -> Result<(), RenameError> {
    let mut p = base.to_path_buf();
    for d in dirs {
        p.push(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(RenameError::Exists(new.to_string())),
            Err(_) => break,
        }
    }
    Ok(())
}

/// Removes the directories of `path` (below `base`) that a rename left empty, deepest first.
fn remove_empty_dirs(base: &Path, path: &[String]) {
    for n in (1..path.len()).rev() {
        let dir: PathBuf = base.join(path[..n].iter().collect::<PathBuf>());
        // fails (and stops) at the first one that is not empty
        if std::fs::remove_dir(&dir).is_err() {
            break;
        }
    }
}

/// The data files' paths as `/`-joined text, in `torrents/files` order.
fn joined_paths(layout: &crate::metainfo::FileLayout) -> Vec<String> {
    layout.data_files().map(|(_, f)| f.path.join("/")).collect()
}

/// Puts the saved paths of renamed files (`QbtSettings::file_paths`) into `layout`; a list
/// that does not fit (another count, a path that is not a plain relative one, two files at
/// one path: a hand-edited state) is ignored.
pub fn apply_paths(layout: &mut crate::metainfo::FileLayout, saved: &[String]) {
    let data: Vec<usize> = layout.data_files().map(|(i, _)| i).collect();
    if saved.is_empty() || saved.len() != data.len() {
        return;
    }
    let Ok(parts) = saved
        .iter()
        .map(|p| relative_components(p))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let unique: std::collections::HashSet<&Vec<String>> = parts.iter().collect();
    if unique.len() != parts.len() {
        return;
    }
    for (i, p) in data.into_iter().zip(parts) {
        layout.files[i].path = p;
    }
}

impl Service {
    /// Renames the file (or with `folder`, the folder) `old` of torrent `id` to `new`, both
    /// relative to its save path (`torrents/renameFile`, `renameFolder`): on disk where its
    /// data is, in the paths its torrent object opens (closed and opened again, as a move
    /// does) and in the state. A file not on disk yet only changes its name.
    pub fn rename_path(
        &self,
        id: [u8; 20],
        old: &str,
        new: &str,
        folder: bool,
    ) -> Result<(), RenameError> {
        let _changing = self.changes();
        let mut all = self.lock();
        let no_such = || RenameError::NoSuch {
            folder,
            path: old.to_string(),
        };
        let e = all.get_mut(&id).ok_or_else(no_such)?;
        if e.status == Status::Checking {
            return Err(RenameError::Failed(format!(
                "{} is being checked: rename once the check is done",
                e.meta.info.name
            )));
        }
        if matches!(e.status, Status::Moving(_)) {
            return Err(RenameError::Failed(format!(
                "the data of {} is being moved: rename once the move is done",
                e.meta.info.name
            )));
        }
        let index: Vec<usize> = e.meta.info.layout.data_files().map(|(i, _)| i).collect();
        let paths: Vec<Vec<String>> = e
            .meta
            .info
            .layout
            .data_files()
            .map(|(_, f)| f.path.clone())
            .collect();
        let moves = plan_rename(&paths, old, new, folder)?;
        if moves.is_empty() {
            return Ok(());
        }
        let base = e.download_dir.clone().unwrap_or_else(|| e.data_dir.clone());
        let file = |p: &[String]| base.join(p.iter().collect::<PathBuf>());
        for (k, to) in &moves {
            let from = &paths[*k];
            real_dirs(&base, &from[..from.len() - 1], new)?;
            real_dirs(&base, &to[..to.len() - 1], new)?;
            if file(to).symlink_metadata().is_ok() {
                return Err(RenameError::Exists(new.to_string()));
            }
        }
        let was_serving = e.serving();
        self.unserve(id, e);
        let before = e.torrent.take();
        let bits = before.as_ref().map(|t| t.verified_bitfield());
        let downloads = before.as_ref().is_some_and(|t| t.downloads());
        if let Some(o) = &before {
            e.uploaded_base += o.uploaded();
            e.org.downloaded_base += o.downloaded();
        }
        drop(before);
        let mut failed = None;
        for (k, to) in &moves {
            let (src, dst) = (file(&paths[*k]), file(to));
            if src.symlink_metadata().is_ok() {
                let moved = dst
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::rename(&src, &dst));
                if let Err(err) = moved {
                    failed = Some(format!("renaming {}: {err}", src.display()));
                    break;
                }
                remove_empty_dirs(&base, &paths[*k]);
            }
            // the files renamed so far keep their new names, on disk as in the layout
            e.meta.info.layout.files[index[*k]].path = to.clone();
        }
        self.reopen(id, e, bits.as_deref(), downloads, was_serving);
        e.files = state::stamp_files(&e.meta.info.layout, &e.data_dir);
        e.org.qbt.file_paths = joined_paths(&e.meta.info.layout);
        let q = e.org.qbt.clone();
        let save = DataSave::of(id, e);
        drop(all);
        let saved = self.inner.db.call(move |c| {
            state::save_qbt(c, &id, &q)?;
            save.run(c)
        });
        if let Err(err) = saved
            .map_err(ControlError::from)
            .and_then(|r| r.recv_result().map_err(ControlError::from))
        {
            return Err(RenameError::Failed(format!("saving the new names: {err}")));
        }
        match failed {
            Some(why) => Err(RenameError::Failed(why)),
            None => Ok(()),
        }
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

    fn paths(list: &[&str]) -> Vec<Vec<String>> {
        list.iter()
            .map(|p| p.split('/').map(str::to_string).collect())
            .collect()
    }

    fn parts(p: &str) -> Vec<String> {
        p.split('/').map(str::to_string).collect()
    }

    #[test]
    fn renames_as_qbittorrent_answers_them() {
        let files = paths(&["m/a.bin", "m/d/b.bin", "m/d/c.bin"]);
        assert_eq!(
            plan_rename(&files, "m/a.bin", "m/e/a2.bin", false),
            Ok(vec![(0, parts("m/e/a2.bin"))])
        );
        assert_eq!(
            plan_rename(&files, "m/d", "m/x/y", true),
            Ok(vec![(1, parts("m/x/y/b.bin")), (2, parts("m/x/y/c.bin"))])
        );
        assert_eq!(plan_rename(&files, "m", "n", true).map(|v| v.len()), Ok(3));
        assert_eq!(plan_rename(&files, "m/a.bin", "m/a.bin", false), Ok(vec![]));
        let no_file = RenameError::NoSuch {
            folder: false,
            path: "m/zz".into(),
        };
        assert_eq!(plan_rename(&files, "m/zz", "m/y", false), Err(no_file));
        // a folder is not a file, a file is not a folder
        assert!(matches!(
            plan_rename(&files, "m/d", "m/y", false),
            Err(RenameError::NoSuch { .. })
        ));
        assert!(matches!(
            plan_rename(&files, "m/a.bin", "m/y", true),
            Err(RenameError::NoSuch { .. })
        ));
        for (new, err) in [
            ("m/d/b.bin", RenameError::Exists("m/d/b.bin".into())),
            ("m/d", RenameError::Exists("m/d".into())),
            ("m/a.bin/x", RenameError::Exists("m/a.bin/x".into())),
            ("/tmp/x", RenameError::Absolute("/tmp/x".into())),
            ("", RenameError::Invalid("".into())),
            ("m/../x", RenameError::Invalid("m/../x".into())),
            ("m/./x", RenameError::Invalid("m/./x".into())),
            ("m//x", RenameError::Invalid("m//x".into())),
        ] {
            let got = if new == "m/a.bin/x" {
                plan_rename(&files, "m/d/c.bin", new, false)
            } else {
                plan_rename(&files, "m/a.bin", new, false)
            };
            assert_eq!(got, Err(err), "{new}");
        }
        assert_eq!(
            plan_rename(&files, "m/d", "m/d/e", true),
            Err(RenameError::Invalid("m/d/e".into()))
        );
        assert_eq!(
            plan_rename(&files, "m/d", "m/a.bin", true),
            Err(RenameError::Exists("m/a.bin".into()))
        );
        assert_eq!(
            RenameError::NoSuch {
                folder: true,
                path: "m/zz".into()
            }
            .text(),
            "No such folder: 'm/zz'."
        );
    }

    #[test]
    fn saved_paths_apply_only_when_they_fit() {
        use crate::download::want::tests::layout;
        let mut l = layout(&[10, 20], 16);
        apply_paths(&mut l, &["x/a".into(), "b".into()]);
        assert_eq!(joined_paths(&l), ["x/a", "b"]);
        for bad in [
            vec!["only-one".to_string()],
            vec!["../up".into(), "b".into()],
            vec!["/abs".into(), "b".into()],
            vec!["same".into(), "same".into()],
        ] {
            let mut l = layout(&[10, 20], 16);
            apply_paths(&mut l, &bad);
            assert_eq!(joined_paths(&l), ["f0", "f1"], "{bad:?}");
        }
    }

    /// A symlink where the torrent has a directory stops a rename through it.
    #[test]
    fn a_symlinked_directory_is_not_renamed_through() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("save");
        std::fs::create_dir_all(base.join("m/real")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), base.join("m/link")).unwrap();
        assert_eq!(real_dirs(&base, &parts("m/real/new"), "n"), Ok(()));
        assert_eq!(
            real_dirs(&base, &parts("m/link/x"), "n"),
            Err(RenameError::Exists("n".into()))
        );
        // emptied directories go, up to the first one that is not empty
        std::fs::create_dir_all(base.join("m/real/deep/er")).unwrap();
        remove_empty_dirs(&base, &parts("m/real/deep/er/f.bin"));
        assert!(!base.join("m/real").exists() && base.join("m/link").exists());
    }
}
