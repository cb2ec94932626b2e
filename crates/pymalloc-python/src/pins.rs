//! Who pins the pool pages, by source line: the blocks in use in sparse
//! pools (`pymalloc::config::pymalloc_pinning_blocks`), grouped by the line
//! tracemalloc saw allocate them, with the page bytes each group holds.
//! Without tracemalloc (or for blocks it did not trace), the line is
//! unknown.

use std::collections::HashMap;
use std::fmt::Write as _;

use pymalloc::geometry::POOL_SIZE;
use pymalloc::PinningBlock;
use pyo3::prelude::*;

use crate::embed::allocation_site;

/// Where tracemalloc saw a block allocated: file and line, or None when it
/// did not trace the block.
pub type Site = Option<(String, i64)>;

/// One source line's blocks in sparse pools, and the bytes they pin.
pub struct LinePins {
    pub site: Site,
    pub blocks: usize,
    pub pinned_bytes: usize,
}

/// The pinning blocks of the heap in use, and where each was allocated.
pub struct Pins {
    blocks: Vec<PinningBlock>,
    sites: Vec<Site>,
}

impl Pins {
    /// Walks the heap in use and asks tracemalloc about each block (the GIL
    /// is held).
    pub fn take(py: Python<'_>) -> Pins {
        // SAFETY: the GIL is held, which serialises MEM and OBJ in the GIL
        // mode: the heap is ours to walk.
        let blocks = unsafe { pymalloc::config::pymalloc_pinning_blocks() };
        let sites = blocks.iter().map(|b| allocation_site(py, b.addr)).collect();
        Pins { blocks, sites }
    }

    fn each(&self) -> impl Iterator<Item = (&PinningBlock, &Site)> {
        self.blocks.iter().zip(&self.sites)
    }

    /// The lines that pin the most bytes, most first (ties: more blocks
    /// first, then by file and line), at most `limit`.
    pub fn by_line(&self, limit: usize) -> Vec<LinePins> {
        let mut m: HashMap<&Site, (usize, usize)> = HashMap::new();
        for (b, s) in self.each() {
            let e = m.entry(s).or_default();
            e.0 += 1;
            e.1 += b.pinned_bytes;
        }
        let mut v: Vec<LinePins> = m
            .into_iter()
            .map(|(s, (blocks, pinned_bytes))| LinePins { site: s.clone(), blocks, pinned_bytes })
            .collect();
        v.sort_by(|a, b| b.pinned_bytes.cmp(&a.pinned_bytes).then(b.blocks.cmp(&a.blocks)).then(a.site.cmp(&b.site)));
        v.truncate(limit);
        v
    }

    /// Per sparse pool (by address), the line pinning most of it, for the
    /// arena picture.
    pub fn pool_labels(&self) -> HashMap<usize, String> {
        let mut per_pool: HashMap<usize, HashMap<&Site, usize>> = HashMap::new();
        for (b, s) in self.each() {
            *per_pool.entry(b.addr & !(POOL_SIZE - 1)).or_default().entry(s).or_default() += b.pinned_bytes;
        }
        per_pool
            .into_iter()
            .map(|(pool, lines)| {
                let total: usize = lines.values().sum();
                let (site, bytes) =
                    lines.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).unwrap_or((&None, 0));
                (pool, format!("sparse pool pinning {total} bytes; most by {} ({bytes} bytes)", site_text(site)))
            })
            .collect()
    }
}

/// "file:line", or "<not traced>".
pub fn site_text(site: &Site) -> String {
    site.as_ref().map_or_else(|| "<not traced>".to_owned(), |(f, l)| format!("{f}:{l}"))
}

/// The text section of the pinning report.
pub fn text(lines: &[LinePins], tracing: bool) -> String {
    let mut out = String::new();
    if !tracing {
        out.push_str("(start tracemalloc to see which source lines allocated the blocks that pin sparse pools)\n");
        return out;
    }
    let _ = writeln!(out, "Source lines whose blocks pin the most pages of sparse pools (tracemalloc):");
    for l in lines {
        let _ = writeln!(
            out,
            "{:>10.1} KiB {:>8} blocks  {}",
            l.pinned_bytes as f64 / 1024.0,
            l.blocks,
            site_text(&l.site)
        );
    }
    out
}
