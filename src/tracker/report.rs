//! What a torrent's trackers last answered, as the control APIs show it (qBittorrent's
//! `torrents/trackers`): the announce loop writes it after every announce
//! ([`crate::session`]), readers copy it out.

use std::time::Instant;

use super::TrackerError;
use super::announcer::TrackerStatus;

/// Where one tracker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerState {
    /// Not announced to yet (or the torrent is stopped and never was).
    NotContacted,
    /// Its last announce was answered.
    Working,
    /// An announce to it is in flight.
    Updating,
    /// Its last announce failed (a failure reason, a network error, a timeout).
    NotWorking,
}

/// One tracker of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerReport {
    pub url: String,
    /// 0-based tier (BEP 12).
    pub tier: usize,
    pub state: TrackerState,
    /// The tracker's `failure reason` verbatim, or its `warning message`, or our own error
    /// text for a network failure; "" when all is well.
    pub message: String,
    /// Its last answer's `complete` / `incomplete`.
    pub seeds: Option<u32>,
    pub leeches: Option<u32>,
    /// Peers its last answer gave.
    pub peers: Option<u32>,
    /// When it last answered.
    pub last_success: Option<Instant>,
}

/// The message qBittorrent shows for an error: a tracker's own words verbatim, else ours.
fn message_of(e: &TrackerError) -> String {
    match e {
        TrackerError::Failure(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The reports of a torrent's tiers. `peers_given` is the number of peers the last answering
/// tracker (`answered`) returned, `in_flight` the tracker being asked now, if any.
pub fn reports(
    tiers: &[Vec<TrackerStatus>],
    answered: Option<(&str, u32)>,
    in_flight: Option<&str>,
    previous: &[TrackerReport],
) -> Vec<TrackerReport> {
    let mut out = Vec::new();
    for (tier, list) in tiers.iter().enumerate() {
        for t in list {
            let before = previous.iter().find(|p| p.url == t.url);
            let state = if in_flight == Some(t.url.as_str()) {
                TrackerState::Updating
            } else if t.last_error.is_some() {
                TrackerState::NotWorking
            } else if t.last_success.is_some() {
                TrackerState::Working
            } else {
                TrackerState::NotContacted
            };
            let message = match (&t.last_error, &t.warning) {
                (Some(e), _) => message_of(e),
                (None, Some(w)) => w.clone(),
                (None, None) => String::new(),
            };
            let peers = match answered {
                Some((url, n)) if url == t.url => Some(n),
                _ => before.and_then(|b| b.peers),
            };
            let ok = t.last_error.is_none();
            out.push(TrackerReport {
                url: t.url.clone(),
                tier,
                state,
                message,
                seeds: t.complete.filter(|_| ok),
                leeches: t.incomplete.filter(|_| ok),
                peers: peers.filter(|_| ok),
                last_success: t.last_success,
            });
        }
    }
    out
}

/// The reports of a torrent that has not announced (stopped, or not started yet).
pub fn not_contacted(tiers: &[Vec<String>]) -> Vec<TrackerReport> {
    tiers
        .iter()
        .enumerate()
        .flat_map(|(tier, list)| {
            list.iter().map(move |url| TrackerReport {
                url: url.clone(),
                tier,
                state: TrackerState::NotContacted,
                message: String::new(),
                seeds: None,
                leeches: None,
                peers: None,
                last_success: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(url: &str) -> TrackerStatus {
        TrackerStatus::new(url.into())
    }

    #[test]
    fn states_and_messages() {
        let mut ok = status("http://a/announce");
        ok.last_success = Some(Instant::now());
        ok.complete = Some(3);
        ok.incomplete = Some(1);
        let mut bad = status("http://b/announce");
        bad.last_error = Some(TrackerError::Failure("torrent not registered".into()));
        let fresh = status("udp://c:1/announce");
        let tiers = vec![vec![ok, bad], vec![fresh]];
        let r = reports(&tiers, Some(("http://a/announce", 7)), None, &[]);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].state, r[0].seeds, r[0].leeches, r[0].peers),
            (TrackerState::Working, Some(3), Some(1), Some(7))
        );
        assert_eq!(r[1].state, TrackerState::NotWorking);
        assert_eq!(r[1].message, "torrent not registered", "verbatim");
        assert_eq!((r[2].state, r[2].tier), (TrackerState::NotContacted, 1));
        let busy = reports(&tiers, None, Some("udp://c:1/announce"), &r);
        assert_eq!(busy[2].state, TrackerState::Updating);
        assert_eq!(busy[0].peers, Some(7), "kept from the previous report");
        let stopped = not_contacted(&[vec!["http://a/announce".into()]]);
        assert_eq!(stopped[0].state, TrackerState::NotContacted);
    }
}
