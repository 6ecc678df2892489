//! Pure decisions of the service's organisation (issue 14), kept apart from its I/O so they are
//! tested alone: which category and tag names are valid (qBittorrent's rules, with bounds),
//! and which torrents the queue lets run.
//!
//! Queueing follows qBittorrent (libtorrent's auto-management): at most `max_active_downloads`
//! incomplete torrents, `max_active_uploads` complete ones and `max_active_torrents` in all are
//! served, taken in queue order; the others wait queued (not served: no peers, no announces).
//! A force-started torrent is served whatever the queue says and takes no slot; a paused,
//! checking or failed torrent takes none either.

/// Longest category name, bytes (qBittorrent has no bound; strangers send these).
pub const MAX_CATEGORY_NAME: usize = 255;
/// Most categories a node keeps.
pub const MAX_CATEGORIES: usize = 1000;
/// Longest tag, bytes.
pub const MAX_TAG: usize = 255;
/// Most tags in the node's set.
pub const MAX_TAGS: usize = 1000;
/// Most tags one torrent carries.
pub const MAX_TORRENT_TAGS: usize = 100;

/// Why a category name is refused, or `Ok`. qBittorrent 4.5.2's rule
/// (`Session::isValidCategoryName`): not empty, no `\`, no leading or trailing `/`, no `//`
/// (a `/` separates subcategories). ringseed also bounds the length and refuses control
/// characters.
pub fn check_category_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a category name cannot be empty".into());
    }
    if name.len() > MAX_CATEGORY_NAME {
        return Err(format!(
            "a category name is at most {MAX_CATEGORY_NAME} bytes"
        ));
    }
    if name.contains('\\')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("//")
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "{name:?} is not a category name (no \\, no leading, trailing or double /, no \
             control characters)"
        ));
    }
    Ok(())
}

/// Why a tag is refused, or `Ok`. qBittorrent (`Session::isValidTag`): not empty after
/// trimming, no `,`. ringseed also bounds the length and refuses control characters; the tag
/// must be given trimmed ([`parse_tags`] trims).
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("a tag cannot be empty".into());
    }
    if tag.len() > MAX_TAG {
        return Err(format!("a tag is at most {MAX_TAG} bytes"));
    }
    if tag.contains(',') || tag.trim() != tag || tag.chars().any(char::is_control) {
        return Err(format!(
            "{tag:?} is not a tag (no comma, no surrounding spaces, no control characters)"
        ));
    }
    Ok(())
}

/// Tags from a comma-separated list as qBittorrent's `tags` parameters give them: each trimmed,
/// empty ones skipped, repeats dropped, every one checked.
pub fn parse_tags(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        check_tag(t)?;
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
        if out.len() > MAX_TAGS {
            return Err(format!("at most {MAX_TAGS} tags"));
        }
    }
    Ok(out)
}

/// The queue's limits; `None` or a negative number: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub enabled: bool,
    pub downloads: i64,
    pub uploads: i64,
    pub torrents: i64,
}

/// One torrent as the queue sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueItem {
    /// Queue position: smaller goes first.
    pub pos: i64,
    /// Incomplete (counts against `downloads`).
    pub downloading: bool,
    pub force: bool,
    /// Could be served now: ready, not paused, not failed.
    pub wants_to_run: bool,
}

/// Which torrents must wait: `true` at an item's index means queued. Only items that want to
/// run are ever queued; with queueing off none is.
pub fn plan(items: &[QueueItem], limits: QueueLimits) -> Vec<bool> {
    let mut queued = vec![false; items.len()];
    if !limits.enabled {
        return queued;
    }
    let room = |limit: i64, used: i64| limit < 0 || used < limit;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].pos, i));
    let (mut down, mut up, mut all) = (0i64, 0i64, 0i64);
    for i in order {
        let it = items[i];
        if !it.wants_to_run || it.force {
            continue;
        }
        let (kind_limit, kind_used) = if it.downloading {
            (limits.downloads, &mut down)
        } else {
            (limits.uploads, &mut up)
        };
        if room(kind_limit, *kind_used) && room(limits.torrents, all) {
            *kind_used += 1;
            all += 1;
        } else {
            queued[i] = true;
        }
    }
    queued
}

/// A queue move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMove {
    Top,
    Bottom,
    Up,
    Down,
}

/// New positions after moving `moved` (ids) in the queue `queue` (ids with positions, any
/// order). Returns the whole queue renumbered 1, 2, 3… in its new order. Up/down move each
/// moved torrent past one torrent that is not moved; top/bottom keep the moved ones' order.
pub fn move_in_queue<T: PartialEq + Copy>(
    queue: &[(T, i64)],
    moved: &[T],
    how: QueueMove,
) -> Vec<(T, i64)> {
    let mut order: Vec<(T, i64)> = queue.to_vec();
    order.sort_by_key(|&(_, p)| p);
    let mut ids: Vec<T> = order.iter().map(|&(id, _)| id).collect();
    let is_moved = |id: &T| moved.contains(id);
    match how {
        QueueMove::Top | QueueMove::Bottom => {
            let (picked, rest): (Vec<T>, Vec<T>) = ids.iter().partition(|id| is_moved(id));
            ids = if how == QueueMove::Top {
                picked.into_iter().chain(rest).collect()
            } else {
                rest.into_iter().chain(picked).collect()
            };
        }
        QueueMove::Up => {
            for i in 1..ids.len() {
                if is_moved(&ids[i]) && !is_moved(&ids[i - 1]) {
                    ids.swap(i, i - 1);
                }
            }
        }
        QueueMove::Down => {
            for i in (0..ids.len().saturating_sub(1)).rev() {
                if is_moved(&ids[i]) && !is_moved(&ids[i + 1]) {
                    ids.swap(i, i + 1);
                }
            }
        }
    }
    ids.into_iter().zip(1..).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_names_follow_qbittorrent() {
        for good in ["a", "movies", "tv/hd", "a b", "é"] {
            assert!(check_category_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/lead",
            "trail/",
            "bad//name",
            "back\\slash",
            "tab\there",
        ] {
            assert!(check_category_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_category_name(&"x".repeat(MAX_CATEGORY_NAME)).is_ok());
        assert!(check_category_name(&"x".repeat(MAX_CATEGORY_NAME + 1)).is_err());
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_bounded() {
        assert_eq!(parse_tags(" a, b ,a,,").unwrap(), vec!["a", "b"]);
        assert!(parse_tags(&"x".repeat(MAX_TAG + 1)).is_err());
        assert!(check_tag("a,b").is_err());
        assert!(check_tag(" a").is_err());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(parse_tags(&many.join(",")).is_err());
    }

    fn item(pos: i64, downloading: bool) -> QueueItem {
        QueueItem {
            pos,
            downloading,
            force: false,
            wants_to_run: true,
        }
    }

    #[test]
    fn the_queue_serves_in_order_within_each_limit() {
        let limits = QueueLimits {
            enabled: true,
            downloads: 1,
            uploads: 2,
            torrents: 3,
        };
        // Positions out of index order: the position decides.
        let items = [item(3, true), item(1, true), item(2, false), item(4, false)];
        assert_eq!(plan(&items, limits), vec![true, false, false, false]);
        // A force-started download runs and takes no slot; a paused one takes none.
        let mut items = items;
        items[0].force = true;
        items[3].wants_to_run = false;
        assert_eq!(plan(&items, limits), vec![false, false, false, false]);
        // The total bounds both kinds.
        let tight = QueueLimits {
            torrents: 1,
            ..limits
        };
        let items = [item(1, true), item(2, false), item(3, false)];
        assert_eq!(plan(&items, tight), vec![false, true, true]);
        // -1: no limit; off: nothing waits.
        let open = QueueLimits {
            enabled: true,
            downloads: -1,
            uploads: -1,
            torrents: -1,
        };
        assert_eq!(plan(&items, open), vec![false; 3]);
        let off = QueueLimits {
            enabled: false,
            ..tight
        };
        assert_eq!(plan(&items, off), vec![false; 3]);
    }

    #[test]
    fn queue_moves() {
        let q = [('a', 1), ('b', 2), ('c', 3), ('d', 4)];
        let order = |v: Vec<(char, i64)>| v.into_iter().map(|(c, _)| c).collect::<String>();
        assert_eq!(order(move_in_queue(&q, &['c'], QueueMove::Top)), "cabd");
        assert_eq!(
            order(move_in_queue(&q, &['b', 'd'], QueueMove::Top)),
            "bdac"
        );
        assert_eq!(order(move_in_queue(&q, &['a'], QueueMove::Bottom)), "bcda");
        assert_eq!(order(move_in_queue(&q, &['c'], QueueMove::Up)), "acbd");
        assert_eq!(order(move_in_queue(&q, &['a'], QueueMove::Up)), "abcd");
        assert_eq!(order(move_in_queue(&q, &['a', 'b'], QueueMove::Up)), "abcd");
        assert_eq!(order(move_in_queue(&q, &['b'], QueueMove::Down)), "acbd");
        assert_eq!(order(move_in_queue(&q, &['d'], QueueMove::Down)), "abcd");
        assert_eq!(
            move_in_queue(&q, &['d'], QueueMove::Top),
            vec![('d', 1), ('a', 2), ('b', 3), ('c', 4)]
        );
    }
}
