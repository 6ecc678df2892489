//! Per-torrent announce scheduling over BEP 12 tiers: which tracker, which event, and when.
//!
//! [`Announcer`] is a state machine that a tokio task drives:
//!
//! ```no_run
//! # async fn f(client: ringseed::tracker::TrackerClient, mut a: ringseed::tracker::Announcer,
//! #            stats: impl Fn() -> ringseed::tracker::TransferStats) {
//! use ringseed::tracker::AnnounceOutcome;
//! loop {
//!     tokio::time::sleep_until(a.next_due().into()).await;
//!     match a.announce_now(&client, stats()).await {
//!         AnnounceOutcome::Announced { response, .. } => { /* hand response.peers to the engine */ }
//!         AnnounceOutcome::Failed { error } => eprintln!("announce failed: {error}"),
//!         AnnounceOutcome::NoTrackers | AnnounceOutcome::Stopped => break,
//!     }
//! }
//! # }
//! ```
//!
//! Rules:
//! - Tiers are tried in order; within a tier trackers are tried in order (shuffled once at
//!   construction, BEP 12). The first that answers is moved to the front of its tier. The next
//!   tier is tried only when every tracker of a tier failed.
//! - Each tracker's first successful announce carries `started`; `completed` goes once after
//!   [`Announcer::mark_completed`]; [`Announcer::stop`] sends `stopped` to every tracker that
//!   was started, within a short deadline.
//! - After a success the next announce is due after `interval`, and never sooner than
//!   `min interval`. After a failure of every tracker it is due after an exponential backoff
//!   (capped), still never sooner than `min interval` after the last success. Events
//!   (`completed`, `stopped`) are sent at once.
//! - While the torrent downloads (`left > 0`) and the trackers return no peers, the next
//!   announce comes sooner: after [`AnnouncerConfig::empty_retry_base`], doubling each time, up
//!   to the tracker's interval, and never sooner than `min interval` (racing users add a
//!   torrent the moment it is uploaded, before any seed has announced).
//! - Time comes from an injectable [`Clock`], so the schedule is testable without sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{AnnounceTransport, random_u32};
use super::{AnnounceRequest, AnnounceResponse, Event, TrackerError};

/// The time source of an [`Announcer`]: `Instant::now` in production, a hand-moved clock in
/// tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Knobs of the announce schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// Peers asked for per announce (`numwant`); `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// Wait after the first failed announce cycle; doubled after each further failure.
    pub retry_base: Duration,
    /// Longest wait between failed announce cycles.
    pub retry_cap: Duration,
    /// Time allowed for all `stopped` announces at shutdown together.
    pub stop_deadline: Duration,
    /// First wait after an announce that returned no peers while downloading; doubled after
    /// each further empty answer, up to the interval.
    pub empty_retry_base: Duration,
}

impl Default for AnnouncerConfig {
    fn default() -> Self {
        AnnouncerConfig {
            numwant: Some(50),
            retry_base: Duration::from_secs(30),
            retry_cap: Duration::from_secs(3600),
            stop_deadline: Duration::from_secs(5),
            empty_retry_base: Duration::from_secs(5),
        }
    }
}

/// The engine's truthful transfer figures for a torrent at announce time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferStats {
    /// Payload bytes sent to peers since the torrent was started.
    pub uploaded: u64,
    /// Payload bytes received from peers (and verified) since the torrent was started.
    pub downloaded: u64,
    /// Bytes still missing; 0 for a seed.
    pub left: u64,
}

/// What the announcer knows about one tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// Whether this tracker has accepted our `started` (and not yet had `stopped`).
    pub started: bool,
    /// The `tracker id` it gave, sent back in later announces.
    pub tracker_id: Option<Vec<u8>>,
    /// Its most recent error, cleared by a success.
    pub last_error: Option<TrackerError>,
    /// Its most recent `warning message`.
    pub warning: Option<String>,
    /// When it last answered an announce.
    pub last_success: Option<Instant>,
    /// Seeders and leechers from its last answer.
    pub complete: Option<u32>,
    pub incomplete: Option<u32>,
}

impl TrackerStatus {
    /// A tracker not contacted yet.
    pub(crate) fn new(url: String) -> Self {
        TrackerStatus {
            url,
            started: false,
            tracker_id: None,
            last_error: None,
            warning: None,
            last_success: None,
            complete: None,
            incomplete: None,
        }
    }
}

/// The result of [`Announcer::announce_now`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnounceOutcome {
    /// A tracker answered.
    Announced {
        url: String,
        event: Event,
        response: AnnounceResponse,
    },
    /// Every tracker failed; `error` is the most telling of their errors (a tracker's own
    /// failure reason before a network error).
    Failed { error: TrackerError },
    /// The torrent has no usable tracker URL.
    NoTrackers,
    /// [`Announcer::stop`] was called; nothing more is announced.
    Stopped,
}

/// The announce schedule of one torrent over its tracker tiers. See the module docs.
pub struct Announcer {
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    port: u16,
    key: u32,
    config: AnnouncerConfig,
    tiers: Vec<Vec<TrackerStatus>>,
    clock: Clock,
    next_due: Instant,
    interval: Option<Duration>,
    min_interval: Option<Duration>,
    last_success: Option<Instant>,
    failures: u32,
    completed_pending: bool,
    /// Successful announces in a row that returned no peers while downloading.
    empty_answers: u32,
    stopped: bool,
    last_error: Option<TrackerError>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("tiers", &self.tiers)
            .field("next_due", &self.next_due)
            .field("failures", &self.failures)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl Announcer {
    /// An announcer for a torrent with these tracker tiers (BEP 12 `announce-list`, or the lone
    /// `announce` as one tier). Empty URLs, empty tiers and repeated URLs are dropped; each tier
    /// is shuffled once. The first announce is due at once.
    pub fn new(
        info_hash: [u8; 20],
        peer_id: [u8; 20],
        port: u16,
        tiers: &[Vec<String>],
        config: AnnouncerConfig,
    ) -> Self {
        let mut seen = std::collections::HashSet::new();
        let tiers: Vec<Vec<TrackerStatus>> = tiers
            .iter()
            .map(|tier| {
                let mut t: Vec<TrackerStatus> = tier
                    .iter()
                    .map(|u| u.trim())
                    .filter(|u| !u.is_empty() && seen.insert(u.to_string()))
                    .map(|u| TrackerStatus::new(u.to_owned()))
                    .collect();
                shuffle(&mut t);
                t
            })
            .filter(|t| !t.is_empty())
            .collect();
        Announcer {
            info_hash,
            peer_id,
            port,
            key: random_u32(),
            config,
            tiers,
            clock: Arc::new(Instant::now),
            next_due: Instant::now(),
            interval: None,
            min_interval: None,
            last_success: None,
            failures: 0,
            completed_pending: false,
            empty_answers: 0,
            stopped: false,
            last_error: None,
        }
    }

    /// Uses `clock` as the time source from now on; the first announce is due at its current
    /// time.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.next_due = clock();
        self.clock = clock;
        self
    }

    /// When the next announce is due.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// Whether the next announce is due now.
    pub fn is_due(&self) -> bool {
        !self.stopped && (self.clock)() >= self.next_due
    }

    /// Call when the torrent finishes downloading while running (not when it starts complete):
    /// the next announce carries `completed` and is due at once.
    pub fn mark_completed(&mut self) {
        if !self.completed_pending {
            self.completed_pending = true;
            self.next_due = self.next_due.min((self.clock)());
        }
    }

    /// The error of the last announce cycle, when every tracker failed; the tracker's own
    /// failure reason when one gave it. Cleared by the next success.
    pub fn last_error(&self) -> Option<&TrackerError> {
        self.last_error.as_ref()
    }

    /// The tiers in their current order (the order the next announce will try).
    pub fn tiers(&self) -> &[Vec<TrackerStatus>] {
        &self.tiers
    }

    /// Consecutive failed announce cycles.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The interval and min interval of the last successful announce.
    pub fn intervals(&self) -> (Option<Duration>, Option<Duration>) {
        (self.interval, self.min_interval)
    }

    /// Announces now to the first tracker that answers, tiers in order, and schedules the next
    /// announce. `stats` are the engine's figures at this moment.
    pub async fn announce_now(
        &mut self,
        transport: &impl AnnounceTransport,
        stats: TransferStats,
    ) -> AnnounceOutcome {
        if self.stopped {
            return AnnounceOutcome::Stopped;
        }
        if self.tiers.is_empty() {
            return AnnounceOutcome::NoTrackers;
        }
        let mut worst: Option<TrackerError> = None;
        for t in 0..self.tiers.len() {
            for i in 0..self.tiers[t].len() {
                let tracker = &self.tiers[t][i];
                let event = if !tracker.started {
                    Event::Started
                } else if self.completed_pending {
                    Event::Completed
                } else {
                    Event::None
                };
                let req = self.request(tracker, event, stats);
                let url = tracker.url.clone();
                match transport.announce(&url, &req).await {
                    Ok(response) => {
                        self.on_success(t, i, event, &response, stats.left);
                        return AnnounceOutcome::Announced {
                            url,
                            event,
                            response,
                        };
                    }
                    Err(e) => {
                        // A tracker's own words say more than a timeout.
                        if !matches!(worst, Some(TrackerError::Failure(_))) {
                            worst = Some(e.clone());
                        }
                        self.tiers[t][i].last_error = Some(e);
                    }
                }
            }
        }
        let error = worst.unwrap_or(TrackerError::Failure("no tracker answered".into()));
        self.on_failure();
        self.last_error = Some(error.clone());
        AnnounceOutcome::Failed { error }
    }

    /// Sends `stopped` to every tracker that was started, all within the configured deadline,
    /// and ends the schedule. Returns the last error, or a timeout when the deadline ran out.
    pub async fn stop(
        &mut self,
        transport: &impl AnnounceTransport,
        stats: TransferStats,
    ) -> Result<(), TrackerError> {
        self.stopped = true;
        let deadline = self.config.stop_deadline;
        let send_all = async {
            let mut result = Ok(());
            for t in 0..self.tiers.len() {
                for i in 0..self.tiers[t].len() {
                    if !self.tiers[t][i].started {
                        continue;
                    }
                    let req = self.request(&self.tiers[t][i], Event::Stopped, stats);
                    let url = self.tiers[t][i].url.clone();
                    self.tiers[t][i].started = false;
                    if let Err(e) = transport.announce(&url, &req).await {
                        self.tiers[t][i].last_error = Some(e.clone());
                        result = Err(e);
                    }
                }
            }
            result
        };
        match tokio::time::timeout(deadline, send_all).await {
            Ok(r) => r,
            Err(_) => Err(TrackerError::Timeout {
                url: "(stopped announces)".into(),
                after: deadline,
            }),
        }
    }

    fn request(
        &self,
        tracker: &TrackerStatus,
        event: Event,
        stats: TransferStats,
    ) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: stats.uploaded,
            downloaded: stats.downloaded,
            left: stats.left,
            event,
            numwant: if event == Event::Stopped {
                Some(0)
            } else {
                self.config.numwant
            },
            key: self.key,
            tracker_id: tracker.tracker_id.clone(),
        }
    }

    fn on_success(
        &mut self,
        tier: usize,
        index: usize,
        event: Event,
        r: &AnnounceResponse,
        left: u64,
    ) {
        let now = (self.clock)();
        let mut tracker = self.tiers[tier].remove(index);
        tracker.started = true;
        tracker.last_error = None;
        tracker.last_success = Some(now);
        tracker.warning = r.warning.clone();
        tracker.complete = r.complete;
        tracker.incomplete = r.incomplete;
        if r.tracker_id.is_some() {
            tracker.tracker_id = r.tracker_id.clone();
        }
        self.tiers[tier].insert(0, tracker);
        if event == Event::Completed {
            self.completed_pending = false;
        }
        self.failures = 0;
        self.last_error = None;
        self.last_success = Some(now);
        self.interval = Some(r.interval);
        self.min_interval = r.min_interval;
        let min = r.min_interval.unwrap_or_default();
        self.next_due = if self.completed_pending {
            // A `started` went to a tracker new to us; `completed` is still owed.
            now
        } else if left > 0 && r.peers.is_empty() {
            // Downloading and nobody to download from: ask again soon.
            self.empty_answers = self.empty_answers.saturating_add(1);
            let wait = self
                .config
                .empty_retry_base
                .saturating_mul(1u32 << (self.empty_answers - 1).min(20))
                .min(r.interval);
            now + wait.max(min)
        } else {
            self.empty_answers = 0;
            now + r.interval.max(min)
        };
    }

    fn on_failure(&mut self) {
        let now = (self.clock)();
        self.failures = self.failures.saturating_add(1);
        let backoff = self
            .config
            .retry_base
            .saturating_mul(1u32 << (self.failures - 1).min(20))
            .min(self.config.retry_cap);
        let mut due = now + backoff;
        if let (Some(last), Some(min)) = (self.last_success, self.min_interval) {
            due = due.max(last + min);
        }
        self.next_due = due;
    }
}

/// Fisher–Yates with the kernel's random numbers (BEP 12 asks for a random order per tier).
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (random_u32() as usize) % (i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};
    use std::future::Future;
    use std::sync::Mutex;

    type Reply = Result<AnnounceResponse, TrackerError>;

    /// One announce a [`Scripted`] transport saw: URL, event, tracker id sent.
    type Call = (String, Event, Option<Vec<u8>>);

    /// A transport that answers from a script per URL and records what it was asked.
    #[derive(Default)]
    struct Scripted {
        replies: RefCell<HashMap<String, VecDeque<Reply>>>,
        log: RefCell<Vec<Call>>,
    }

    impl Scripted {
        fn push(&self, url: &str, r: Reply) {
            self.replies
                .borrow_mut()
                .entry(url.into())
                .or_default()
                .push_back(r);
        }
        fn calls(&self) -> Vec<(String, Event)> {
            self.log
                .borrow()
                .iter()
                .map(|(u, e, _)| (u.clone(), *e))
                .collect()
        }
    }

    impl AnnounceTransport for Scripted {
        fn announce(
            &self,
            url: &str,
            req: &AnnounceRequest,
        ) -> impl Future<Output = Result<AnnounceResponse, TrackerError>> {
            self.log
                .borrow_mut()
                .push((url.into(), req.event, req.tracker_id.clone()));
            let r = self
                .replies
                .borrow_mut()
                .get_mut(url)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Err(TrackerError::Timeout {
                    url: url.into(),
                    after: Duration::from_secs(1),
                }));
            std::future::ready(r)
        }
    }

    fn ok(interval: u64, min: Option<u64>) -> Result<AnnounceResponse, TrackerError> {
        Ok(AnnounceResponse {
            interval: Duration::from_secs(interval),
            min_interval: min.map(Duration::from_secs),
            tracker_id: None,
            complete: Some(1),
            incomplete: Some(0),
            peers: vec![std::net::SocketAddr::from(([127, 0, 0, 9], 6881))],
            warning: None,
        })
    }

    fn ok_empty(interval: u64, min: Option<u64>) -> Result<AnnounceResponse, TrackerError> {
        ok(interval, min).map(|r| AnnounceResponse { peers: vec![], ..r })
    }

    #[tokio::test]
    async fn no_peers_while_downloading_reannounces_sooner_within_min_interval() {
        let (clock, c) = ManualClock::new();
        let mut a = announcer(&[&["http://a/announce"]], c);
        let t = Scripted::default();
        let u = "http://a/announce";
        let start = clock.now();
        t.push(u, ok_empty(1800, None));
        a.announce_now(&t, STATS).await;
        assert_eq!(a.next_due(), start + Duration::from_secs(5));
        clock.advance(Duration::from_secs(5));
        t.push(u, ok_empty(1800, None));
        a.announce_now(&t, STATS).await;
        assert_eq!(a.next_due(), clock.now() + Duration::from_secs(10));
        // `min interval` is a floor.
        t.push(u, ok_empty(1800, Some(60)));
        a.announce_now(&t, STATS).await;
        assert_eq!(a.next_due(), clock.now() + Duration::from_secs(60));
        // Peers at last: back to the interval.
        t.push(u, ok(1800, Some(60)));
        a.announce_now(&t, STATS).await;
        assert_eq!(a.next_due(), clock.now() + Duration::from_secs(1800));
        // A seed with no peers to fetch from waits the interval.
        t.push(u, ok_empty(1800, None));
        a.announce_now(&t, TransferStats { left: 0, ..STATS }).await;
        assert_eq!(a.next_due(), clock.now() + Duration::from_secs(1800));
    }

    struct ManualClock(Arc<Mutex<Instant>>);
    impl ManualClock {
        fn new() -> (Self, Clock) {
            let t = Arc::new(Mutex::new(Instant::now()));
            let c = t.clone();
            (ManualClock(t), Arc::new(move || *c.lock().unwrap()))
        }
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    fn announcer(tiers: &[&[&str]], clock: Clock) -> Announcer {
        let tiers: Vec<Vec<String>> = tiers
            .iter()
            .map(|t| t.iter().map(|s| s.to_string()).collect())
            .collect();
        Announcer::new([1; 20], [2; 20], 6881, &tiers, AnnouncerConfig::default()).with_clock(clock)
    }

    const STATS: TransferStats = TransferStats {
        uploaded: 0,
        downloaded: 0,
        left: 100,
    };

    #[tokio::test]
    async fn events_started_none_completed_stopped() {
        let (clock, c) = ManualClock::new();
        let mut a = announcer(&[&["http://a/announce"]], c);
        let t = Scripted::default();
        let u = "http://a/announce";
        for _ in 0..3 {
            t.push(u, ok(1800, None));
        }
        assert!(a.is_due());
        let start = clock.now();
        assert!(matches!(
            a.announce_now(&t, STATS).await,
            AnnounceOutcome::Announced {
                event: Event::Started,
                ..
            }
        ));
        assert_eq!(a.next_due(), start + Duration::from_secs(1800));
        assert!(!a.is_due());
        clock.advance(Duration::from_secs(1800));
        assert!(a.is_due());
        a.announce_now(&t, STATS).await;
        clock.advance(Duration::from_secs(10));
        a.mark_completed();
        assert!(a.is_due(), "completed is sent at once");
        a.announce_now(&t, TransferStats { left: 0, ..STATS }).await;
        t.push(u, ok(1800, None));
        a.stop(&t, STATS).await.unwrap();
        assert_eq!(
            t.calls(),
            vec![
                (u.to_string(), Event::Started),
                (u.to_string(), Event::None),
                (u.to_string(), Event::Completed),
                (u.to_string(), Event::Stopped),
            ]
        );
        assert_eq!(a.announce_now(&t, STATS).await, AnnounceOutcome::Stopped);
        assert!(!a.is_due());
    }

    #[tokio::test]
    async fn min_interval_is_a_floor_and_failures_back_off_with_a_cap() {
        let (clock, c) = ManualClock::new();
        let mut a = announcer(&[&["udp://a:1"]], c);
        let t = Scripted::default();
        t.push("udp://a:1", ok(60, Some(600)));
        a.announce_now(&t, STATS).await;
        let first = clock.now();
        assert_eq!(a.next_due(), first + Duration::from_secs(600));
        // Failures back off 30, 60, 120 ... but never before min interval since the last success.
        clock.advance(Duration::from_secs(600));
        let mut waits = Vec::new();
        for _ in 0..10 {
            let out = a.announce_now(&t, STATS).await;
            assert!(matches!(out, AnnounceOutcome::Failed { .. }));
            waits.push((a.next_due() - clock.now()).as_secs());
            clock.advance(a.next_due() - clock.now());
        }
        assert_eq!(
            waits,
            vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
        );
        assert_eq!(a.failures(), 10);
        assert!(matches!(a.last_error(), Some(TrackerError::Timeout { .. })));
        t.push("udp://a:1", ok(120, None));
        a.announce_now(&t, STATS).await;
        assert_eq!(a.failures(), 0);
        assert_eq!(a.last_error(), None);
        assert_eq!(a.next_due(), clock.now() + Duration::from_secs(120));
    }

    #[tokio::test]
    async fn backoff_respects_min_interval_after_a_success() {
        let (clock, c) = ManualClock::new();
        let mut a = announcer(&[&["udp://a:1"]], c);
        let t = Scripted::default();
        t.push("udp://a:1", ok(60, Some(900)));
        a.announce_now(&t, STATS).await;
        let success = clock.now();
        clock.advance(Duration::from_secs(60));
        a.announce_now(&t, STATS).await;
        assert_eq!(a.next_due(), success + Duration::from_secs(900));
    }

    #[tokio::test]
    async fn tiers_fall_back_and_the_working_tracker_moves_to_the_front() {
        let (_clock, c) = ManualClock::new();
        let mut a = announcer(
            &[&["http://dead1/a", "http://live/a"], &["http://tier2/a"]],
            c,
        );
        let t = Scripted::default();
        t.push("http://live/a", ok(1800, None));
        t.push("http://live/a", ok(1800, None));
        let out = a.announce_now(&t, STATS).await;
        assert!(
            matches!(out, AnnounceOutcome::Announced { ref url, .. } if url == "http://live/a")
        );
        assert_eq!(a.tiers()[0][0].url, "http://live/a");
        assert!(t.calls().iter().all(|(u, _)| u != "http://tier2/a"));
        t.log.borrow_mut().clear();
        a.announce_now(&t, STATS).await;
        assert_eq!(t.calls(), vec![("http://live/a".to_string(), Event::None)]);

        // All of tier 1 failing moves on to tier 2, which gets its own `started`.
        t.log.borrow_mut().clear();
        t.push("http://tier2/a", ok(1800, None));
        let out = a.announce_now(&t, STATS).await;
        assert!(
            matches!(out, AnnounceOutcome::Announced { ref url, event: Event::Started, .. } if url == "http://tier2/a")
        );
        assert_eq!(t.calls().len(), 3);
        // Stopped goes to both trackers that were started.
        t.log.borrow_mut().clear();
        a.stop(&t, STATS).await.ok();
        let mut stopped: Vec<String> = t.calls().into_iter().map(|(u, _)| u).collect();
        stopped.sort();
        assert_eq!(stopped, vec!["http://live/a", "http://tier2/a"]);
    }

    #[tokio::test]
    async fn failure_reason_wins_over_timeouts_and_tracker_id_is_echoed() {
        let (_clock, c) = ManualClock::new();
        let mut a = announcer(&[&["http://x/a"], &["http://y/a"]], c);
        let t = Scripted::default();
        t.push(
            "http://x/a",
            Err(TrackerError::Failure("banned client".into())),
        );
        let out = a.announce_now(&t, STATS).await;
        assert_eq!(
            out,
            AnnounceOutcome::Failed {
                error: TrackerError::Failure("banned client".into())
            }
        );
        assert_eq!(
            a.last_error(),
            Some(&TrackerError::Failure("banned client".into()))
        );
        let mut r = ok(1800, None).unwrap();
        r.tracker_id = Some(b"T1".to_vec());
        t.push("http://x/a", Ok(r));
        t.push("http://x/a", ok(1800, None));
        a.announce_now(&t, STATS).await;
        a.announce_now(&t, STATS).await;
        let log = t.log.borrow();
        assert_eq!(log[log.len() - 1].2.as_deref(), Some(&b"T1"[..]));
    }

    #[tokio::test]
    async fn no_trackers() {
        let mut a = Announcer::new(
            [0; 20],
            [0; 20],
            1,
            &[vec![" ".into()], vec![]],
            AnnouncerConfig::default(),
        );
        assert!(a.tiers().is_empty());
        assert_eq!(
            a.announce_now(&Scripted::default(), STATS).await,
            AnnounceOutcome::NoTrackers
        );
    }
}
