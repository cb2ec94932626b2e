//! Configurations by their `PYTHONMALLOC` names.
//!
//! CPython's five names select which allocator each domain gets:
//!
//! | name | RAW | MEM | OBJ |
//! |---|---|---|---|
//! | `default`, `pymalloc` | malloc | pymalloc | pymalloc |
//! | `malloc` | malloc | malloc | malloc |
//! | `debug`, `pymalloc_debug` | the above for `pymalloc`, with debug hooks |||
//! | `malloc_debug` | the above for `malloc`, with debug hooks |||
//!
//! and two of ours, serving every size:
//!
//! | name | RAW | MEM | OBJ |
//! |---|---|---|---|
//! | `pymalloc_all` | pymalloc, every size ([`crate::every_size`]) | pymalloc | pymalloc |
//! | `pymalloc_all_debug` | the above, with debug hooks |||
//!
//! In `pymalloc_all`, RAW serves every size from the thread heaps (pools up
//! to 512 bytes, spans above). In the threaded mode MEM and OBJ take the
//! same front as RAW (`MemAllocatorEx::pymalloc_every_size_front`: one
//! size-to-class table for every size, the RAW domain only for what the
//! heaps cannot serve); in the locked and GIL modes, whose pools are not
//! the thread heaps', they send what pools do not serve to RAW as always.
//!
//! ```
//! use pymalloc::config::AllocatorName;
//! assert_eq!("pymalloc".parse::<AllocatorName>(), Ok(AllocatorName::Pymalloc));
//! assert_eq!("".parse::<AllocatorName>(), Ok(AllocatorName::Default));
//! let err = "jemalloc".parse::<AllocatorName>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "unknown PYTHONMALLOC allocator 'jemalloc'; valid names are: \
//!      default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug, pymalloc_all, pymalloc_all_debug"
//! );
//! ```

use core::fmt;
use core::str::FromStr;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::domain::{Domain, MemAllocatorEx};
use crate::geometry::NB_SMALL_SIZE_CLASSES;
use crate::gil::gil_heap;
use crate::heap::{ArenaInfo, ClassPinning, InvariantError, PinningBlock, PurgePolicy};
use crate::huge::Keep;
use crate::locked::global_heap;
use crate::stats::Stats;
use crate::thread;

/// How pymalloc serves MEM and OBJ in the `pymalloc` configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PymallocMode {
    /// One heap per thread, no global lock ([`crate::thread`]); the default.
    Threaded,
    /// One heap behind a mutex ([`crate::global_heap`]).
    Locked,
    /// One heap with no lock: callers serialise (CPython's GIL)
    /// ([`crate::gil_heap`]).
    Gil,
}

/// What a mode offers: its domain allocator and the views of its heaps.
/// `purge` and `validate` are owner operations: in the `Gil` mode the caller
/// holds the lock that serialises MEM and OBJ.
struct ModeOps {
    name: &'static str,
    allocator: fn() -> MemAllocatorEx,
    /// MEM and OBJ's allocator in `pymalloc_all`, if the mode serves every
    /// size itself there (the threaded mode, whose heaps are RAW's); else
    /// `allocator`, which sends what pools do not serve to RAW.
    every_size: Option<fn() -> MemAllocatorEx>,
    stats: fn() -> Stats,
    arenas: fn() -> Vec<ArenaInfo>,
    purge: unsafe fn() -> usize,
    validate: unsafe fn() -> Result<(), InvariantError>,
    pinning: unsafe fn() -> [ClassPinning; NB_SMALL_SIZE_CLASSES],
    pinning_blocks: unsafe fn() -> Vec<PinningBlock>,
    /// Empty pools and free arenas back to the OS (any thread).
    release_empty: fn() -> usize,
}

static THREADED: ModeOps = ModeOps {
    name: "threaded",
    allocator: MemAllocatorEx::pymalloc_threaded,
    every_size: Some(MemAllocatorEx::pymalloc_every_size_front),
    stats: thread::stats,
    arenas: thread::arenas,
    purge: thread::purge,
    validate: thread::validate_current,
    pinning: thread::current_pinning,
    pinning_blocks: thread::current_pinning_blocks,
    release_empty: thread::release_empty,
};

static LOCKED: ModeOps = ModeOps {
    name: "locked",
    allocator: || MemAllocatorEx::pymalloc(global_heap()),
    every_size: None,
    stats: || global_heap().stats(),
    arenas: || global_heap().arenas(),
    purge: || global_heap().purge(),
    validate: || global_heap().lock().validate(),
    pinning: || global_heap().lock().pinning(),
    pinning_blocks: || global_heap().pinning_blocks(),
    release_empty: || global_heap().lock().release_empty(),
};

static GIL: ModeOps = ModeOps {
    name: "gil",
    // SAFETY: selecting this mode required the caller to serialise calls
    // (set_pymalloc_mode's contract).
    allocator: || unsafe { MemAllocatorEx::pymalloc_gil(gil_heap()) },
    every_size: None,
    stats: || gil_heap().heap().stats(),
    arenas: || gil_heap().heap().arenas(),
    // The caller holds the lock that serialises MEM and OBJ (ModeOps'
    // contract), so it is the heap's owner for these two.
    purge: || gil_heap().heap().purge_shared(),
    validate: || gil_heap().heap().validate(),
    pinning: || gil_heap().heap().pinning(),
    pinning_blocks: || gil_heap().heap().pinning_blocks(),
    release_empty: || gil_heap().heap().release_empty(),
};

impl PymallocMode {
    /// Every mode.
    pub const ALL: [PymallocMode; 3] = [PymallocMode::Threaded, PymallocMode::Locked, PymallocMode::Gil];

    /// The one dispatch on the mode: everything below goes through it.
    fn ops(self) -> &'static ModeOps {
        match self {
            PymallocMode::Threaded => &THREADED,
            PymallocMode::Locked => &LOCKED,
            PymallocMode::Gil => &GIL,
        }
    }

    /// The mode's name (`PYMALLOC_MODE`'s spelling): `threaded`, `locked`
    /// or `gil`.
    pub fn as_str(self) -> &'static str {
        self.ops().name
    }

    /// The mode named `name`; an unknown name is an error listing the valid
    /// ones (the GIL mode first: the launcher's default).
    ///
    /// ```
    /// use pymalloc::config::PymallocMode;
    /// assert_eq!(PymallocMode::from_name("gil"), Ok(PymallocMode::Gil));
    /// assert_eq!(PymallocMode::from_name("x").unwrap_err(), "unknown PYMALLOC_MODE 'x'; valid: gil, threaded, locked");
    /// ```
    pub fn from_name(name: &str) -> Result<PymallocMode, String> {
        Self::ALL.into_iter().find(|m| m.as_str() == name).ok_or_else(|| {
            let valid = [PymallocMode::Gil, PymallocMode::Threaded, PymallocMode::Locked].map(PymallocMode::as_str);
            format!("unknown PYMALLOC_MODE '{name}'; valid: {}", valid.join(", "))
        })
    }
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// The mode [`setup`] installs (default [`PymallocMode::Threaded`]).
pub fn pymalloc_mode() -> PymallocMode {
    PymallocMode::ALL[MODE.load(Ordering::Relaxed) as usize]
}

/// Chooses the mode [`setup`] installs from now on.
///
/// # Safety
/// With [`PymallocMode::Gil`], every later call into MEM and OBJ must be
/// serialised by the caller (see [`MemAllocatorEx::pymalloc_gil`]).
pub unsafe fn set_pymalloc_mode(m: PymallocMode) {
    MODE.store(PymallocMode::ALL.iter().position(|&x| x == m).unwrap_or(0) as u8, Ordering::Relaxed);
}

/// The MEM/OBJ allocator of a pymalloc mode.
pub fn pymalloc_allocator(m: PymallocMode) -> MemAllocatorEx {
    (m.ops().allocator)()
}

/// MEM and OBJ's allocator of a pymalloc mode in `pymalloc_all`.
pub fn every_size_allocator(m: PymallocMode) -> MemAllocatorEx {
    m.ops().every_size.map_or_else(|| pymalloc_allocator(m), |a| a())
}

/// The pymalloc mode MEM currently uses (under the debug hooks, if any),
/// if it uses pymalloc.
pub fn active_pymalloc_mode() -> Option<PymallocMode> {
    let mem = current_mem();
    PymallocMode::ALL.into_iter().find(|&m| mem.is(&pymalloc_allocator(m)) || mem.is(&every_size_allocator(m)))
}

/// Statistics of the heaps pymalloc serves MEM and OBJ from (all thread
/// heaps added up in the threaded mode; empty if pymalloc is not in use).
///
/// `raw_allocated_blocks` counts the blocks pymalloc handed to RAW. Where
/// MEM and OBJ take the every-size front (`pymalloc_all`, threaded), their
/// blocks above 512 bytes are the spans' and never pass through RAW: the
/// spans' blocks in use are counted there as well, RAW's own with them
/// (CPython never counts `PyMem_RawMalloc`'s blocks; in this configuration
/// `blocks_in_use` counts RAW's pool blocks too, as the heaps are shared).
/// What the front still hands to RAW is counted as before
/// (`every_size::CountedRaw`).
pub fn pymalloc_stats() -> Stats {
    let Some(m) = active_pymalloc_mode() else { return Stats::new() };
    let mut s = (m.ops().stats)();
    if m.ops().every_size.is_some() && current_mem().is(&every_size_allocator(m)) {
        let spans = crate::every_size::stats();
        s.raw_allocated_blocks += (spans.medium_blocks + spans.large_blocks + spans.huge_blocks) as isize;
    }
    s
}

/// MEM's allocator, under the debug hooks if any.
fn current_mem() -> MemAllocatorEx {
    crate::debug::hooked_allocators().map_or_else(|| Domain::Mem.allocator(), |a| a[1])
}

/// Pictures of the arenas of the heaps pymalloc serves MEM and OBJ from.
pub fn pymalloc_arenas() -> Vec<ArenaInfo> {
    active_pymalloc_mode().map_or_else(Vec::new, |m| (m.ops().arenas)())
}

/// Gives back to the OS what the pymalloc heaps of MEM and OBJ hold no block
/// in (free pages of pools in use, empty pools, free arenas), then trims the
/// C library's heap, where requests above 512 bytes live
/// ([`crate::raw::trim`]), and gives back the free memory of the blocks
/// above 512 bytes ([`crate::every_size::release_free`]: free units of span
/// segments, slots freed huge blocks kept). Returns the bytes pymalloc gave
/// back.
///
/// # Safety
/// In the `Gil` mode, the caller must hold the lock that serialises MEM and
/// OBJ.
pub unsafe fn pymalloc_purge() -> usize {
    // SAFETY: the caller serialises in the Gil mode (our contract is the
    // mode's).
    let bytes = active_pymalloc_mode().map_or(0, |m| unsafe { (m.ops().purge)() });
    crate::raw::trim();
    bytes + crate::every_size::release_free()
}

/// Sets the purge policy of every pymalloc heap of the process: the GIL
/// heap, the locked heap, and every thread heap, those made later included.
///
/// ```
/// use pymalloc::{config, PurgePolicy};
/// config::set_purge_policy(PurgePolicy::Decay { ms: 250 });
/// assert_eq!(pymalloc::gil_heap().heap().purge_policy(), PurgePolicy::Decay { ms: 250 });
/// assert_eq!(pymalloc::global_heap().lock().purge_policy(), PurgePolicy::Decay { ms: 250 });
/// ```
pub fn set_purge_policy(p: PurgePolicy) {
    gil_heap().set_purge_policy(p);
    crate::locked::set_global_purge_policy(p);
    thread::set_purge_policy(p);
    crate::huge::set_keep(match p {
        PurgePolicy::Decay { ms } => Keep::Decay(ms),
        PurgePolicy::Threshold { .. } => Keep::Bounded,
        PurgePolicy::Never | PurgePolicy::Immediate => Keep::Nothing,
    });
}

/// Sets the purge policy named `name` (see [`PurgePolicy::parse`]) in every
/// heap, and starts the background decay thread if it is a decay policy.
/// An unknown name changes nothing and is an error listing the valid ones.
pub fn set_purge_policy_by_name(name: &str) -> Result<PurgePolicy, String> {
    let p = PurgePolicy::parse(name)?;
    set_purge_policy(p);
    if matches!(p, PurgePolicy::Decay { .. }) {
        start_background_decay();
    }
    Ok(p)
}

/// Sweeps every heap of the process as the decay policy does, if a sweep is
/// due (see [`crate::Heap::decay`]); returns the bytes given back.
pub fn pymalloc_decay() -> usize {
    crate::background::decay_now()
}

/// Starts the thread that gives back memory the decay policy has let go
/// cold while the process makes no calls (see [`crate::background`]).
/// Returns false if no thread could be made. Call it again in the child
/// after `fork`.
pub fn start_background_decay() -> bool {
    crate::background::start()
}

/// Free memory worth a purge after a full collection: at least this many
/// bytes, and at least `1 / RELEASE_FRACTION` of what the heap holds.
const RELEASE_MIN_BYTES: usize = 4 << 20;
const RELEASE_FRACTION: usize = 4;

/// After a full collection (CPython's generation 2): gives memory back as
/// [`pymalloc_purge`] does if enough lies free to be worth it: free blocks and
/// empty pools in pymalloc's arenas, or free bytes in the C library's heap,
/// at least 4 MiB and a quarter of the heap they lie in. Otherwise only
/// empty pools and wholly free arenas go back ([`crate::Heap::release_empty`]),
/// with the free units of span segments and the slots freed huge blocks
/// kept ([`crate::every_size::release_free`]), without waiting for the decay: a full collection is where a program has
/// just dropped what it no longer needs, and those cost nothing to give
/// back, while the free pages of pools in use are left alone, so that a
/// program that frees and allocates the same memory in a loop with
/// collections in between (small heaps) keeps them. Returns the bytes
/// pymalloc gave back.
///
/// # Safety
/// As for [`pymalloc_purge`].
pub unsafe fn pymalloc_release_after_collection() -> usize {
    let worth = |free: usize, held: usize| free >= RELEASE_MIN_BYTES && free * RELEASE_FRACTION >= held;
    let s = pymalloc_stats();
    let empty = (s.unused_pools - s.decommitted_pools) * crate::geometry::POOL_SIZE;
    let pools = worth(s.available_bytes + empty, s.arena_bytes);
    let c_heap = match (crate::raw::free_in_heap(), crate::raw::in_use()) {
        (Some(free), Some(used)) => worth(free, free + used),
        _ => false,
    };
    if pools || c_heap {
        // SAFETY: the caller serialises in the Gil mode (our contract is
        // pymalloc_purge's).
        unsafe { pymalloc_purge() }
    } else {
        let units = crate::every_size::release_free();
        units + active_pymalloc_mode().map_or(0, |m| (m.ops().release_empty)())
    }
}

/// Per size class, what pins the pages of pymalloc's pools for MEM and OBJ
/// ([`crate::Heap::pinning`]); in the threaded mode, the calling thread's
/// heap only. All zero when pymalloc is not in use.
///
/// # Safety
/// As for [`pymalloc_purge`].
pub unsafe fn pymalloc_pinning() -> [ClassPinning; NB_SMALL_SIZE_CLASSES] {
    // SAFETY: as for pymalloc_purge.
    active_pymalloc_mode().map_or([ClassPinning::default(); NB_SMALL_SIZE_CLASSES], |m| unsafe { (m.ops().pinning)() })
}

/// The blocks in use in pymalloc's sparse pools for MEM and OBJ, each with
/// the bytes of live pages it holds ([`crate::Heap::visit_pinning_blocks`]);
/// in the threaded mode, the calling thread's heap only. Empty when
/// pymalloc is not in use.
///
/// # Safety
/// As for [`pymalloc_purge`].
pub unsafe fn pymalloc_pinning_blocks() -> Vec<PinningBlock> {
    // SAFETY: as for pymalloc_purge.
    active_pymalloc_mode().map_or_else(Vec::new, |m| unsafe { (m.ops().pinning_blocks)() })
}

/// Bytes of the pages of pymalloc's pools (for MEM and OBJ) that hold a
/// live block: the part of the floor below which no allocator that never
/// moves blocks can go ([`crate::Heap::live_page_bytes`]); then the bytes
/// held for pool headers: the first pages, holding no live block, of pools
/// that keep their header there ([`crate::Heap::header_page_bytes`]), and
/// the header table's entries for the arenas of the arena region
/// ([`Stats::header_table_bytes`]). One walk of the pools. In the threaded
/// mode, the calling thread's heap only (the table's bytes: every heap's).
///
/// # Safety
/// As for [`pymalloc_purge`].
pub unsafe fn pymalloc_page_bytes() -> (usize, usize) {
    // SAFETY: as for pymalloc_purge (our contract is pymalloc_pinning's).
    let pinning = unsafe { pymalloc_pinning() };
    let page = crate::heap::page_bytes();
    let live = pinning.iter().map(|p| p.live_pages).sum::<usize>();
    let headers = pinning.iter().map(|p| p.header_pages).sum::<usize>();
    (live * page, headers * page + pymalloc_stats().header_table_bytes)
}

/// Checks the invariants of the heap pymalloc serves MEM and OBJ from (the
/// calling thread's, in the threaded mode).
///
/// # Safety
/// In the `Gil` mode, the caller must hold the lock that serialises MEM and
/// OBJ.
pub unsafe fn pymalloc_validate() -> Result<(), InvariantError> {
    // SAFETY: the caller serialises in the Gil mode (our contract is the
    // mode's).
    active_pymalloc_mode().map_or(Ok(()), |m| unsafe { (m.ops().validate)() })
}

/// A configuration, named as `PYTHONMALLOC` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocatorName {
    /// `default`: pymalloc for MEM and OBJ, malloc for RAW.
    Default,
    /// `debug`: `default` with the debug hooks.
    Debug,
    /// `pymalloc`: same allocators as `default`.
    Pymalloc,
    /// `pymalloc_debug`: `pymalloc` with the debug hooks.
    PymallocDebug,
    /// `malloc`: the C library in all three domains.
    Malloc,
    /// `malloc_debug`: `malloc` with the debug hooks.
    MallocDebug,
    /// `pymalloc_all`: `pymalloc`, with RAW serving every size from the
    /// thread heaps.
    PymallocAll,
    /// `pymalloc_all_debug`: `pymalloc_all` with the debug hooks.
    PymallocAllDebug,
}

impl AllocatorName {
    /// Every configuration, in the order CPython's parser tries them.
    pub const ALL: [AllocatorName; 8] = [
        AllocatorName::Default,
        AllocatorName::Debug,
        AllocatorName::Pymalloc,
        AllocatorName::PymallocDebug,
        AllocatorName::Malloc,
        AllocatorName::MallocDebug,
        AllocatorName::PymallocAll,
        AllocatorName::PymallocAllDebug,
    ];

    /// The `PYTHONMALLOC` spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            AllocatorName::Default => "default",
            AllocatorName::Debug => "debug",
            AllocatorName::Pymalloc => "pymalloc",
            AllocatorName::PymallocDebug => "pymalloc_debug",
            AllocatorName::Malloc => "malloc",
            AllocatorName::MallocDebug => "malloc_debug",
            AllocatorName::PymallocAll => "pymalloc_all",
            AllocatorName::PymallocAllDebug => "pymalloc_all_debug",
        }
    }

    /// True for the three configurations with debug hooks.
    pub const fn is_debug(self) -> bool {
        matches!(
            self,
            AllocatorName::Debug
                | AllocatorName::PymallocDebug
                | AllocatorName::MallocDebug
                | AllocatorName::PymallocAllDebug
        )
    }

    /// The configuration without its debug hooks.
    pub const fn base(self) -> AllocatorName {
        match self {
            AllocatorName::Default | AllocatorName::Debug | AllocatorName::Pymalloc | AllocatorName::PymallocDebug => {
                AllocatorName::Pymalloc
            }
            AllocatorName::Malloc | AllocatorName::MallocDebug => AllocatorName::Malloc,
            AllocatorName::PymallocAll | AllocatorName::PymallocAllDebug => AllocatorName::PymallocAll,
        }
    }
}

impl fmt::Display for AllocatorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An allocator name that is not one of CPython's five (plus `default`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAllocator {
    /// The name given.
    pub name: String,
}

impl fmt::Display for UnknownAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown PYTHONMALLOC allocator '{}'; valid names are: ", self.name)?;
        for (i, n) in AllocatorName::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(n.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownAllocator {}

impl FromStr for AllocatorName {
    type Err = UnknownAllocator;
    /// Parses a `PYTHONMALLOC` value; the empty string is `default`, as when
    /// the variable is unset.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(AllocatorName::Default);
        }
        AllocatorName::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| UnknownAllocator { name: s.to_owned() })
    }
}

/// Why a configuration could not be set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The name is not a configuration.
    Unknown(UnknownAllocator),
    /// `PYMALLOC_PURGE` names no purge policy (the message lists the valid
    /// ones).
    UnknownPurge(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unknown(u) => u.fmt(f),
            ConfigError::UnknownPurge(e) => write!(f, "PYMALLOC_PURGE: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<UnknownAllocator> for ConfigError {
    fn from(u: UnknownAllocator) -> Self {
        ConfigError::Unknown(u)
    }
}

/// Installs configuration `name` in the three domains (CPython's
/// `_PyMem_SetupAllocators`).
///
/// # Safety
/// As for [`Domain::set_allocator`], for all three domains: no other thread
/// may be using them, and no block allocated under the previous configuration
/// may be resized or freed under the new one unless both configurations share
/// the allocator of its domain, and, for a block of MEM or OBJ above 512
/// bytes (which pymalloc hands to RAW), RAW's allocator too.
pub unsafe fn setup(name: AllocatorName) -> Result<(), ConfigError> {
    let pymalloc = pymalloc_allocator(pymalloc_mode());
    let (raw, mem, obj) = match name.base() {
        AllocatorName::Malloc => (MemAllocatorEx::malloc(), MemAllocatorEx::malloc(), MemAllocatorEx::malloc()),
        AllocatorName::PymallocAll => {
            let all = every_size_allocator(pymalloc_mode());
            (MemAllocatorEx::pymalloc_every_size(), all, all)
        }
        _ => (MemAllocatorEx::malloc(), pymalloc, pymalloc),
    };
    // SAFETY: the caller guarantees exclusive use of the domains.
    unsafe {
        Domain::Raw.set_allocator(raw);
        Domain::Mem.set_allocator(mem);
        Domain::Obj.set_allocator(obj);
        if name.is_debug() {
            crate::debug::setup_debug_hooks();
        }
    }
    Ok(())
}

/// Parses `name` and installs it; see [`setup`].
///
/// # Safety
/// As for [`setup`].
pub unsafe fn setup_by_name(name: &str) -> Result<AllocatorName, ConfigError> {
    let n: AllocatorName = name.parse()?;
    // SAFETY: nothing uses the domains during the call (our contract).
    unsafe { setup(n)? };
    Ok(n)
}

/// The configuration the domains are in, if they match one exactly
/// (CPython's `_PyMem_GetCurrentAllocatorName`): `pymalloc`, `malloc`,
/// `pymalloc_debug`, `malloc_debug`, or `None` for anything else (a hook, a
/// custom allocator). Allocators are recognised by their context pointer.
pub fn current() -> Option<AllocatorName> {
    let malloc = MemAllocatorEx::malloc();
    let is_pymalloc = |a: &MemAllocatorEx| PymallocMode::ALL.iter().any(|&m| a.is(&pymalloc_allocator(m)));
    let every_size = MemAllocatorEx::pymalloc_every_size();
    let is_every_size = |a: &MemAllocatorEx| PymallocMode::ALL.iter().any(|&m| a.is(&every_size_allocator(m)));
    let classify = |d: [MemAllocatorEx; 3]| {
        let pymalloc_above = is_pymalloc(&d[1]) && d[1].is(&d[2]);
        if d[0].is(&every_size) && is_every_size(&d[1]) && d[1].is(&d[2]) {
            Some(AllocatorName::PymallocAll)
        } else if !d[0].is(&malloc) {
            None
        } else if d[1].is(&malloc) && d[2].is(&malloc) {
            Some(AllocatorName::Malloc)
        } else if pymalloc_above {
            Some(AllocatorName::Pymalloc)
        } else {
            None
        }
    };
    if let Some(n) = classify(Domain::ALL.map(Domain::allocator)) {
        return Some(n);
    }
    match classify(crate::debug::hooked_allocators()?)? {
        AllocatorName::Malloc => Some(AllocatorName::MallocDebug),
        AllocatorName::PymallocAll => Some(AllocatorName::PymallocAllDebug),
        _ => Some(AllocatorName::PymallocDebug),
    }
}

/// Reads `PYTHONMALLOC`, `PYTHONMALLOCSTATS` and `PYMALLOC_PURGE` and
/// applies them: installs the named configuration; with a non-empty
/// `PYTHONMALLOCSTATS` prints the global heap's statistics to stderr whenever
/// it allocates an arena and when the process exits; sets the purge policy
/// `PYMALLOC_PURGE` names (unset or empty: the default decay) in every heap,
/// starting the background decay thread under a decay policy. Returns the
/// configuration installed. An unknown name in either variable changes
/// nothing.
///
/// # Safety
/// As for [`setup`]: call it first thing, before other threads allocate.
pub unsafe fn init_from_env() -> Result<AllocatorName, ConfigError> {
    let purge = std::env::var("PYMALLOC_PURGE").unwrap_or_default();
    PurgePolicy::parse(&purge).map_err(ConfigError::UnknownPurge)?;
    let name = std::env::var("PYTHONMALLOC").unwrap_or_default();
    // SAFETY: called first thing, nothing else uses the domains (our
    // contract).
    let n = unsafe { setup_by_name(&name)? };
    if std::env::var_os("PYTHONMALLOCSTATS").is_some_and(|v| !v.is_empty()) {
        global_heap().lock().set_print_stats_on_new_arena(true);
        thread::set_print_stats_on_new_arena(true);
        extern "C" fn at_exit() {
            crate::stats::print_to_stderr(&pymalloc_stats());
        }
        // SAFETY: registering a plain function with no captured state.
        unsafe { libc::atexit(at_exit) };
    }
    set_purge_policy_by_name(&purge).map_err(ConfigError::UnknownPurge)?;
    Ok(n)
}
