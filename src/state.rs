//! Resume state: what `ringseed run` needs to seed again after a restart without hashing, kept in
//! the node's SQLite database (component `"state"`, see [`crate::db`]).
//!
//! Per torrent: the .torrent bytes, where its data is, when it was added, whether it is paused,
//! its limits, upload and seeding-time totals, the bitfield of pieces verified at the last check
//! and each file's size and mtime as they were at that check. At start a torrent whose files
//! still have those sizes and mtimes takes its bitfield from here; any other torrent is hashed.
//!
//! A magnet still waiting for its metadata is kept too (table `magnets`: its URI, which holds
//! the info-hashes, name, trackers and `x.pe` peers, with the options it was added with and the
//! peers given since), so a restart fetches its metadata again; once fetched, one job replaces
//! it with the torrent's record ([`put_from_magnet`]).
//!
//! The functions take a `&Connection` so they run as jobs of the [`crate::db::DbWriter`].

use std::path::Path;

use rusqlite::{Connection, params};

use crate::metainfo::{ContentLayout, FileLayout};

/// This module's component name in `schema_version`.
pub const COMPONENT: &str = "state";

/// Schema steps of the `"state"` component (append only).
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE torrents (
         info_hash BLOB PRIMARY KEY CHECK (length(info_hash) = 20),
         torrent BLOB NOT NULL,
         source TEXT,
         data_dir TEXT NOT NULL,
         added_at INTEGER NOT NULL,
         paused INTEGER NOT NULL DEFAULT 0,
         stopped_by TEXT,
         upload_rate_limit INTEGER,
         ratio_limit REAL,
         seed_time_limit_s INTEGER,
         uploaded INTEGER NOT NULL DEFAULT 0,
         seeding_s INTEGER NOT NULL DEFAULT 0,
         verified BLOB
     );
     CREATE TABLE torrent_files (
         info_hash BLOB NOT NULL REFERENCES torrents (info_hash) ON DELETE CASCADE,
         file_index INTEGER NOT NULL,
         size INTEGER,
         mtime_ns INTEGER,
         PRIMARY KEY (info_hash, file_index)
     ) WITHOUT ROWID;",
    "CREATE TABLE global_limits (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         upload_rate_limit INTEGER,
         torrent_upload_rate_limit INTEGER,
         ratio_limit REAL,
         seed_time_limit_s INTEGER
     );",
    // Where a download in progress lives when `[torrents] incomplete_dir` is set.
    "ALTER TABLE torrents ADD COLUMN download_dir TEXT;",
    "ALTER TABLE torrents ADD COLUMN download_rate_limit INTEGER;
     ALTER TABLE global_limits ADD COLUMN download_rate_limit INTEGER;
     ALTER TABLE global_limits ADD COLUMN torrent_download_rate_limit INTEGER;",
    // Magnets waiting for their metadata (peers: addresses given besides the URI's `x.pe`,
    // space-separated).
    "CREATE TABLE magnets (
         info_hash BLOB PRIMARY KEY CHECK (length(info_hash) = 20),
         uri TEXT NOT NULL,
         added_at INTEGER NOT NULL,
         save_path TEXT,
         paused INTEGER NOT NULL DEFAULT 0,
         skip_check INTEGER,
         source TEXT,
         trusted_path INTEGER NOT NULL DEFAULT 0,
         peers TEXT NOT NULL DEFAULT ''
     );",
    // Organisation (issue 14): categories, tags, inactive-seeding limits, queueing. Every new
    // column has a default that means "as before", so an older state loads unchanged.
    "ALTER TABLE torrents ADD COLUMN category TEXT;
     ALTER TABLE torrents ADD COLUMN tags TEXT NOT NULL DEFAULT '';
     ALTER TABLE torrents ADD COLUMN inactive_seed_time_limit_s INTEGER;
     ALTER TABLE torrents ADD COLUMN queue_pos INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE torrents ADD COLUMN force_start INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE torrents ADD COLUMN last_activity INTEGER;
     ALTER TABLE torrents ADD COLUMN completed_at INTEGER;
     ALTER TABLE magnets ADD COLUMN category TEXT;
     ALTER TABLE magnets ADD COLUMN tags TEXT NOT NULL DEFAULT '';
     CREATE TABLE categories (name TEXT PRIMARY KEY, save_path TEXT NOT NULL);
     CREATE TABLE tags (name TEXT PRIMARY KEY);
     CREATE TABLE global_settings (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         inactive_seed_time_limit_s INTEGER,
         limit_action TEXT,
         queueing INTEGER,
         max_active_downloads INTEGER,
         max_active_uploads INTEGER,
         max_active_torrents INTEGER
     );",
    // The qBittorrent API's per-torrent settings (issue 14): a name of its own (`rename`),
    // sequential download and first/last piece priority (accepted, reported), automatic
    // management, the tracker list as edited (JSON tiers; NULL: the metainfo's), and the
    // bytes downloaded by earlier runs (all-time total). Defaults mean "as before".
    "ALTER TABLE torrents ADD COLUMN display_name TEXT;
     ALTER TABLE torrents ADD COLUMN seq_dl INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE torrents ADD COLUMN first_last_prio INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE torrents ADD COLUMN auto_tmm INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE torrents ADD COLUMN trackers TEXT;
     ALTER TABLE torrents ADD COLUMN downloaded INTEGER NOT NULL DEFAULT 0;",
    // qBittorrent's content layout of a torrent (`contentLayout`), also for a magnet waiting
    // for its metadata: 'Original' (the .torrent's paths) is what every older record had.
    "ALTER TABLE torrents ADD COLUMN content_layout TEXT NOT NULL DEFAULT 'Original';
     ALTER TABLE magnets ADD COLUMN content_layout TEXT NOT NULL DEFAULT 'Original';",
    // The qBittorrent API's file priorities (`torrents/filePrio`): one byte per data file, in
    // the order `torrents/files` lists them; NULL (every older record): all normal.
    "ALTER TABLE torrents ADD COLUMN file_prio BLOB;",
    // Renamed files (`torrents/renameFile`, `renameFolder`): every data file's path below the
    // save path, as a JSON list in the order of `torrents/files`; NULL: as laid out.
    "ALTER TABLE torrents ADD COLUMN file_paths TEXT;",
    // Where its data was being moved when the node stopped (`setLocation`, or a completed
    // download leaving its incomplete directory): set before the first file moves, cleared
    // with the new place. A start that finds it set looks where the data is.
    "ALTER TABLE torrents ADD COLUMN moving_to TEXT;",
];

/// One file as it was on disk at the last check: `None` when it was absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
}

/// Per-torrent limits; `None` falls back to the global setting.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Upload bytes per second (0 = unlimited).
    pub upload_rate: Option<u64>,
    /// Download bytes per second (0 = unlimited).
    #[serde(default)]
    pub download_rate: Option<u64>,
    /// Stop or remove once uploaded / size reaches this.
    pub ratio: Option<f64>,
    /// Stop or remove after this many seconds of seeding.
    pub seed_time_s: Option<u64>,
    /// Stop or remove after this many seconds seeding without sending or receiving payload.
    #[serde(default)]
    pub inactive_seed_time_s: Option<u64>,
}

/// Everything the state keeps about one torrent.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentRecord {
    pub info_hash: [u8; 20],
    pub torrent: Vec<u8>,
    /// The .torrent file it was added from (config list or watch directory), if any.
    pub source: Option<String>,
    pub data_dir: String,
    /// Unix seconds.
    pub added_at: i64,
    pub paused: bool,
    /// Which limit stopped it ("ratio", "seed_time"), if one did.
    pub stopped_by: Option<String>,
    pub limits: Limits,
    pub uploaded: u64,
    pub seeding_s: u64,
    /// Pieces verified at the last check (wire bit order); `None` if never checked.
    pub verified: Option<Vec<u8>>,
    /// One stamp per file of the layout (pads and empty files included, as stamps of nothing).
    pub files: Vec<Option<FileStamp>>,
    /// Where its data is being downloaded, when not in `data_dir` (`incomplete_dir`); moved to
    /// `data_dir` once complete.
    pub download_dir: Option<String>,
    /// Where its data was being moved when the node stopped; `None` once a move ends. Read
    /// only: [`put`] leaves it; [`save_moving_to`] sets it, [`save_data_dir`], [`end_move`]
    /// and [`save_place`] clear it.
    pub moving_to: Option<String>,
    pub org: Organisation,
}

/// A torrent's category, tags and queueing, and the times its share limits need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Organisation {
    pub category: Option<String>,
    pub tags: Vec<String>,
    /// Its place in the queue: smaller goes first.
    pub queue_pos: i64,
    /// Started whatever the queue says.
    pub force_start: bool,
    /// Unix seconds of its last payload sent or received; `None`: never (its `added_at`).
    pub last_activity: Option<i64>,
    /// Unix seconds it was first seen complete.
    pub completed_at: Option<i64>,
    /// The qBittorrent API's settings of it.
    pub qbt: QbtSettings,
    /// Payload bytes downloaded by earlier runs (and torrent objects since replaced).
    pub downloaded_base: u64,
    /// Where its files sit beneath its save path (fixed when it is added).
    pub content_layout: ContentLayout,
}

/// What the qBittorrent API sets on a torrent beyond ringseed's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QbtSettings {
    /// Its name as shown (`rename`); `None`: the metainfo's.
    pub name: Option<String>,
    /// Sequential download and first/last piece priority: the piece picker's order
    /// (`download::want`).
    pub seq_dl: bool,
    pub first_last_prio: bool,
    /// Each data file's priority (qBittorrent's 0 skip, 1 normal, 6 high, 7 maximal), in the
    /// order of `torrents/files`; empty: all normal.
    pub file_prio: Vec<u8>,
    /// Every data file's path below the save path once one was renamed (`/`-separated, in the
    /// order of `torrents/files`); empty: as its content layout puts them.
    pub file_paths: Vec<String>,
    /// Automatic torrent management: its save path follows its category's.
    pub auto_tmm: bool,
    /// Its tracker tiers as edited; `None`: the metainfo's.
    pub trackers: Option<Vec<Vec<String>>>,
}

/// A magnet link waiting for its metadata, with what it was added with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagnetRecord {
    /// The info-hash peers know it by (v1, or a v2 hash truncated).
    pub info_hash: [u8; 20],
    /// The magnet URI as given (info-hashes, name, trackers, `x.pe` peers).
    pub uri: String,
    /// Unix seconds.
    pub added_at: i64,
    pub save_path: Option<String>,
    pub paused: bool,
    pub skip_check: Option<bool>,
    pub source: Option<String>,
    /// The save path comes from the operator's config (not confined to the data root).
    pub trusted_path: bool,
    /// Peers given besides the URI's (through the API).
    pub peers: Vec<std::net::SocketAddr>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub content_layout: ContentLayout,
}

/// Global limits set through the API; `None` falls back to the config file.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct GlobalLimits {
    /// The whole node's upload, bytes per second (0 = unlimited).
    pub upload_rate: Option<u64>,
    /// Each torrent's upload without its own limit, bytes per second.
    pub torrent_upload_rate: Option<u64>,
    /// The whole node's download, bytes per second (0 = unlimited).
    #[serde(default)]
    pub download_rate: Option<u64>,
    /// Each torrent's download without its own limit, bytes per second.
    #[serde(default)]
    pub torrent_download_rate: Option<u64>,
    pub ratio: Option<f64>,
    pub seed_time_s: Option<u64>,
}

/// The global limits set through the API (all `None` when never set).
pub fn load_global(conn: &Connection) -> rusqlite::Result<GlobalLimits> {
    let mut stmt = conn.prepare(
        "SELECT upload_rate_limit, torrent_upload_rate_limit, ratio_limit, seed_time_limit_s,
                download_rate_limit, torrent_download_rate_limit
         FROM global_limits WHERE id = 1",
    )?;
    let mut rows = stmt.query([])?;
    let Some(r) = rows.next()? else {
        return Ok(GlobalLimits::default());
    };
    Ok(GlobalLimits {
        upload_rate: r.get::<_, Option<i64>>(0)?.map(to_u64),
        torrent_upload_rate: r.get::<_, Option<i64>>(1)?.map(to_u64),
        ratio: r.get(2)?,
        seed_time_s: r.get::<_, Option<i64>>(3)?.map(to_u64),
        download_rate: r.get::<_, Option<i64>>(4)?.map(to_u64),
        torrent_download_rate: r.get::<_, Option<i64>>(5)?.map(to_u64),
    })
}

pub fn put_global(conn: &Connection, g: &GlobalLimits) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO global_limits
             (id, upload_rate_limit, torrent_upload_rate_limit, ratio_limit, seed_time_limit_s,
              download_rate_limit, torrent_download_rate_limit)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            g.upload_rate.map(to_i64),
            g.torrent_upload_rate.map(to_i64),
            g.ratio,
            g.seed_time_s.map(to_i64),
            g.download_rate.map(to_i64),
            g.torrent_download_rate.map(to_i64)
        ],
    )?;
    Ok(())
}

/// Counters that change while seeding, saved periodically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub info_hash: [u8; 20],
    pub uploaded: u64,
    pub seeding_s: u64,
    pub last_activity: Option<i64>,
    pub completed_at: Option<i64>,
    /// All-time payload downloaded.
    pub downloaded: u64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Tags as the state keeps them: joined with `,` (a tag never holds one).
fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every category: name and save path as given (`""` = the data root).
pub fn load_categories(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT name, save_path FROM categories ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Creates or changes a category.
pub fn put_category(conn: &Connection, name: &str, save_path: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO categories (name, save_path) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET save_path = excluded.save_path",
        params![name, save_path],
    )?;
    Ok(())
}

/// Removes categories and clears them from their torrents and magnets, in one job.
pub fn delete_categories(conn: &Connection, names: &[String]) -> rusqlite::Result<()> {
    for n in names {
        conn.execute("DELETE FROM categories WHERE name = ?1", [n])?;
        conn.execute(
            "UPDATE torrents SET category = NULL WHERE category = ?1",
            [n],
        )?;
        conn.execute(
            "UPDATE magnets SET category = NULL WHERE category = ?1",
            [n],
        )?;
    }
    Ok(())
}

/// Every tag of the node's set.
pub fn load_tags(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM tags ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Replaces the node's set of tags, and the tags of the torrents and magnets given (their
/// whole list), in one job.
pub fn save_tags(
    conn: &Connection,
    all: &[String],
    torrents: &[([u8; 20], Vec<String>)],
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM tags", [])?;
    for t in all {
        conn.execute("INSERT INTO tags (name) VALUES (?1)", [t])?;
    }
    for (id, tags) in torrents {
        let joined = tags.join(",");
        conn.execute(
            "UPDATE torrents SET tags = ?2 WHERE info_hash = ?1",
            params![&id[..], joined],
        )?;
        conn.execute(
            "UPDATE magnets SET tags = ?2 WHERE info_hash = ?1",
            params![&id[..], joined],
        )?;
    }
    Ok(())
}

/// Adds names to the node's set of tags (those it has stay).
pub fn add_tag_names(conn: &Connection, tags: &[String]) -> rusqlite::Result<()> {
    for t in tags {
        conn.execute("INSERT OR IGNORE INTO tags (name) VALUES (?1)", [t])?;
    }
    Ok(())
}

/// Sets the category of torrents and magnets (`None` clears it).
pub fn save_category_of(
    conn: &Connection,
    ids: &[[u8; 20]],
    category: Option<&str>,
) -> rusqlite::Result<()> {
    for id in ids {
        conn.execute(
            "UPDATE torrents SET category = ?2 WHERE info_hash = ?1",
            params![&id[..], category],
        )?;
        conn.execute(
            "UPDATE magnets SET category = ?2 WHERE info_hash = ?1",
            params![&id[..], category],
        )?;
    }
    Ok(())
}

/// Saves queue positions.
pub fn save_queue(conn: &Connection, positions: &[([u8; 20], i64)]) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("UPDATE torrents SET queue_pos = ?2 WHERE info_hash = ?1")?;
    for (id, pos) in positions {
        stmt.execute(params![&id[..], pos])?;
    }
    Ok(())
}

/// Global share-limit and queueing settings set through the API; `None` falls back to the
/// config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct GlobalSettings {
    /// Seconds seeding without payload activity; 0 = none.
    pub inactive_seed_time_s: Option<u64>,
    pub limit_action: Option<crate::config::LimitAction>,
    pub queueing: Option<bool>,
    /// -1 = unlimited.
    pub max_active_downloads: Option<i64>,
    pub max_active_uploads: Option<i64>,
    pub max_active_torrents: Option<i64>,
}

pub fn load_settings(conn: &Connection) -> rusqlite::Result<GlobalSettings> {
    let mut stmt = conn.prepare(
        "SELECT inactive_seed_time_limit_s, limit_action, queueing, max_active_downloads,
                max_active_uploads, max_active_torrents
         FROM global_settings WHERE id = 1",
    )?;
    let mut rows = stmt.query([])?;
    let Some(r) = rows.next()? else {
        return Ok(GlobalSettings::default());
    };
    let action: Option<String> = r.get(1)?;
    Ok(GlobalSettings {
        inactive_seed_time_s: r.get::<_, Option<i64>>(0)?.map(to_u64),
        // Written by `put_settings` only; a name this version does not know is "unset".
        limit_action: action.and_then(|a| crate::config::LimitAction::from_name(&a)),
        queueing: r.get(2)?,
        max_active_downloads: r.get(3)?,
        max_active_uploads: r.get(4)?,
        max_active_torrents: r.get(5)?,
    })
}

pub fn put_settings(conn: &Connection, g: &GlobalSettings) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO global_settings
             (id, inactive_seed_time_limit_s, limit_action, queueing, max_active_downloads,
              max_active_uploads, max_active_torrents)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            g.inactive_seed_time_s.map(to_i64),
            g.limit_action.map(|a| a.name()),
            g.queueing,
            g.max_active_downloads,
            g.max_active_uploads,
            g.max_active_torrents,
        ],
    )?;
    Ok(())
}

/// Every torrent in the state, files included.
pub fn load_all(conn: &Connection) -> rusqlite::Result<Vec<TorrentRecord>> {
    load(conn, None)
}

/// One torrent, if the state has it.
pub fn get(conn: &Connection, info_hash: &[u8; 20]) -> rusqlite::Result<Option<TorrentRecord>> {
    Ok(load(conn, Some(info_hash))?.pop())
}

fn load(conn: &Connection, only: Option<&[u8; 20]>) -> rusqlite::Result<Vec<TorrentRecord>> {
    let mut stmt = conn.prepare(
        "SELECT info_hash, torrent, source, data_dir, added_at, paused, stopped_by,
                upload_rate_limit, ratio_limit, seed_time_limit_s, uploaded, seeding_s, verified,
                download_dir, download_rate_limit, category, tags, inactive_seed_time_limit_s,
                queue_pos, force_start, last_activity, completed_at, display_name, seq_dl,
                first_last_prio, auto_tmm, trackers, downloaded, content_layout, file_prio,
                file_paths, moving_to
         FROM torrents WHERE ?1 IS NULL OR info_hash = ?1 ORDER BY added_at, info_hash",
    )?;
    let mut records = Vec::new();
    let mut rows = stmt.query([only.map(|h| &h[..])])?;
    while let Some(r) = rows.next()? {
        let hash: Vec<u8> = r.get(0)?;
        let Ok(info_hash) = <[u8; 20]>::try_from(hash.as_slice()) else {
            // The CHECK constraint makes this unreachable short of a hand-edited file.
            continue;
        };
        records.push(TorrentRecord {
            info_hash,
            torrent: r.get(1)?,
            source: r.get(2)?,
            data_dir: r.get(3)?,
            added_at: r.get(4)?,
            paused: r.get(5)?,
            stopped_by: r.get(6)?,
            limits: Limits {
                upload_rate: r.get::<_, Option<i64>>(7)?.map(to_u64),
                ratio: r.get(8)?,
                seed_time_s: r.get::<_, Option<i64>>(9)?.map(to_u64),
                download_rate: r.get::<_, Option<i64>>(14)?.map(to_u64),
                inactive_seed_time_s: r.get::<_, Option<i64>>(17)?.map(to_u64),
            },
            uploaded: to_u64(r.get(10)?),
            seeding_s: to_u64(r.get(11)?),
            verified: r.get(12)?,
            files: Vec::new(),
            download_dir: r.get(13)?,
            moving_to: r.get(31)?,
            org: Organisation {
                category: r.get(15)?,
                tags: split_tags(&r.get::<_, String>(16)?),
                queue_pos: r.get(18)?,
                force_start: r.get(19)?,
                last_activity: r.get(20)?,
                completed_at: r.get(21)?,
                qbt: QbtSettings {
                    name: r.get(22)?,
                    seq_dl: r.get(23)?,
                    first_last_prio: r.get(24)?,
                    auto_tmm: r.get(25)?,
                    trackers: r
                        .get::<_, Option<String>>(26)?
                        .and_then(|j| serde_json::from_str(&j).ok()),
                    file_prio: r.get::<_, Option<Vec<u8>>>(29)?.unwrap_or_default(),
                    file_paths: r
                        .get::<_, Option<String>>(30)?
                        .and_then(|j| serde_json::from_str(&j).ok())
                        .unwrap_or_default(),
                },
                downloaded_base: to_u64(r.get(27)?),
                content_layout: content_layout(&r.get::<_, String>(28)?),
            },
        });
    }
    let mut files = conn.prepare(
        "SELECT file_index, size, mtime_ns FROM torrent_files WHERE info_hash = ?1
         ORDER BY file_index",
    )?;
    for rec in &mut records {
        let stamps = files.query_map([&rec.info_hash[..]], |r| {
            let index: i64 = r.get(0)?;
            let size: Option<i64> = r.get(1)?;
            let mtime: Option<i64> = r.get(2)?;
            Ok((
                index,
                size.zip(mtime).map(|(s, m)| FileStamp {
                    size: to_u64(s),
                    mtime_ns: m,
                }),
            ))
        })?;
        for s in stamps {
            let (index, stamp) = s?;
            // Indexes are written densely from 0; anything else reads as "changed".
            if usize::try_from(index).ok() != Some(rec.files.len()) {
                rec.files.clear();
                break;
            }
            rec.files.push(stamp);
        }
    }
    Ok(records)
}

/// Inserts or replaces a torrent with all its fields and file stamps.
pub fn put(conn: &Connection, rec: &TorrentRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO torrents (info_hash, torrent, source, data_dir, added_at, paused, stopped_by,
                               upload_rate_limit, ratio_limit, seed_time_limit_s, uploaded,
                               seeding_s, verified, download_dir, download_rate_limit,
                               category, tags, inactive_seed_time_limit_s, queue_pos,
                               force_start, last_activity, completed_at, display_name,
                               seq_dl, first_last_prio, auto_tmm, trackers, downloaded,
                               content_layout, file_prio, file_paths)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30,
                 ?31)
         ON CONFLICT (info_hash) DO UPDATE SET
             source = excluded.source, data_dir = excluded.data_dir, paused = excluded.paused,
             stopped_by = excluded.stopped_by, upload_rate_limit = excluded.upload_rate_limit,
             ratio_limit = excluded.ratio_limit, seed_time_limit_s = excluded.seed_time_limit_s,
             uploaded = excluded.uploaded, seeding_s = excluded.seeding_s,
             verified = excluded.verified, download_dir = excluded.download_dir,
             download_rate_limit = excluded.download_rate_limit,
             category = excluded.category, tags = excluded.tags,
             inactive_seed_time_limit_s = excluded.inactive_seed_time_limit_s,
             queue_pos = excluded.queue_pos, force_start = excluded.force_start,
             last_activity = excluded.last_activity, completed_at = excluded.completed_at,
             display_name = excluded.display_name, seq_dl = excluded.seq_dl,
             first_last_prio = excluded.first_last_prio, auto_tmm = excluded.auto_tmm,
             trackers = excluded.trackers, downloaded = excluded.downloaded,
             content_layout = excluded.content_layout, file_prio = excluded.file_prio,
             file_paths = excluded.file_paths",
        params![
            &rec.info_hash[..],
            rec.torrent,
            rec.source,
            rec.data_dir,
            rec.added_at,
            rec.paused,
            rec.stopped_by,
            rec.limits.upload_rate.map(to_i64),
            rec.limits.ratio,
            rec.limits.seed_time_s.map(to_i64),
            to_i64(rec.uploaded),
            to_i64(rec.seeding_s),
            rec.verified,
            rec.download_dir,
            rec.limits.download_rate.map(to_i64),
            rec.org.category,
            rec.org.tags.join(","),
            rec.limits.inactive_seed_time_s.map(to_i64),
            rec.org.queue_pos,
            rec.org.force_start,
            rec.org.last_activity,
            rec.org.completed_at,
            rec.org.qbt.name,
            rec.org.qbt.seq_dl,
            rec.org.qbt.first_last_prio,
            rec.org.qbt.auto_tmm,
            trackers_json(&rec.org.qbt.trackers),
            to_i64(rec.org.downloaded_base),
            rec.org.content_layout.as_str(),
            prio_blob(&rec.org.qbt.file_prio),
            paths_json(&rec.org.qbt.file_paths),
        ],
    )?;
    put_files(conn, &rec.info_hash, &rec.files)
}

/// What the operator (or a limit) decides about a torrent: written only by changes that are
/// answered after this write is durable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    pub paused: bool,
    /// Which limit stopped it ("ratio", "seed_time"), if one did.
    pub stopped_by: Option<String>,
    pub limits: Limits,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub force_start: bool,
}

/// Saves a torrent's [`Settings`] and nothing else. A torrent not in the state is an error
/// (`QueryReturnedNoRows`): a change answered as done must be in the state.
pub fn save_settings(
    conn: &Connection,
    info_hash: &[u8; 20],
    s: &Settings,
) -> rusqlite::Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE torrents SET paused = ?2, stopped_by = ?3, upload_rate_limit = ?4,
                                 ratio_limit = ?5, seed_time_limit_s = ?6,
                                 download_rate_limit = ?7, category = ?8, tags = ?9,
                                 inactive_seed_time_limit_s = ?10, force_start = ?11
             WHERE info_hash = ?1",
        )?
        .execute(params![
            &info_hash[..],
            s.paused,
            s.stopped_by,
            s.limits.upload_rate.map(to_i64),
            s.limits.ratio,
            s.limits.seed_time_s.map(to_i64),
            s.limits.download_rate.map(to_i64),
            s.category,
            s.tags.join(","),
            s.limits.inactive_seed_time_s.map(to_i64),
            s.force_start,
        ])?;
    if n == 0 {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    }
    Ok(())
}

/// Renamed paths as stored: NULL for "as laid out".
fn paths_json(p: &[String]) -> Option<String> {
    (!p.is_empty())
        .then(|| serde_json::to_string(p).ok())
        .flatten()
}

/// File priorities as stored: NULL for "all normal".
fn prio_blob(p: &[u8]) -> Option<&[u8]> {
    (!p.is_empty()).then_some(p)
}

fn trackers_json(t: &Option<Vec<Vec<String>>>) -> Option<String> {
    t.as_ref().and_then(|t| serde_json::to_string(t).ok())
}

/// Saves a torrent's [`QbtSettings`] and nothing else; a torrent not in the state is an error,
/// as in [`save_settings`].
pub fn save_qbt(conn: &Connection, info_hash: &[u8; 20], q: &QbtSettings) -> rusqlite::Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE torrents SET display_name = ?2, seq_dl = ?3, first_last_prio = ?4,
                                 auto_tmm = ?5, trackers = ?6, file_prio = ?7,
                                 file_paths = ?8
             WHERE info_hash = ?1",
        )?
        .execute(params![
            &info_hash[..],
            q.name,
            q.seq_dl,
            q.first_last_prio,
            q.auto_tmm,
            trackers_json(&q.trackers),
            prio_blob(&q.file_prio),
            paths_json(&q.file_paths),
        ])?;
    if n == 0 {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    }
    Ok(())
}

/// A saved content layout; anything else (a hand-edited state) reads as `Original`, the
/// .torrent's own paths.
fn content_layout(s: &str) -> ContentLayout {
    ContentLayout::parse(s).unwrap_or_default()
}

/// Moves a torrent's data directory in the state (`setLocation`, the end of a move), nothing
/// else; a move in progress ([`save_moving_to`]) is over.
pub fn save_data_dir(conn: &Connection, info_hash: &[u8; 20], dir: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE torrents SET data_dir = ?2, moving_to = NULL WHERE info_hash = ?1",
    )?
    .execute(params![&info_hash[..], dir])?;
    Ok(())
}

/// Notes that a torrent's data is about to move to `to` (before its first file moves), so a
/// start after a crash knows to look there; [`save_data_dir`] ends it.
pub fn save_moving_to(conn: &Connection, info_hash: &[u8; 20], to: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE torrents SET moving_to = ?2 WHERE info_hash = ?1")?
        .execute(params![&info_hash[..], to])?;
    Ok(())
}

/// A move noted by [`save_moving_to`] is over, the place unchanged by it or saved already.
pub fn end_move(conn: &Connection, info_hash: &[u8; 20]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE torrents SET moving_to = NULL WHERE info_hash = ?1")?
        .execute(params![&info_hash[..]])?;
    Ok(())
}

/// Where a start after a crash found the data of a torrent whose move was cut short: saves
/// its places and ends the move.
pub fn save_place(
    conn: &Connection,
    info_hash: &[u8; 20],
    data_dir: &str,
    download_dir: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE torrents SET data_dir = ?2, download_dir = ?3, moving_to = NULL
         WHERE info_hash = ?1",
    )?
    .execute(params![&info_hash[..], data_dir, download_dir])?;
    Ok(())
}

/// Saves what a check or a download found about a torrent's data (its verified bitfield, its
/// files' stamps, where it is downloaded) and nothing else, so it never undoes a change of
/// its [`Settings`]. A torrent no longer in the state (removed meanwhile) stays out: returns
/// false.
pub fn save_data(
    conn: &Connection,
    info_hash: &[u8; 20],
    verified: Option<&[u8]>,
    files: &[Option<FileStamp>],
    download_dir: Option<&str>,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE torrents SET verified = ?2, download_dir = ?3 WHERE info_hash = ?1",
        )?
        .execute(params![&info_hash[..], verified, download_dir])?;
    if n == 0 {
        return Ok(false);
    }
    put_files(conn, info_hash, files)?;
    Ok(true)
}

fn put_files(
    conn: &Connection,
    info_hash: &[u8; 20],
    files: &[Option<FileStamp>],
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM torrent_files WHERE info_hash = ?1")?
        .execute([&info_hash[..]])?;
    let mut ins = conn.prepare_cached(
        "INSERT INTO torrent_files (info_hash, file_index, size, mtime_ns) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, f) in files.iter().enumerate() {
        ins.execute(params![
            &info_hash[..],
            i as i64,
            f.map(|f| to_i64(f.size)),
            f.map(|f| f.mtime_ns),
        ])?;
    }
    Ok(())
}

/// Saves the counters of many torrents (torrents no longer in the state are skipped).
pub fn save_progress(conn: &Connection, progress: &[Progress]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE torrents SET uploaded = ?2, seeding_s = ?3, last_activity = ?4,
                                 completed_at = ?5, downloaded = ?6
             WHERE info_hash = ?1",
    )?;
    for p in progress {
        stmt.execute(params![
            &p.info_hash[..],
            to_i64(p.uploaded),
            to_i64(p.seeding_s),
            p.last_activity,
            p.completed_at,
            to_i64(p.downloaded),
        ])?;
    }
    Ok(())
}

/// Saves the verified bitfield of a torrent being downloaded. Every piece in it was written
/// before it was set, so after a restart (or a `kill -9`) the download trusts it and fetches
/// only the rest, without hashing what it already has.
pub fn save_verified(
    conn: &Connection,
    info_hash: &[u8; 20],
    verified: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE torrents SET verified = ?2 WHERE info_hash = ?1")?
        .execute(params![&info_hash[..], verified])?;
    Ok(())
}

/// Every magnet waiting for its metadata, oldest first.
pub fn load_magnets(conn: &Connection) -> rusqlite::Result<Vec<MagnetRecord>> {
    let mut stmt = conn.prepare(
        "SELECT info_hash, uri, added_at, save_path, paused, skip_check, source, trusted_path,
                peers, category, tags, content_layout
         FROM magnets ORDER BY added_at, info_hash",
    )?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let hash: Vec<u8> = r.get(0)?;
        let Ok(info_hash) = <[u8; 20]>::try_from(hash.as_slice()) else {
            continue;
        };
        let peers: String = r.get(8)?;
        out.push(MagnetRecord {
            info_hash,
            uri: r.get(1)?,
            added_at: r.get(2)?,
            save_path: r.get(3)?,
            paused: r.get(4)?,
            skip_check: r.get(5)?,
            source: r.get(6)?,
            trusted_path: r.get(7)?,
            // Written by `put_magnet` only; a word that does not parse is skipped.
            peers: peers
                .split_ascii_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            category: r.get(9)?,
            tags: split_tags(&r.get::<_, String>(10)?),
            content_layout: content_layout(&r.get::<_, String>(11)?),
        });
    }
    Ok(out)
}

/// Inserts or replaces a magnet waiting for its metadata.
pub fn put_magnet(conn: &Connection, m: &MagnetRecord) -> rusqlite::Result<()> {
    let peers: Vec<String> = m.peers.iter().map(ToString::to_string).collect();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO magnets (info_hash, uri, added_at, save_path, paused, skip_check,
                                         source, trusted_path, peers, category, tags,
                                         content_layout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        &m.info_hash[..],
        m.uri,
        m.added_at,
        m.save_path,
        m.paused,
        m.skip_check,
        m.source,
        m.trusted_path,
        peers.join(" "),
        m.category,
        m.tags.join(","),
        m.content_layout.as_str(),
    ])?;
    Ok(())
}

/// Forgets a magnet waiting for its metadata.
pub fn delete_magnet(conn: &Connection, info_hash: &[u8; 20]) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM magnets WHERE info_hash = ?1", [&info_hash[..]])? > 0)
}

/// Saves the torrent a magnet became and forgets the magnet, in one job (one savepoint of the
/// writer): a crash leaves one or the other, never both or neither.
pub fn put_from_magnet(conn: &Connection, rec: &TorrentRecord) -> rusqlite::Result<()> {
    put(conn, rec)?;
    delete_magnet(conn, &rec.info_hash)?;
    Ok(())
}

/// Forgets a torrent (its file stamps go with it).
pub fn delete(conn: &Connection, info_hash: &[u8; 20]) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "DELETE FROM torrents WHERE info_hash = ?1",
        [&info_hash[..]],
    )? > 0)
}

/// The size and mtime of every file of `layout` under `root` now (pads and empty files: `None`,
/// as are files that are absent or unreadable).
pub fn stamp_files(layout: &FileLayout, root: &Path) -> Vec<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    layout
        .files
        .iter()
        .map(|f| {
            if f.pad || f.length == 0 {
                return None;
            }
            let m = std::fs::metadata(root.join(f.rel_path())).ok()?;
            m.is_file().then(|| FileStamp {
                size: m.len(),
                mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: u8) -> TorrentRecord {
        TorrentRecord {
            info_hash: [hash; 20],
            torrent: vec![1, 2, 3],
            source: Some("/x.torrent".into()),
            data_dir: "/srv".into(),
            added_at: 1_700_000_000,
            paused: false,
            stopped_by: None,
            limits: Limits {
                upload_rate: Some(1024),
                download_rate: None,
                ratio: Some(1.5),
                seed_time_s: None,
                inactive_seed_time_s: Some(60),
            },
            uploaded: 7,
            seeding_s: 9,
            verified: Some(vec![0xff, 0x80]),
            download_dir: Some("/srv/incomplete".into()),
            moving_to: None,
            files: vec![
                Some(FileStamp {
                    size: 10,
                    mtime_ns: -5,
                }),
                None,
            ],
            org: Organisation {
                category: Some("tv/hd".into()),
                tags: vec!["a".into(), "b c".into()],
                queue_pos: i64::from(hash),
                force_start: hash.is_multiple_of(2),
                last_activity: Some(1_700_000_100),
                completed_at: None,
                qbt: QbtSettings {
                    name: Some("shown".into()),
                    seq_dl: true,
                    first_last_prio: false,
                    auto_tmm: true,
                    trackers: Some(vec![vec!["http://a/announce".into()], vec![]]),
                    file_prio: vec![1, 0, 7],
                    file_paths: vec!["x/a".into(), "b".into()],
                },
                downloaded_base: 5,
                content_layout: ContentLayout::Subfolder,
            },
        }
    }

    /// Writes a record as the state before organisation (schema step 5) could: its columns
    /// only.
    fn put_before_organisation(c: &Connection, rec: &TorrentRecord) {
        c.execute(
            "INSERT INTO torrents (info_hash, torrent, source, data_dir, added_at, paused,
                                   stopped_by, upload_rate_limit, ratio_limit, seed_time_limit_s,
                                   uploaded, seeding_s, verified, download_dir,
                                   download_rate_limit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                &rec.info_hash[..],
                rec.torrent,
                rec.source,
                rec.data_dir,
                rec.added_at,
                rec.paused,
                rec.stopped_by,
                rec.limits.upload_rate.map(to_i64),
                rec.limits.ratio,
                rec.limits.seed_time_s.map(to_i64),
                to_i64(rec.uploaded),
                to_i64(rec.seeding_s),
                rec.verified,
                rec.download_dir,
                rec.limits.download_rate.map(to_i64),
            ],
        )
        .unwrap();
        put_files(c, &rec.info_hash, &rec.files).unwrap();
    }

    /// A record as it reads back after the organisation migration: no category, tags, queue
    /// position or times; its limits as they were.
    fn migrated(mut rec: TorrentRecord) -> TorrentRecord {
        rec.org = Organisation::default();
        rec.limits.inactive_seed_time_s = None;
        rec
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::db::open(&dir.path().join("s.db")).unwrap();
        crate::db::migrate(&mut c, COMPONENT, MIGRATIONS).unwrap();
        (dir, c)
    }

    #[test]
    fn a_move_is_noted_before_it_starts_and_ended_with_the_new_place() {
        let (_d, c) = db();
        let rec = record(1);
        put(&c, &rec).unwrap();
        save_moving_to(&c, &[1; 20], "/srv/new").unwrap();
        let got = get(&c, &[1; 20]).unwrap().unwrap();
        assert_eq!(got.moving_to.as_deref(), Some("/srv/new"));
        // A save of the whole record (a setting changed while moving) leaves it noted.
        put(&c, &rec).unwrap();
        assert!(get(&c, &[1; 20]).unwrap().unwrap().moving_to.is_some());
        save_data_dir(&c, &[1; 20], "/srv/new").unwrap();
        let got = get(&c, &[1; 20]).unwrap().unwrap();
        assert_eq!((got.data_dir.as_str(), got.moving_to), ("/srv/new", None));
        // A start that found the data at the target of a completing move.
        save_moving_to(&c, &[1; 20], "/srv/new").unwrap();
        save_place(&c, &[1; 20], "/srv/new", None).unwrap();
        let got = get(&c, &[1; 20]).unwrap().unwrap();
        assert_eq!((got.download_dir, got.moving_to), (None, None));
    }

    #[test]
    fn records_round_trip_and_updates_replace_files() {
        let (_d, c) = db();
        let mut a = record(1);
        put(&c, &a).unwrap();
        put(&c, &record(2)).unwrap();
        assert_eq!(load_all(&c).unwrap().len(), 2);
        assert_eq!(get(&c, &[1; 20]).unwrap().unwrap(), a);
        a.paused = true;
        a.files.truncate(1);
        a.limits.ratio = None;
        put(&c, &a).unwrap();
        assert_eq!(get(&c, &[1; 20]).unwrap().unwrap(), a);
        save_progress(
            &c,
            &[Progress {
                info_hash: [1; 20],
                uploaded: 100,
                seeding_s: 200,
                last_activity: Some(300),
                completed_at: Some(250),
                downloaded: 400,
            }],
        )
        .unwrap();
        let got = get(&c, &[1; 20]).unwrap().unwrap();
        assert_eq!((got.uploaded, got.seeding_s), (100, 200));
        assert_eq!(got.org.downloaded_base, 400, "all-time downloaded kept");
        let q = QbtSettings {
            name: Some("other".into()),
            trackers: None,
            file_prio: vec![0, 6],
            file_paths: Vec::new(),
            ..got.org.qbt.clone()
        };
        save_qbt(&c, &[1; 20], &q).unwrap();
        save_data_dir(&c, &[1; 20], "/srv/moved").unwrap();
        let got = get(&c, &[1; 20]).unwrap().unwrap();
        assert_eq!((got.org.qbt, got.data_dir.as_str()), (q, "/srv/moved"));
        assert!(save_qbt(&c, &[9; 20], &QbtSettings::default()).is_err());
        assert_eq!(
            (got.org.last_activity, got.org.completed_at),
            (Some(300), Some(250))
        );
        assert!(delete(&c, &[1; 20]).unwrap());
        assert!(!delete(&c, &[1; 20]).unwrap());
        let n: i64 = c
            .query_row("SELECT count(*) FROM torrent_files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "the deleted torrent's file stamps went with it");
    }

    /// Settings and data are saved apart: neither undoes the other, neither brings back a
    /// removed torrent, and a settings change of a torrent not in the state is an error.
    #[test]
    fn settings_and_data_are_saved_apart() {
        let (_d, c) = db();
        let a = record(1);
        put(&c, &a).unwrap();
        let s = Settings {
            paused: true,
            stopped_by: Some("ratio".into()),
            limits: Limits {
                upload_rate: None,
                download_rate: Some(5),
                ratio: None,
                seed_time_s: Some(60),
                inactive_seed_time_s: Some(30),
            },
            category: Some("c".into()),
            tags: vec!["t".into()],
            force_start: true,
        };
        save_settings(&c, &[1; 20], &s).unwrap();
        let stamps = [None, None, None];
        assert!(save_data(&c, &[1; 20], Some(&[0x80, 0]), &stamps, None).unwrap());
        let got = get(&c, &[1; 20]).unwrap().unwrap();
        assert_eq!(
            (got.paused, got.stopped_by.clone(), got.limits),
            (true, s.stopped_by.clone(), s.limits)
        );
        assert_eq!(
            (
                got.org.category.clone(),
                got.org.tags.clone(),
                got.org.force_start
            ),
            (s.category.clone(), s.tags.clone(), true)
        );
        assert_eq!(got.verified, Some(vec![0x80, 0]));
        assert_eq!((got.files.len(), got.download_dir), (3, None));
        assert_eq!((got.uploaded, got.added_at), (a.uploaded, a.added_at));
        assert!(delete(&c, &[1; 20]).unwrap());
        assert!(!save_data(&c, &[1; 20], None, &stamps, None).unwrap());
        assert!(matches!(
            save_settings(&c, &[1; 20], &s),
            Err(rusqlite::Error::QueryReturnedNoRows)
        ));
        assert!(get(&c, &[1; 20]).unwrap().is_none(), "not brought back");
        let n: i64 = c
            .query_row("SELECT count(*) FROM torrent_files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn global_limits_round_trip() {
        let (_d, c) = db();
        assert_eq!(load_global(&c).unwrap(), GlobalLimits::default());
        let g = GlobalLimits {
            upload_rate: Some(1 << 20),
            download_rate: Some(2048),
            torrent_download_rate: None,
            torrent_upload_rate: None,
            ratio: Some(2.0),
            seed_time_s: Some(60),
        };
        put_global(&c, &g).unwrap();
        put_global(&c, &g).unwrap();
        assert_eq!(load_global(&c).unwrap(), g);
    }

    fn magnet(hash: u8) -> MagnetRecord {
        MagnetRecord {
            info_hash: [hash; 20],
            uri: format!("magnet:?xt=urn:btih:{}&dn=x", "ab".repeat(20)),
            added_at: 1_700_000_000 + i64::from(hash),
            save_path: Some("sub".into()),
            paused: true,
            skip_check: Some(false),
            source: None,
            trusted_path: false,
            peers: vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:7".parse().unwrap(),
            ],
            category: Some("films".into()),
            tags: vec!["x".into()],
            content_layout: ContentLayout::NoSubfolder,
        }
    }

    #[test]
    fn magnets_round_trip_and_become_torrents_in_one_job() {
        let (_d, c) = db();
        let mut a = magnet(1);
        put_magnet(&c, &a).unwrap();
        put_magnet(&c, &magnet(2)).unwrap();
        assert_eq!(load_magnets(&c).unwrap(), vec![a.clone(), magnet(2)]);
        a.peers.push("10.0.0.1:1".parse().unwrap());
        a.skip_check = None;
        put_magnet(&c, &a).unwrap();
        assert_eq!(load_magnets(&c).unwrap()[0], a, "replaced in place");
        // The torrent magnet 1 became replaces it.
        put_from_magnet(&c, &record(1)).unwrap();
        assert_eq!(load_magnets(&c).unwrap(), vec![magnet(2)]);
        assert_eq!(get(&c, &[1; 20]).unwrap().unwrap(), record(1));
        assert!(delete_magnet(&c, &[2; 20]).unwrap());
        assert!(!delete_magnet(&c, &[2; 20]).unwrap());
        assert!(load_magnets(&c).unwrap().is_empty());
    }

    /// A database written before the magnets table (the previous schema) gains it and keeps
    /// its torrents.
    #[test]
    fn the_magnets_migration_applies_to_an_older_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut c = crate::db::open(&path).unwrap();
        crate::db::migrate(&mut c, COMPONENT, &MIGRATIONS[..4]).unwrap();
        assert!(put_magnet(&c, &magnet(1)).is_err(), "no magnets table yet");
        put_before_organisation(&c, &record(3));
        drop(c);
        let mut c = crate::db::open(&path).unwrap();
        crate::db::migrate(&mut c, COMPONENT, MIGRATIONS).unwrap();
        put_magnet(&c, &magnet(1)).unwrap();
        assert_eq!(load_magnets(&c).unwrap(), vec![magnet(1)]);
        assert_eq!(get(&c, &[3; 20]).unwrap().unwrap(), migrated(record(3)));
    }

    /// A state written before organisation (schema step 5, the last release's) loads
    /// unchanged, gains empty categories, tags and settings, and then keeps all of them.
    #[test]
    fn the_organisation_migration_keeps_an_older_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut c = crate::db::open(&path).unwrap();
        crate::db::migrate(&mut c, COMPONENT, &MIGRATIONS[..5]).unwrap();
        put_before_organisation(&c, &record(4));
        c.execute(
            "INSERT INTO magnets (info_hash, uri, added_at) VALUES (?1, 'magnet:?xt=x', 5)",
            [&[9u8; 20][..]],
        )
        .unwrap();
        drop(c);
        let mut c = crate::db::open(&path).unwrap();
        crate::db::migrate(&mut c, COMPONENT, MIGRATIONS).unwrap();
        assert_eq!(load_all(&c).unwrap(), vec![migrated(record(4))]);
        let m = load_magnets(&c).unwrap();
        assert_eq!((m[0].category.as_deref(), m[0].tags.len()), (None, 0));
        assert!(load_categories(&c).unwrap().is_empty());
        assert!(load_tags(&c).unwrap().is_empty());
        assert_eq!(load_settings(&c).unwrap(), GlobalSettings::default());
        // Everything new round-trips.
        put(&c, &record(6)).unwrap();
        assert_eq!(get(&c, &[6; 20]).unwrap().unwrap(), record(6));
        put_category(&c, "tv/hd", "tv").unwrap();
        put_category(&c, "tv/hd", "series").unwrap();
        assert_eq!(
            load_categories(&c).unwrap(),
            vec![("tv/hd".to_string(), "series".to_string())]
        );
        save_tags(
            &c,
            &["a".into(), "z".into()],
            &[([6; 20], vec!["z".into()])],
        )
        .unwrap();
        assert_eq!(load_tags(&c).unwrap(), vec!["a", "z"]);
        assert_eq!(get(&c, &[6; 20]).unwrap().unwrap().org.tags, vec!["z"]);
        delete_categories(&c, &["tv/hd".into()]).unwrap();
        assert_eq!(get(&c, &[6; 20]).unwrap().unwrap().org.category, None);
        save_queue(&c, &[([6; 20], 42)]).unwrap();
        assert_eq!(get(&c, &[6; 20]).unwrap().unwrap().org.queue_pos, 42);
        let g = GlobalSettings {
            inactive_seed_time_s: Some(90),
            limit_action: Some(crate::config::LimitAction::RemoveData),
            queueing: Some(true),
            max_active_downloads: Some(1),
            max_active_uploads: Some(-1),
            max_active_torrents: None,
        };
        put_settings(&c, &g).unwrap();
        assert_eq!(load_settings(&c).unwrap(), g);
    }

    #[test]
    fn a_bad_hash_length_is_refused() {
        let (_d, c) = db();
        let e = c.execute(
            "INSERT INTO torrents (info_hash, torrent, data_dir, added_at) VALUES (x'01', x'', '', 0)",
            [],
        );
        assert!(e.is_err());
    }
}
