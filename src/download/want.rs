//! Which pieces a download wants, and which of them first: the qBittorrent API's file
//! priorities (`torrents/filePrio`), sequential download and first/last piece priority, turned
//! into bit masks the picker ANDs with a peer's bitfield a word at a time (`picker::claim`).
//!
//! A piece is wanted when any byte of it belongs to a file whose priority is not 0 (a piece
//! shared with a wanted file is fetched whole, so its skipped neighbour's bytes arrive too), or
//! when it holds no file data at all (padding only). Priorities follow qBittorrent: 0 skip,
//! 1 normal, 6 high, 7 maximal; anything else counts as normal. Pieces of maximal-priority
//! files, and with first/last on the first and last piece of each wanted file (libtorrent gives
//! those priority 7 too), form the first tier; pieces of high-priority files the second. A pick
//! takes the lowest tier with a piece the peer offers; within a tier, the lowest piece (a
//! linear scan is what keeps a tier cheap: no rarity index per tier).

use crate::metainfo::FileLayout;
use crate::pieces::AtomicBitfield;

/// qBittorrent's file priorities.
pub const SKIP: u8 = 0;
pub const NORMAL: u8 = 1;
pub const HIGH: u8 = 6;
pub const MAXIMAL: u8 = 7;

/// Whether `p` is a priority qBittorrent accepts in `filePrio`.
pub fn valid_priority(p: u8) -> bool {
    matches!(p, SKIP | NORMAL | HIGH | MAXIMAL)
}

/// The wanted pieces of one torrent and their order; built by [`Want::plan`], read by the
/// picker. Words in the piece table's layout: piece `64 w + b` in bit `b` of word `w`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    num_pieces: u32,
    wanted: Vec<u64>,
    /// Masks of pieces fetched before the rest, most urgent first; only non-empty ones.
    tiers: Vec<Vec<u64>>,
    /// Lowest missing piece first instead of rarest first.
    pub sequential: bool,
    /// Every piece wanted (no file skipped).
    all: bool,
    piece_length: u64,
}

impl Want {
    /// Every piece wanted, none first: a download without any priority set.
    pub fn everything(num_pieces: u32) -> Want {
        let words = num_pieces.div_ceil(64) as usize;
        let mut wanted = vec![u64::MAX; words];
        if !num_pieces.is_multiple_of(64)
            && let Some(last) = wanted.last_mut()
        {
            *last = (1u64 << (num_pieces % 64)) - 1;
        }
        Want {
            num_pieces,
            wanted,
            tiers: Vec::new(),
            sequential: false,
            all: true,
            piece_length: 0,
        }
    }

    /// The plan for `layout` with `prio` per data file (pads left out, in order; missing
    /// entries are normal), first/last piece priority and sequential download.
    pub fn plan(layout: &FileLayout, prio: &[u8], first_last: bool, sequential: bool) -> Want {
        let n = layout.num_pieces;
        let mut w = Want::everything(n);
        w.sequential = sequential;
        w.piece_length = layout.piece_length.max(1);
        let words = w.wanted.len();
        let mut maximal = vec![0u64; words];
        let mut high = vec![0u64; words];
        let mut skipped = Vec::new();
        let mut ranges = Vec::new();
        for (k, (_, f)) in layout.data_files().enumerate() {
            let p = prio.get(k).copied().unwrap_or(NORMAL);
            if f.length == 0 {
                continue;
            }
            let (first, last) = w.pieces_of(f.offset, f.length);
            if p == SKIP {
                skipped.push((first, last));
                continue;
            }
            ranges.push((first, last));
            let tier = match p {
                MAXIMAL => Some(&mut maximal),
                HIGH => Some(&mut high),
                _ => None,
            };
            if let Some(t) = tier {
                set_range(t, first, last);
            }
            if first_last {
                set_range(&mut maximal, first, first);
                set_range(&mut maximal, last, last);
            }
        }
        if !skipped.is_empty() {
            for &(first, last) in &skipped {
                clear_range(&mut w.wanted, first, last);
            }
            // A piece shared with a wanted file stays wanted.
            for &(first, last) in &ranges {
                set_range(&mut w.wanted, first, last);
            }
            w.all = false;
        }
        // High pieces that are also maximal are fetched with the maximal ones.
        for (h, m) in high.iter_mut().zip(&maximal) {
            *h &= !m;
        }
        w.tiers = [maximal, high]
            .into_iter()
            .filter(|t| t.iter().any(|&x| x != 0))
            .collect();
        w
    }

    /// The first and last piece of `length > 0` bytes at `offset`.
    fn pieces_of(&self, offset: u64, length: u64) -> (u32, u32) {
        let first = (offset / self.piece_length) as u32;
        let last = ((offset + length - 1) / self.piece_length) as u32;
        (
            first.min(self.num_pieces.saturating_sub(1)),
            last.min(self.num_pieces.saturating_sub(1)),
        )
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Whether every piece is wanted.
    pub fn is_everything(&self) -> bool {
        self.all
    }

    pub fn wants(&self, i: u32) -> bool {
        self.word(i as usize / 64) & (1u64 << (i % 64)) != 0
    }

    /// Wanted pieces `64 w ..` as one word (0 past the end).
    pub fn word(&self, w: usize) -> u64 {
        self.wanted.get(w).copied().unwrap_or(0)
    }

    /// The tiers fetched first, most urgent first (each a mask like [`Want::word`]'s).
    pub fn tiers(&self) -> &[Vec<u64>] {
        &self.tiers
    }

    /// The rank of piece `i` among the tiers (`tiers().len()` for a piece in none), for picks
    /// among a few pieces.
    pub fn rank(&self, i: u32) -> usize {
        let (w, b) = (i as usize / 64, i % 64);
        self.tiers
            .iter()
            .position(|t| t.get(w).is_some_and(|x| x & (1u64 << b) != 0))
            .unwrap_or(self.tiers.len())
    }

    /// Bytes of the wanted pieces, whole pieces as libtorrent's `total_wanted` counts them
    /// (`None` with every piece wanted: the torrent's size).
    pub fn size(&self, layout: &FileLayout) -> Option<u64> {
        (!self.all).then(|| self.left(layout, |_| false))
    }

    /// Wanted pieces not verified yet (read at every verified piece: without skipped files
    /// it is the bitfield's own count, no pass over its words).
    pub fn missing(&self, verified: &AtomicBitfield) -> u32 {
        if self.all {
            return self.num_pieces - verified.count().min(self.num_pieces);
        }
        (0..self.wanted.len())
            .map(|w| (self.wanted[w] & !verified.word(w)).count_ones())
            .sum()
    }

    /// Bytes of the wanted pieces not verified yet, whole pieces (qBittorrent's `amount_left`
    /// and a tracker's `left`: libtorrent's `total_wanted - total_wanted_done` counts a piece
    /// shared with a skipped file whole, qbittorrent-nox 4.5.2 shows it so).
    pub fn left(&self, layout: &FileLayout, verified: impl Fn(u32) -> bool) -> u64 {
        (0..layout.num_pieces)
            .filter(|&i| (self.all || self.wants(i)) && !verified(i))
            .map(|i| layout.piece_size(i))
            .sum()
    }
}

fn set_range(words: &mut [u64], first: u32, last: u32) {
    for i in first..=last {
        if let Some(w) = words.get_mut(i as usize / 64) {
            *w |= 1u64 << (i % 64);
        }
    }
}

fn clear_range(words: &mut [u64], first: u32, last: u32) {
    for i in first..=last {
        if let Some(w) = words.get_mut(i as usize / 64) {
            *w &= !(1u64 << (i % 64));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    /// Files of `sizes` bytes in order, pieces of `pl` bytes.
    pub(crate) fn layout(sizes: &[u64], pl: u64) -> FileLayout {
        let mut offset = 0;
        let files: Vec<FileEntry> = sizes
            .iter()
            .enumerate()
            .map(|(k, &len)| {
                let mut f = FileEntry::for_test(&format!("f{k}"), len, false);
                f.offset = offset;
                offset += len;
                f
            })
            .collect();
        FileLayout {
            files,
            piece_length: pl,
            total_length: offset,
            num_pieces: offset.div_ceil(pl) as u32,
        }
    }

    fn wanted(w: &Want) -> Vec<u32> {
        (0..w.num_pieces()).filter(|&i| w.wants(i)).collect()
    }

    #[test]
    fn everything_is_wanted_without_priorities() {
        let l = layout(&[100, 50], 16);
        let w = Want::plan(&l, &[], false, false);
        assert!(w.is_everything());
        assert_eq!(wanted(&w), (0..10).collect::<Vec<_>>());
        assert_eq!(w.word(0), (1 << 10) - 1, "no bits past the last piece");
        assert!(w.tiers().is_empty());
        let v = AtomicBitfield::new(10);
        v.set(3);
        assert_eq!(w.missing(&v), 9);
        assert_eq!(w.left(&l, |_| false), 150);
        assert_eq!(Want::everything(64).word(0), u64::MAX);
        assert_eq!(Want::everything(65).word(1), 1);
    }

    /// File 1 skipped: its exclusive pieces are not wanted, the ones it shares are, and what is
    /// left counts only the wanted files' bytes.
    #[test]
    fn a_skipped_file_drops_only_its_own_pieces() {
        // f0: 0..40 (pieces 0-2), f1: 40..100 (pieces 2-6), f2: 100..130 (pieces 6-8).
        let l = layout(&[40, 60, 30], 16);
        let w = Want::plan(&l, &[1, 0, 1], false, false);
        assert!(!w.is_everything());
        assert_eq!(wanted(&w), [0, 1, 2, 6, 7, 8]);
        // whole wanted pieces: 0-2 and 6-7 of 16 bytes, 8 of 2
        assert_eq!(w.left(&l, |_| false), 82);
        assert_eq!(
            (w.size(&l), Want::plan(&l, &[], false, false).size(&l)),
            (Some(82), None)
        );
        assert_eq!(w.left(&l, |i| i == 2), 66);
        let v = AtomicBitfield::new(l.num_pieces);
        assert_eq!(w.missing(&v), 6);
        for i in [0, 1, 2, 6, 7] {
            v.set(i);
        }
        assert_eq!(w.missing(&v), 1);
        v.set(8);
        assert_eq!(w.missing(&v), 0, "complete without pieces 3-5");
        assert_eq!(w.left(&l, |i| v.get(i)), 0);
        // Every file skipped: nothing wanted.
        let none = Want::plan(&l, &[0, 0, 0], false, false);
        assert!(wanted(&none).is_empty());
        assert_eq!(none.left(&l, |_| false), 0);
    }

    #[test]
    fn tiers_take_maximal_and_first_last_before_high() {
        // f0: pieces 0-3, f1: pieces 4-9, f2: 10-12.
        let l = layout(&[64, 96, 48], 16);
        let w = Want::plan(&l, &[6, 1, 7], false, false);
        assert_eq!(w.tiers().len(), 2);
        assert_eq!(w.tiers()[0][0], 0b111 << 10);
        assert_eq!(w.tiers()[1][0], 0b1111);
        assert_eq!((w.rank(11), w.rank(2), w.rank(5)), (0, 1, 2));
        let fl = Want::plan(&l, &[1, 0, 1], true, true);
        assert!(fl.sequential);
        assert_eq!(fl.tiers().len(), 1);
        let firsts: Vec<u32> = (0..13).filter(|&i| fl.rank(i) == 0).collect();
        assert_eq!(
            firsts,
            [0, 3, 10, 12],
            "a skipped file's ends are not urgent"
        );
        assert!(!fl.wants(5));
        assert!(valid_priority(6) && !valid_priority(2) && !valid_priority(8));
    }
}
