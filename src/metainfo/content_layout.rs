//! qBittorrent's content layout (`torrents/add` `contentLayout`, 4.3.2+): where a torrent's
//! files sit beneath its save path.
//!
//! - `Original`: as the .torrent names them (a single file at `name`, a multi-file torrent
//!   beneath `name/`).
//! - `Subfolder`: content without a top folder gets one: a single file `a.iso` goes to
//!   `a/a.iso` (the folder is the file's name without its extension, as qBittorrent names it).
//! - `NoSubfolder`: the top folder common to every file is dropped: a multi-file torrent's
//!   files go straight into the save path.
//!
//! The layout rewrites the torrent's [`FileLayout`] once, when the torrent is loaded: every
//! open, check, move and delete then works on the rewritten paths. The rewrite only adds a
//! validated component or drops one, so every path stays a plain relative path below the save
//! path.

use super::FileLayout;

/// Where a torrent's files sit beneath its save path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentLayout {
    #[default]
    Original,
    Subfolder,
    NoSubfolder,
}

/// Extensions of more than one dot that qBittorrent (through Qt's MIME database) strips whole
/// when it names a single file's folder, in any case (qbittorrent-nox 4.5.2 puts `X.TAR.GZ`
/// in `X/`).
const DOUBLE_EXTENSIONS: &[&str] = &[
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
    ".tar.lz",
    ".tar.lzma",
    ".tar.lzo",
    ".tar.Z",
];

impl ContentLayout {
    /// The qBittorrent API's name of it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentLayout::Original => "Original",
            ContentLayout::Subfolder => "Subfolder",
            ContentLayout::NoSubfolder => "NoSubfolder",
        }
    }

    /// Reads the qBittorrent API's name (exact, as qBittorrent compares it).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Original" => Some(ContentLayout::Original),
            "Subfolder" => Some(ContentLayout::Subfolder),
            "NoSubfolder" => Some(ContentLayout::NoSubfolder),
            _ => None,
        }
    }

    /// `layout` with its paths as this content layout puts them (pad entries follow their
    /// files; they are never on disk).
    pub fn apply(self, layout: &FileLayout) -> FileLayout {
        let mut out = layout.clone();
        match self {
            ContentLayout::Original => {}
            ContentLayout::Subfolder => {
                if root_folder(layout).is_none()
                    && let Some(first) = layout.files.iter().find(|f| !f.pad)
                    && let Some(name) = first.path.last()
                    && let Some(folder) = folder_for(name)
                {
                    for f in &mut out.files {
                        f.path.insert(0, folder.clone());
                    }
                }
            }
            ContentLayout::NoSubfolder => {
                if root_folder(layout).is_some() {
                    for f in &mut out.files {
                        f.path.remove(0);
                    }
                }
            }
        }
        out
    }
}

/// What qBittorrent's `content_path` names, relative to the save path, and whether the
/// torrent has more than one file: its only file, else the top folder its files share, else
/// `""` (the save path itself). Pad entries are not files here.
pub fn content_path(layout: &FileLayout) -> (String, bool) {
    let mut files = layout.files.iter().filter(|f| !f.pad);
    match (files.next(), files.next()) {
        (Some(only), None) => (only.path.join("/"), false),
        _ => (root_folder(layout).unwrap_or("").to_string(), true),
    }
}

/// The first component every entry shares, when every entry is below it.
fn root_folder(layout: &FileLayout) -> Option<&str> {
    let first = layout.files.first()?.path.first()?;
    layout
        .files
        .iter()
        .all(|f| f.path.len() > 1 && f.path.first() == Some(first))
        .then_some(first.as_str())
}

/// The folder a single file `name` gets: its name without its extension (the last dot that
/// is not its last character, or a known double extension). A name that would leave no
/// usable folder (`.hidden`, `..x`) gets none.
fn folder_for(name: &str) -> Option<String> {
    let ext_len = DOUBLE_EXTENSIONS
        .iter()
        .find(|e| {
            name.len() > e.len()
                && name.as_bytes()[name.len() - e.len()..].eq_ignore_ascii_case(e.as_bytes())
        })
        .map(|e| e.len())
        .or_else(|| {
            // A dot that ends the name starts no extension. (Not `len - 1`: the last
            // character may be longer than a byte.)
            let body = name.strip_suffix('.').unwrap_or(name);
            body.rfind('.').map(|i| name.len() - i)
        })
        .unwrap_or(0);
    let stem = &name[..name.len() - ext_len];
    // The stem of a validated component is one too unless empty, "." or "..".
    (!stem.is_empty() && stem != "." && stem != "..").then(|| stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn layout(files: &[(&[&str], bool)]) -> FileLayout {
        let mut offset = 0;
        let files = files
            .iter()
            .map(|(p, pad)| {
                let e = FileEntry {
                    path: p.iter().map(|s| s.to_string()).collect(),
                    length: 10,
                    offset,
                    pad: *pad,
                    executable: false,
                    pieces_root: None,
                };
                offset += 10;
                e
            })
            .collect();
        FileLayout::new(files, 16).unwrap()
    }

    fn paths(l: &FileLayout) -> Vec<String> {
        l.files.iter().map(|f| f.path.join("/")).collect()
    }

    #[test]
    fn the_content_path_follows_the_layout() {
        let multi = layout(&[
            (&["top", "a"], false),
            (&["top", ".pad", "0"], true),
            (&["top", "b"], false),
        ]);
        assert_eq!(content_path(&multi), ("top".into(), true));
        let flat = ContentLayout::NoSubfolder.apply(&multi);
        assert_eq!(content_path(&flat), (String::new(), true));
        let single = layout(&[(&["m.mkv"], false)]);
        assert_eq!(content_path(&single), ("m.mkv".into(), false));
        let sub = ContentLayout::Subfolder.apply(&single);
        assert_eq!(content_path(&sub), ("m/m.mkv".into(), false));
        // a multi-file torrent of one file names that file, as qBittorrent does
        let one = layout(&[(&["top", "a"], false), (&["top", ".pad", "0"], true)]);
        assert_eq!(content_path(&one), ("top/a".into(), false));
    }

    #[test]
    fn names_round_trip() {
        for c in [
            ContentLayout::Original,
            ContentLayout::Subfolder,
            ContentLayout::NoSubfolder,
        ] {
            assert_eq!(ContentLayout::parse(c.as_str()), Some(c));
        }
        assert_eq!(ContentLayout::parse("subfolder"), None);
    }

    #[test]
    fn original_keeps_the_paths() {
        let l = layout(&[(&["top", "a"], false), (&["top", "b"], false)]);
        assert_eq!(ContentLayout::Original.apply(&l), l);
    }

    #[test]
    fn subfolder_puts_a_single_file_in_its_stem() {
        let single = layout(&[(&["movie.mkv"], false)]);
        assert_eq!(
            paths(&ContentLayout::Subfolder.apply(&single)),
            ["movie/movie.mkv"]
        );
        // a multi-file torrent has its folder already
        let multi = layout(&[(&["top", "a"], false), (&["top", ".pad", "0"], true)]);
        assert_eq!(ContentLayout::Subfolder.apply(&multi), multi);
    }

    #[test]
    fn the_folder_drops_one_extension() {
        assert_eq!(folder_for("a.b.c").as_deref(), Some("a.b"));
        assert_eq!(folder_for("noext").as_deref(), Some("noext"));
        assert_eq!(folder_for("dot.").as_deref(), Some("dot."));
        assert_eq!(folder_for("x.tar.gz").as_deref(), Some("x"));
        assert_eq!(folder_for("X.TAR.GZ").as_deref(), Some("X"));
        assert_eq!(folder_for("y.torrent.part").as_deref(), Some("y.torrent"));
        assert_eq!(folder_for(".tar.gz").as_deref(), Some(".tar"));
        assert_eq!(folder_for(".hidden"), None);
        assert_eq!(folder_for("..x"), None);
        assert_eq!(folder_for("...x").as_deref(), None);
        // Names whose last character is longer than a byte (this once sliced inside it).
        assert_eq!(folder_for("abc€").as_deref(), Some("abc€"));
        assert_eq!(folder_for("película.mkv").as_deref(), Some("película"));
        assert_eq!(folder_for("a.€").as_deref(), Some("a"));
        assert_eq!(folder_for("€").as_deref(), Some("€"));
        // without a folder the file stays where Original puts it
        let hidden = layout(&[(&[".hidden"], false)]);
        assert_eq!(ContentLayout::Subfolder.apply(&hidden), hidden);
    }

    #[test]
    fn no_subfolder_drops_the_top_folder() {
        let multi = layout(&[
            (&["top", "a"], false),
            (&["top", ".pad", "0"], true),
            (&["top", "d", "b"], false),
        ]);
        assert_eq!(
            paths(&ContentLayout::NoSubfolder.apply(&multi)),
            ["a", ".pad/0", "d/b"]
        );
        let single = layout(&[(&["one.bin"], false)]);
        assert_eq!(ContentLayout::NoSubfolder.apply(&single), single);
    }
}
