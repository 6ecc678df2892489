//! The service's organisation (issue 14): categories, tags, share limits with qBittorrent's
//! sentinels, queue moves, force start and the global share-limit and queueing settings.
//!
//! Every change follows the service's rule ([`Service::change`]): checked first, so a refused
//! request changes nothing; saved; applied only once the save is durable; all under the state
//! lock. Calls that name several torrents refuse the whole call when one is unknown
//! ([`ControlError::NotFound`]); the qBittorrent layer, which ignores unknown hashes, filters
//! them with [`Service::known`] first.

use super::*;

/// qBittorrent's per-torrent share-limit sentinel "use the global limit".
pub const USE_GLOBAL: i64 = -2;
/// qBittorrent's share-limit sentinel "no limit".
pub const NO_LIMIT: i64 = -1;

/// Largest ratio limit and seed-time limit (minutes) accepted, as the API's.
const MAX_RATIO: f64 = super::types::MAX_RATIO;
const MAX_SEED_TIME_MIN: i64 = 5_256_000;

/// A per-torrent limit from qBittorrent's sentinels: -2 → `None` (global), -1 → `Some(0)`
/// (none: 0 is "no limit" in ringseed's limits), else the value.
fn sentinel<T>(v: i64, f: impl FnOnce(i64) -> T, zero: T) -> Option<T> {
    match v {
        USE_GLOBAL => None,
        NO_LIMIT => Some(zero),
        v => Some(f(v)),
    }
}

impl Service {
    /// The ids among `ids` that the node holds (torrents and magnets waiting for metadata).
    pub fn known(&self, ids: &[[u8; 20]]) -> Vec<[u8; 20]> {
        let all = self.lock();
        let pending = crate::engine::lock(&self.inner.pending);
        ids.iter()
            .filter(|id| all.contains_key(*id) || pending.contains_key(*id))
            .copied()
            .collect()
    }

    /// Refuses the call if one of `ids` is neither a torrent nor a waiting magnet.
    fn check_known(
        all: &HashMap<[u8; 20], Entry>,
        pending: &HashMap<[u8; 20], Pending>,
        ids: &[[u8; 20]],
    ) -> Result<(), ControlError> {
        match ids
            .iter()
            .find(|id| !all.contains_key(*id) && !pending.contains_key(*id))
        {
            Some(id) => Err(ControlError::NotFound(hex(id))),
            None => Ok(()),
        }
    }

    /// Checks an add's category (it must exist) and tags (valid, bounded).
    pub(super) fn check_add_organisation(&self, add: &AddOptions) -> Result<(), ControlError> {
        if let Some(c) = &add.category
            && !crate::engine::lock(&self.inner.categories).contains_key(c)
        {
            return Err(ControlError::UnknownCategory(c.clone()));
        }
        if add.tags.len() > organise::MAX_TORRENT_TAGS {
            return Err(ControlError::InvalidName(format!(
                "a torrent has at most {} tags",
                organise::MAX_TORRENT_TAGS
            )));
        }
        for t in &add.tags {
            organise::check_tag(t).map_err(ControlError::InvalidName)?;
        }
        let set = crate::engine::lock(&self.inner.tags);
        let new = add.tags.iter().filter(|t| !set.contains(*t)).count();
        if set.len() + new > organise::MAX_TAGS {
            return Err(ControlError::InvalidName(format!(
                "the node keeps at most {} tags",
                organise::MAX_TAGS
            )));
        }
        Ok(())
    }

    /// A category's save path as an add uses it: `None` for `""` (the data root).
    pub(super) fn category_save_path(&self, name: &str) -> Result<Option<String>, ControlError> {
        let cats = crate::engine::lock(&self.inner.categories);
        let p = cats
            .get(name)
            .ok_or_else(|| ControlError::UnknownCategory(name.to_string()))?;
        Ok((!p.is_empty()).then(|| p.clone()))
    }

    /// A category save path must stay in the data root, like every save path from the API.
    fn check_category_path(&self, save_path: &str) -> Result<(), ControlError> {
        if save_path.is_empty() {
            return Ok(());
        }
        let root = self.options().data_root.ok_or_else(|| {
            ControlError::BadRequest(
                "[torrents] data_dir is not set: category save paths are inside it".into(),
            )
        })?;
        confine_save_path(&root, save_path).map(|_| ())
    }

    // ----- categories -----

    /// Every category, by name.
    pub fn categories(&self) -> Vec<Category> {
        crate::engine::lock(&self.inner.categories)
            .iter()
            .map(|(name, save_path)| Category {
                name: name.clone(),
                save_path: save_path.clone(),
            })
            .collect()
    }

    /// Creates a category. `save_path` `""` is the data root; a relative path is under it; an
    /// absolute one must be inside it.
    pub fn create_category(&self, name: &str, save_path: &str) -> Result<(), ControlError> {
        organise::check_category_name(name).map_err(ControlError::InvalidName)?;
        self.check_category_path(save_path)?;
        let _changing = self.changes();
        {
            let cats = crate::engine::lock(&self.inner.categories);
            if cats.contains_key(name) {
                return Err(ControlError::CategoryExists(name.to_string()));
            }
            if cats.len() >= organise::MAX_CATEGORIES {
                return Err(ControlError::BadRequest(format!(
                    "the node keeps at most {} categories",
                    organise::MAX_CATEGORIES
                )));
            }
        }
        self.put_category(name, save_path)
    }

    /// Changes a category's save path (torrents already in it stay where they are, as in
    /// qBittorrent without automatic torrent management).
    pub fn edit_category(&self, name: &str, save_path: &str) -> Result<(), ControlError> {
        self.check_category_path(save_path)?;
        let _changing = self.changes();
        if !crate::engine::lock(&self.inner.categories).contains_key(name) {
            return Err(ControlError::UnknownCategory(name.to_string()));
        }
        self.put_category(name, save_path)
    }

    fn put_category(&self, name: &str, save_path: &str) -> Result<(), ControlError> {
        let (n, p) = (name.to_string(), save_path.to_string());
        self.inner
            .db
            .call(move |c| state::put_category(c, &n, &p))?
            .recv_result()?;
        crate::engine::lock(&self.inner.categories).insert(name.to_string(), save_path.to_string());
        Ok(())
    }

    /// Removes categories (unknown names are ignored, as qBittorrent does) and clears them from
    /// their torrents.
    pub fn remove_categories(&self, names: &[String]) -> Result<(), ControlError> {
        let _changing = self.changes();
        let known: Vec<String> = {
            let cats = crate::engine::lock(&self.inner.categories);
            names
                .iter()
                .filter(|n| cats.contains_key(*n))
                .cloned()
                .collect()
        };
        if known.is_empty() {
            return Ok(());
        }
        let gone = known.clone();
        self.inner
            .db
            .call(move |c| state::delete_categories(c, &gone))?
            .recv_result()?;
        let mut all = self.lock();
        let mut pending = crate::engine::lock(&self.inner.pending);
        let mut cats = crate::engine::lock(&self.inner.categories);
        for n in &known {
            cats.remove(n);
        }
        let cleared = |c: &mut Option<String>| {
            if c.as_ref().is_some_and(|c| known.contains(c)) {
                *c = None;
            }
        };
        all.values_mut().for_each(|e| cleared(&mut e.org.category));
        pending
            .values_mut()
            .for_each(|p| cleared(&mut p.rec.category));
        Ok(())
    }

    /// Sets (or with `None` clears) the category of torrents. Their data stays where it is.
    pub fn set_category(
        &self,
        ids: &[[u8; 20]],
        category: Option<&str>,
    ) -> Result<(), ControlError> {
        let _changing = self.changes();
        if let Some(c) = category
            && !crate::engine::lock(&self.inner.categories).contains_key(c)
        {
            return Err(ControlError::UnknownCategory(c.to_string()));
        }
        {
            let all = self.lock();
            let pending = crate::engine::lock(&self.inner.pending);
            Self::check_known(&all, &pending, ids)?;
        }
        let (saved, cat) = (ids.to_vec(), category.map(str::to_string));
        self.inner
            .db
            .call(move |c| state::save_category_of(c, &saved, cat.as_deref()))?
            .recv_result()?;
        let mut all = self.lock();
        let mut pending = crate::engine::lock(&self.inner.pending);
        for id in ids {
            let c = category.map(str::to_string);
            if let Some(e) = all.get_mut(id) {
                e.org.category = c;
            } else if let Some(p) = pending.get_mut(id) {
                p.rec.category = c;
            }
        }
        Ok(())
    }

    // ----- tags -----

    /// The node's tags, sorted.
    pub fn tags(&self) -> Vec<String> {
        crate::engine::lock(&self.inner.tags)
            .iter()
            .cloned()
            .collect()
    }

    fn check_tags(&self, tags: &[String]) -> Result<(), ControlError> {
        for t in tags {
            organise::check_tag(t).map_err(ControlError::InvalidName)?;
        }
        let set = crate::engine::lock(&self.inner.tags);
        let new: BTreeSet<&String> = tags.iter().filter(|t| !set.contains(*t)).collect();
        if set.len() + new.len() > organise::MAX_TAGS {
            return Err(ControlError::InvalidName(format!(
                "the node keeps at most {} tags",
                organise::MAX_TAGS
            )));
        }
        Ok(())
    }

    /// Adds tags to the node's set.
    pub fn create_tags(&self, tags: &[String]) -> Result<(), ControlError> {
        self.check_tags(tags)?;
        let _changing = self.changes();
        let mut set = crate::engine::lock(&self.inner.tags).clone();
        set.extend(tags.iter().cloned());
        self.save_tag_change(set, Vec::new())
    }

    /// Deletes tags from the node's set and from every torrent (unknown ones are ignored).
    pub fn delete_tags(&self, tags: &[String]) -> Result<(), ControlError> {
        let _changing = self.changes();
        let mut set = crate::engine::lock(&self.inner.tags).clone();
        for t in tags {
            set.remove(t);
        }
        let lists = self.retagged(None, |list| list.retain(|t| !tags.contains(t)));
        self.save_tag_change(set, lists)
    }

    /// Adds tags to torrents; a tag the node does not have joins its set (as in qBittorrent).
    pub fn add_tags(&self, ids: &[[u8; 20]], tags: &[String]) -> Result<(), ControlError> {
        self.check_tags(tags)?;
        let _changing = self.changes();
        {
            let all = self.lock();
            let pending = crate::engine::lock(&self.inner.pending);
            Self::check_known(&all, &pending, ids)?;
        }
        let lists = self.retagged(Some(ids), |list| {
            for t in tags {
                if !list.contains(t) {
                    list.push(t.clone());
                }
            }
        });
        if lists
            .iter()
            .any(|(_, l)| l.len() > organise::MAX_TORRENT_TAGS)
        {
            return Err(ControlError::InvalidName(format!(
                "a torrent has at most {} tags",
                organise::MAX_TORRENT_TAGS
            )));
        }
        let mut set = crate::engine::lock(&self.inner.tags).clone();
        set.extend(tags.iter().cloned());
        self.save_tag_change(set, lists)
    }

    /// Removes tags from torrents (the node's set keeps them).
    pub fn remove_tags(&self, ids: &[[u8; 20]], tags: &[String]) -> Result<(), ControlError> {
        let _changing = self.changes();
        {
            let all = self.lock();
            let pending = crate::engine::lock(&self.inner.pending);
            Self::check_known(&all, &pending, ids)?;
        }
        let lists = self.retagged(Some(ids), |list| list.retain(|t| !tags.contains(t)));
        let set = crate::engine::lock(&self.inner.tags).clone();
        self.save_tag_change(set, lists)
    }

    /// The tag lists `f` makes of the torrents `ids` (every torrent with `None`), only those
    /// that change.
    fn retagged(
        &self,
        ids: Option<&[[u8; 20]]>,
        f: impl Fn(&mut Vec<String>),
    ) -> Vec<([u8; 20], Vec<String>)> {
        let all = self.lock();
        let pending = crate::engine::lock(&self.inner.pending);
        let lists = all
            .iter()
            .map(|(id, e)| (*id, &e.org.tags))
            .chain(pending.iter().map(|(id, p)| (*id, &p.rec.tags)));
        lists
            .filter(|(id, _)| ids.is_none_or(|ids| ids.contains(id)))
            .filter_map(|(id, old)| {
                let mut new = old.clone();
                f(&mut new);
                (new != *old).then_some((id, new))
            })
            .collect()
    }

    /// Saves the node's tag set and the changed torrents' lists, then applies them (the caller
    /// holds the state lock).
    fn save_tag_change(
        &self,
        set: BTreeSet<String>,
        lists: Vec<([u8; 20], Vec<String>)>,
    ) -> Result<(), ControlError> {
        let names: Vec<String> = set.iter().cloned().collect();
        let saved = lists.clone();
        self.inner
            .db
            .call(move |c| state::save_tags(c, &names, &saved))?
            .recv_result()?;
        *crate::engine::lock(&self.inner.tags) = set;
        let mut all = self.lock();
        let mut pending = crate::engine::lock(&self.inner.pending);
        for (id, list) in lists {
            if let Some(e) = all.get_mut(&id) {
                e.org.tags = list;
            } else if let Some(p) = pending.get_mut(&id) {
                p.rec.tags = list;
            }
        }
        Ok(())
    }

    // ----- share limits, force start -----

    /// Changes the settings of several torrents with `f` in one durable write, then applies
    /// them. Magnets waiting for their metadata are skipped (they have no settings yet).
    fn change_many(
        &self,
        ids: &[[u8; 20]],
        f: impl Fn(&mut state::Settings),
    ) -> Result<(), ControlError> {
        let _changing = self.changes();
        let wanted: Vec<([u8; 20], state::Settings)> = {
            let all = self.lock();
            let pending = crate::engine::lock(&self.inner.pending);
            Self::check_known(&all, &pending, ids)?;
            ids.iter()
                .filter_map(|id| {
                    all.get(id).map(|e| {
                        let mut s = e.settings();
                        f(&mut s);
                        (*id, s)
                    })
                })
                .collect()
        };
        let saved = wanted.clone();
        self.inner
            .db
            .call(move |c| {
                for (id, s) in &saved {
                    state::save_settings(c, id, s)?;
                }
                Ok(())
            })?
            .recv_result()?;
        {
            let mut all = self.lock();
            for (id, s) in wanted {
                if let Some(e) = all.get_mut(&id) {
                    self.apply_settings(id, e, s);
                }
            }
        }
        self.apply_queue();
        Ok(())
    }

    /// qBittorrent's `setShareLimits`: `ratio`, `seeding_min` and `inactive_min` (minutes) each
    /// -2 (the global limit), -1 (none) or a limit. ringseed keeps 0 as "none" too.
    pub fn set_share_limits(
        &self,
        ids: &[[u8; 20]],
        ratio: f64,
        seeding_min: i64,
        inactive_min: i64,
    ) -> Result<(), ControlError> {
        let bad = |what: &str, v: String| {
            ControlError::BadRequest(format!(
                "{what} = {v}: -2 (global), -1 (none) or a limit up to the API's bound"
            ))
        };
        let is = |v: f64| (ratio - v).abs() < 1e-9;
        if !(is(-2.0) || is(-1.0) || (0.0..=MAX_RATIO).contains(&ratio)) {
            return Err(bad("ratio limit", ratio.to_string()));
        }
        for (what, v) in [
            ("seeding time", seeding_min),
            ("inactive seeding time", inactive_min),
        ] {
            if !(USE_GLOBAL..=MAX_SEED_TIME_MIN).contains(&v) {
                return Err(bad(what, v.to_string()));
            }
        }
        let ratio = if ratio <= -1.5 {
            None
        } else if ratio < 0.0 {
            Some(0.0)
        } else {
            Some(ratio)
        };
        let secs = |m: i64| u64::try_from(m).unwrap_or(0) * 60;
        let seed = sentinel(seeding_min, secs, 0);
        let inactive = sentinel(inactive_min, secs, 0);
        self.change_many(ids, |s| {
            s.limits.ratio = ratio;
            s.limits.seed_time_s = seed;
            s.limits.inactive_seed_time_s = inactive;
        })
    }

    /// Force start (`true`): served whatever the queue says (and resumed if paused, as
    /// qBittorrent's `setForceStart` does); `false`: back under the queue.
    pub fn set_force_start(&self, ids: &[[u8; 20]], value: bool) -> Result<(), ControlError> {
        self.change_many(ids, |s| {
            s.force_start = value;
            if value {
                s.paused = false;
                s.stopped_by = None;
            }
        })
    }

    // ----- queue -----

    pub fn queue_top(&self, ids: &[[u8; 20]]) -> Result<(), ControlError> {
        self.queue_move(ids, QueueMove::Top)
    }

    pub fn queue_bottom(&self, ids: &[[u8; 20]]) -> Result<(), ControlError> {
        self.queue_move(ids, QueueMove::Bottom)
    }

    pub fn queue_up(&self, ids: &[[u8; 20]]) -> Result<(), ControlError> {
        self.queue_move(ids, QueueMove::Up)
    }

    pub fn queue_down(&self, ids: &[[u8; 20]]) -> Result<(), ControlError> {
        self.queue_move(ids, QueueMove::Down)
    }

    /// Moves torrents in the download queue (complete torrents are not in it, as in
    /// qBittorrent). The incomplete torrents trade the positions they hold among themselves, so
    /// the complete ones keep theirs.
    fn queue_move(&self, ids: &[[u8; 20]], how: QueueMove) -> Result<(), ControlError> {
        if !self.options().queue.enabled {
            return Err(ControlError::QueueingDisabled);
        }
        let _changing = self.changes();
        let new: Vec<([u8; 20], i64)> = {
            let all = self.lock();
            let pending = crate::engine::lock(&self.inner.pending);
            Self::check_known(&all, &pending, ids)?;
            let queue: Vec<([u8; 20], i64)> = all
                .iter()
                .filter(|(_, e)| e.downloading)
                .map(|(id, e)| (*id, e.org.queue_pos))
                .collect();
            let mut slots: Vec<i64> = queue.iter().map(|&(_, p)| p).collect();
            slots.sort_unstable();
            organise::move_in_queue(&queue, ids, how)
                .into_iter()
                .filter_map(|(id, rank)| {
                    let slot = usize::try_from(rank - 1).ok()?;
                    Some((id, *slots.get(slot)?))
                })
                .collect()
        };
        let saved = new.clone();
        self.inner
            .db
            .call(move |c| state::save_queue(c, &saved))?
            .recv_result()?;
        {
            let mut all = self.lock();
            for (id, pos) in new {
                if let Some(e) = all.get_mut(&id) {
                    e.org.queue_pos = pos;
                }
            }
        }
        self.apply_queue();
        Ok(())
    }

    /// Gives every torrent its own queue position (a state from before queueing has them all
    /// at 0): by position, then added time, then info-hash. Saved without waiting.
    pub(super) fn normalise_queue(&self) {
        let mut all = self.lock();
        let mut order: Vec<([u8; 20], i64, i64)> = all
            .iter()
            .map(|(id, e)| (*id, e.org.queue_pos, e.added_at))
            .collect();
        order.sort_by_key(|&(id, pos, added)| (pos, added, id));
        if order.windows(2).all(|w| w[0].1 < w[1].1) {
            return;
        }
        let new: Vec<([u8; 20], i64)> = order.iter().map(|&(id, _, _)| id).zip(1..).collect();
        for (id, pos) in &new {
            if let Some(e) = all.get_mut(id) {
                e.org.queue_pos = *pos;
            }
        }
        drop(all);
        if let Err(e) = self.inner.db.call(move |c| state::save_queue(c, &new)) {
            tracing::error!("saving queue positions: {e}");
        }
    }

    /// Serves or queues every torrent as the queue decides ([`organise::plan`]).
    pub(super) fn apply_queue(&self) {
        let limits = self.options().queue;
        let mut all = self.lock();
        let ids: Vec<[u8; 20]> = all.keys().copied().collect();
        let items: Vec<QueueItem> = ids
            .iter()
            .filter_map(|id| all.get(id))
            .map(|e| QueueItem {
                pos: e.org.queue_pos,
                downloading: e.downloading,
                force: e.org.force_start,
                wants_to_run: e.wants_to_run(),
            })
            .collect();
        let plan = organise::plan(&items, limits);
        for (id, queued) in ids.iter().zip(plan) {
            let Some(e) = all.get_mut(id) else { continue };
            if !e.wants_to_run() {
                // Checking, paused or failed: the plan leaves it out, and its mark stays. Were
                // it cleared here, a torrent whose check ends after this plan would be served
                // at once by the check and queued again by the next plan (an announce, then
                // a stop, for a torrent that never had a slot).
                continue;
            }
            if queued && !e.queued {
                tracing::info!(torrent = %e.meta.info.name, "queued");
                e.queued = true;
                self.unserve(*id, e);
            } else if !queued && e.queued {
                e.queued = false;
                if e.wants_to_run() {
                    tracing::info!(torrent = %e.meta.info.name, "leaves the queue");
                    self.serve(*id, e);
                }
            }
        }
    }

    /// 1-based places of the incomplete torrents in the queue (empty with queueing off).
    pub(super) fn queue_ranks(&self, all: &HashMap<[u8; 20], Entry>) -> HashMap<[u8; 20], i64> {
        if !self.options().queue.enabled {
            return HashMap::new();
        }
        let mut q: Vec<([u8; 20], i64)> = all
            .iter()
            .filter(|(_, e)| e.downloading)
            .map(|(id, e)| (*id, e.org.queue_pos))
            .collect();
        q.sort_by_key(|&(id, p)| (p, id));
        q.into_iter().map(|(id, _)| id).zip(1..).collect()
    }

    /// Once a second: notes payload activity (the torrent objects' counters moved) and the time
    /// a torrent is first complete.
    pub(super) fn activity_tick(&self) {
        let now = now_unix();
        let mut all = self.lock();
        for e in all.values_mut() {
            let Some(t) = &e.torrent else { continue };
            let total = t.uploaded().saturating_add(t.downloaded());
            // A new torrent object (a recheck) starts its counters again: not activity.
            if total > e.activity_sample {
                e.org.last_activity = Some(now);
            }
            e.activity_sample = total;
            if e.status == Status::Ready
                && !e.downloading
                && e.org.completed_at.is_none()
                && t.pieces.verified.is_full()
            {
                e.org.completed_at = Some(now);
            }
        }
    }

    // ----- global settings -----

    /// The global share-limit and queueing settings in force.
    pub fn org_settings(&self) -> OrgSettings {
        let o = self.options();
        OrgSettings {
            queueing: o.queue.enabled,
            max_active_downloads: o.queue.downloads,
            max_active_uploads: o.queue.uploads,
            max_active_torrents: o.queue.torrents,
            limit_action: o.limit_action,
            ratio: o.global_limits.ratio,
            seed_time_s: o.global_limits.seed_time_s,
            inactive_seed_time_s: o.global_limits.inactive_seed_time_s,
        }
    }

    /// The settings set through the API (`None`: the config's value).
    pub fn global_settings(&self) -> GlobalSettings {
        *crate::engine::lock(&self.inner.settings)
    }

    /// Sets the global queueing and share-limit settings (each `None`: the config's value) and
    /// saves them; the queue follows at once. Global ratio and seeding time are
    /// [`Service::set_global_limits`].
    pub fn set_global_settings(&self, g: GlobalSettings) -> Result<(), ControlError> {
        for (what, v) in [
            ("max_active_downloads", g.max_active_downloads),
            ("max_active_uploads", g.max_active_uploads),
            ("max_active_torrents", g.max_active_torrents),
        ] {
            if let Some(v) = v
                && !(-1..=100_000).contains(&v)
            {
                return Err(ControlError::BadRequest(format!(
                    "{what} = {v}: allowed -1 (no limit) ..= 100000"
                )));
            }
        }
        if g.inactive_seed_time_s
            .is_some_and(|s| s > MAX_SEED_TIME_MIN as u64 * 60)
        {
            return Err(ControlError::BadRequest(
                "inactive seeding time: at most ten years".into(),
            ));
        }
        let _changing = self.changes();
        self.inner
            .db
            .call(move |c| state::put_settings(c, &g))?
            .recv_result()?;
        *crate::engine::lock(&self.inner.settings) = g;
        self.apply_queue();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qbittorrent_sentinels_map_to_global_none_and_values() {
        let secs = |m: i64| u64::try_from(m).unwrap_or(0) * 60;
        assert_eq!(sentinel(USE_GLOBAL, secs, 0), None);
        assert_eq!(sentinel(NO_LIMIT, secs, 0), Some(0));
        assert_eq!(sentinel(30, secs, 0), Some(1800));
    }
}
