//! Statistics: a structured snapshot of a heap, and its rendering in the
//! layout of CPython's `sys._debugmallocstats()` (3.10 and later by default;
//! 3.9's, which has no arena map, on request: [`set_table_layout`]).
//!
//! ```
//! let mut heap = pymalloc::Heap::new();
//! let p = heap.malloc(30);
//! let s = heap.stats();
//! assert_eq!(s.classes[pymalloc::geometry::size_class(30).unwrap()].blocks_in_use, 1);
//! assert_eq!(s.arenas_current, 1);
//! let text = s.to_string();
//! assert!(text.starts_with("Small block threshold = 512, in "));
//! assert!(text.contains("# arenas allocated current         =                    1\n"));
//! unsafe { heap.free(p) };
//! ```

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

use crate::geometry::*;
use crate::radix::MapUsage;

/// One size class in a [`Stats`] snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size of the class in bytes.
    pub size: usize,
    /// Pools currently holding blocks of this class (used or full).
    pub pools: usize,
    /// Blocks handed out.
    pub blocks_in_use: usize,
    /// Blocks free in those pools (on free lists or never used).
    pub avail_blocks: usize,
}

/// A snapshot of a heap (the numbers behind `sys._debugmallocstats()`).
///
/// The byte counts partition the arenas: `allocated_bytes +
/// available_bytes + unused_pool_bytes + pool_header_bytes +
/// quantization_bytes + arena_alignment_bytes == arena_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Per size class, indexed by class.
    pub classes: [ClassStats; NB_SMALL_SIZE_CLASSES],
    /// Arenas ever allocated.
    pub arenas_allocated_total: usize,
    /// Arenas given back to the arena allocator.
    pub arenas_reclaimed: usize,
    /// Most arenas live at once.
    pub arenas_highwater: usize,
    /// Arenas live now.
    pub arenas_current: usize,
    /// `arenas_current * ARENA_SIZE`.
    pub arena_bytes: usize,
    /// Bytes in blocks handed out (whole class sizes).
    pub allocated_bytes: usize,
    /// Bytes in free blocks of pools in use.
    pub available_bytes: usize,
    /// Pools free or not carved yet, in live arenas.
    pub unused_pools: usize,
    /// Of the unused pools, those whose pages were given back to the OS
    /// (not part of CPython's table).
    pub decommitted_pools: usize,
    /// Pages of pools in use given back to the OS: pages whose blocks are
    /// all free (not part of CPython's table).
    pub pages_out: usize,
    /// Bytes of the header table that hold the headers of the live arenas'
    /// pools: those of the arena region keep them there, not in the pool
    /// (`pool_table.rs`; not part of CPython's table).
    pub header_table_bytes: usize,
    /// `unused_pools * POOL_SIZE`.
    pub unused_pool_bytes: usize,
    /// Bytes of headers of pools in use.
    pub pool_header_bytes: usize,
    /// Bytes at the end of pools in use too small for a block.
    pub quantization_bytes: usize,
    /// Bytes lost because an arena did not start on a pool boundary.
    pub arena_alignment_bytes: usize,
    /// Live blocks the heap handed to the raw allocator (CPython's
    /// `raw_allocated_blocks`).
    pub raw_allocated_blocks: isize,
    /// The arena map's nodes.
    pub map: MapUsage,
}

impl Stats {
    /// A snapshot of an empty heap: every class empty, no arenas. Useful to
    /// render numbers gathered elsewhere in the same layout.
    pub fn new() -> Stats {
        let mut classes = [ClassStats::default(); NB_SMALL_SIZE_CLASSES];
        for (i, c) in classes.iter_mut().enumerate() {
            c.size = class_size(i);
        }
        Stats {
            classes,
            arenas_allocated_total: 0,
            arenas_reclaimed: 0,
            arenas_highwater: 0,
            arenas_current: 0,
            arena_bytes: 0,
            allocated_bytes: 0,
            available_bytes: 0,
            unused_pools: 0,
            decommitted_pools: 0,
            pages_out: 0,
            header_table_bytes: 0,
            unused_pool_bytes: 0,
            pool_header_bytes: 0,
            quantization_bytes: 0,
            arena_alignment_bytes: 0,
            raw_allocated_blocks: 0,
            map: MapUsage::default(),
        }
    }

    /// Fills in the byte totals from the per-class and per-arena counts.
    pub(crate) fn finish(&mut self, map: MapUsage) {
        self.map = map;
        self.arena_bytes = self.arenas_current * ARENA_SIZE;
        self.unused_pool_bytes = self.unused_pools * POOL_SIZE;
        for c in &self.classes {
            self.allocated_bytes += c.blocks_in_use * c.size;
            self.available_bytes += c.avail_blocks * c.size;
            self.pool_header_bytes += c.pools * POOL_OVERHEAD;
            self.quantization_bytes += c.pools * ((POOL_SIZE - POOL_OVERHEAD) % c.size);
        }
    }

    /// Adds `o` to `self`: the totals of two heaps. (The high-water marks
    /// add up too, which may overstate the true combined high-water mark.)
    pub fn add(&mut self, o: &Stats) {
        for (a, b) in self.classes.iter_mut().zip(o.classes.iter()) {
            a.pools += b.pools;
            a.blocks_in_use += b.blocks_in_use;
            a.avail_blocks += b.avail_blocks;
        }
        self.arenas_allocated_total += o.arenas_allocated_total;
        self.arenas_reclaimed += o.arenas_reclaimed;
        self.arenas_highwater += o.arenas_highwater;
        self.arenas_current += o.arenas_current;
        self.arena_bytes += o.arena_bytes;
        self.allocated_bytes += o.allocated_bytes;
        self.available_bytes += o.available_bytes;
        self.unused_pools += o.unused_pools;
        self.decommitted_pools += o.decommitted_pools;
        self.pages_out += o.pages_out;
        self.header_table_bytes += o.header_table_bytes;
        self.unused_pool_bytes += o.unused_pool_bytes;
        self.pool_header_bytes += o.pool_header_bytes;
        self.quantization_bytes += o.quantization_bytes;
        self.arena_alignment_bytes += o.arena_alignment_bytes;
        self.raw_allocated_blocks += o.raw_allocated_blocks;
    }

    /// Blocks handed out from pools, all classes.
    pub fn blocks_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.blocks_in_use).sum()
    }

    /// Pool blocks plus raw blocks: CPython's `sys.getallocatedblocks()`.
    pub fn allocated_blocks(&self) -> isize {
        self.blocks_in_use() as isize + self.raw_allocated_blocks
    }

    /// Sum of the byte categories; equals [`arena_bytes`](Stats::arena_bytes).
    pub fn accounted_bytes(&self) -> usize {
        self.allocated_bytes
            + self.available_bytes
            + self.unused_pool_bytes
            + self.pool_header_bytes
            + self.quantization_bytes
            + self.arena_alignment_bytes
    }

    /// Writes the table of `sys._debugmallocstats()` in the process's
    /// [`table_layout`].
    pub fn render(&self, out: &mut impl Write) -> fmt::Result {
        self.render_as(out, table_layout())
    }

    /// Writes the table of `sys._debugmallocstats()` as `layout`'s CPython
    /// writes it (`_PyObject_DebugMallocStats`): the same lines, column
    /// widths and thousands separators.
    pub fn render_as(&self, out: &mut impl Write, layout: TableLayout) -> fmt::Result {
        writeln!(
            out,
            "Small block threshold = {}, in {} size classes.",
            SMALL_REQUEST_THRESHOLD, NB_SMALL_SIZE_CLASSES
        )?;
        out.write_str("\nclass   size   num pools   blocks in use  avail blocks\n")?;
        out.write_str("-----   ----   ---------   -------------  ------------\n")?;
        for (i, c) in self.classes.iter().enumerate() {
            if c.pools == 0 {
                continue;
            }
            writeln!(out, "{:5} {:6} {:11} {:15} {:13}", i, c.size, c.pools, c.blocks_in_use, c.avail_blocks)?;
        }
        out.write_char('\n')?;
        printone(out, "# arenas allocated total", self.arenas_allocated_total)?;
        printone(out, "# arenas reclaimed", self.arenas_reclaimed)?;
        printone(out, "# arenas highwater mark", self.arenas_highwater)?;
        printone(out, "# arenas allocated current", self.arenas_current)?;
        let mut label = Label::new();
        write!(label, "{} arenas * {} bytes/arena", self.arenas_current, ARENA_SIZE)?;
        printone(out, label.as_str(), self.arena_bytes)?;
        out.write_char('\n')?;
        printone(out, "# bytes in allocated blocks", self.allocated_bytes)?;
        printone(out, "# bytes in available blocks", self.available_bytes)?;
        let mut label = Label::new();
        write!(label, "{} unused pools * {} bytes", self.unused_pools, POOL_SIZE)?;
        printone(out, label.as_str(), self.unused_pool_bytes)?;
        printone(out, "# bytes lost to pool headers", self.pool_header_bytes)?;
        printone(out, "# bytes lost to quantization", self.quantization_bytes)?;
        printone(out, "# bytes lost to arena alignment", self.arena_alignment_bytes)?;
        printone(out, "Total", self.accounted_bytes())?;
        if layout == TableLayout::Cpython39 {
            return Ok(());
        }
        out.write_str("\narena map counts\n")?;
        printone(out, "# arena map mid nodes", self.map.mid_nodes)?;
        printone(out, "# arena map bot nodes", self.map.bot_nodes)?;
        out.write_char('\n')?;
        let mid = self.map.mid_nodes * self.map.mid_node_bytes;
        let bot = self.map.bot_nodes * self.map.bot_node_bytes;
        printone(out, "# bytes lost to arena map root", self.map.root_bytes)?;
        printone(out, "# bytes lost to arena map mid", mid)?;
        printone(out, "# bytes lost to arena map bot", bot)?;
        printone(out, "Total", self.map.root_bytes + mid + bot)
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f)
    }
}

/// CPython's `printone`: the label padded to 35 columns, `=`, then the value
/// with thousands separators right-aligned in 21 columns.
pub fn printone(out: &mut impl Write, label: &str, value: usize) -> fmt::Result {
    out.write_str(label)?;
    for _ in label.len()..35 {
        out.write_char(' ')?;
    }
    out.write_char('=')?;
    // At most 20 digits and 6 commas: 26 bytes.
    let mut digits = [b' '; 26];
    let mut i = digits.len();
    let mut v = value;
    let mut group = 0;
    loop {
        if group == 3 {
            i -= 1;
            digits[i] = b',';
            group = 0;
        }
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        group += 1;
        if v == 0 {
            break;
        }
    }
    let text = &digits[i..];
    for _ in text.len()..21 {
        out.write_char(' ')?;
    }
    // SAFETY: only ASCII digits and commas were written.
    out.write_str(unsafe { core::str::from_utf8_unchecked(text) })?;
    out.write_char('\n')
}

/// One line of CPython's `_PyDebugAllocatorStats`, as printed for free lists:
/// `"{n} {name}s * {size} bytes each"` right-aligned in 48 columns, then the
/// product in [`printone`]'s layout.
///
/// ```
/// let mut s = String::new();
/// pymalloc::stats::allocator_stats_line(&mut s, "free PyDictObject", 8, 48).unwrap();
/// assert_eq!(s, "            8 free PyDictObjects * 48 bytes each =                  384\n");
/// ```
pub fn allocator_stats_line(
    out: &mut impl Write,
    block_name: &str,
    num_blocks: usize,
    block_size: usize,
) -> fmt::Result {
    let mut inner = Label::new();
    write!(inner, "{} {}s * {} bytes each", num_blocks, block_name, block_size)?;
    let mut label = Label::new();
    write!(label, "{:>48} ", inner.as_str())?;
    printone(out, label.as_str(), num_blocks * block_size)
}

/// A small fixed buffer for labels (CPython's `char buf[128]`); longer text is
/// cut off.
struct Label {
    buf: [u8; 128],
    len: usize,
}

impl Label {
    fn new() -> Label {
        Label { buf: [0; 128], len: 0 }
    }
    fn as_str(&self) -> &str {
        // SAFETY: only whole `str`s are copied in, cut at char boundaries.
        unsafe { core::str::from_utf8_unchecked(&self.buf[..self.len]) }
    }
}

impl Write for Label {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A stack buffer for rendering without allocating (the heap may be the
/// global allocator and locked when the statistics are printed).
struct StackText {
    buf: [u8; 16 * 1024],
    len: usize,
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Which CPython's `_PyObject_DebugMallocStats` the table follows. The lines
/// that differ between versions are the arena-map block, which 3.9 (no radix
/// tree) lacks; column widths follow from the numbers in every version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum TableLayout {
    /// CPython 3.9: the table ends with the arena byte total.
    Cpython39,
    /// CPython 3.10 and later: the arena-map counts follow.
    #[default]
    Cpython310,
}

/// The process's table layout (all renderings that take none, including
/// the statistics printed at new arenas and at exit).
static LAYOUT: AtomicU8 = AtomicU8::new(TableLayout::Cpython310 as u8);

/// Sets the layout of every table rendered without one (an embedder sets
/// its CPython's once, at start-up).
pub fn set_table_layout(layout: TableLayout) {
    LAYOUT.store(layout as u8, Ordering::Relaxed);
}

/// The layout set by [`set_table_layout`] (3.10's unless set).
pub fn table_layout() -> TableLayout {
    if LAYOUT.load(Ordering::Relaxed) == TableLayout::Cpython39 as u8 {
        TableLayout::Cpython39
    } else {
        TableLayout::Cpython310
    }
}

/// Renders `stats` to file descriptor 2 without allocating memory.
pub fn print_to_stderr(stats: &Stats) {
    write_to_fd(stats, 2);
}

/// Writes the statistics table to the open file descriptor `fd`, without
/// allocating (as [`print_to_stderr`]).
pub fn write_to_fd(stats: &Stats, fd: i32) {
    write_fmt_to_fd(fd, format_args!("{}", Rendered(stats)));
}

struct Rendered<'a>(&'a Stats);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render(f)
    }
}

/// Writes formatted text (up to 16 KiB) to the open file descriptor `fd`
/// without allocating.
pub fn write_fmt_to_fd(fd: i32, args: fmt::Arguments<'_>) {
    let mut t = StackText { buf: [0; 16 * 1024], len: 0 };
    let _ = t.write_fmt(args);
    let mut done = 0;
    while done < t.len {
        // SAFETY: writing initialised bytes of our own buffer to fd.
        let n = unsafe { libc::write(fd, t.buf[done..t.len].as_ptr().cast(), t.len - done) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
}
