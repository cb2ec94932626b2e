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
//! ```
//! use pymalloc::config::AllocatorName;
//! assert_eq!("pymalloc".parse::<AllocatorName>(), Ok(AllocatorName::Pymalloc));
//! assert_eq!("".parse::<AllocatorName>(), Ok(AllocatorName::Default));
//! let err = "jemalloc".parse::<AllocatorName>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "unknown PYTHONMALLOC allocator 'jemalloc'; valid names are: \
//!      default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug"
//! );
//! ```

use core::fmt;
use core::str::FromStr;

use crate::domain::{global_heap, Domain, MemAllocatorEx};

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
}

impl AllocatorName {
    /// Every configuration, in the order CPython's parser tries them.
    pub const ALL: [AllocatorName; 6] = [
        AllocatorName::Default,
        AllocatorName::Debug,
        AllocatorName::Pymalloc,
        AllocatorName::PymallocDebug,
        AllocatorName::Malloc,
        AllocatorName::MallocDebug,
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
        }
    }

    /// True for the three configurations with debug hooks.
    pub const fn is_debug(self) -> bool {
        matches!(
            self,
            AllocatorName::Debug | AllocatorName::PymallocDebug | AllocatorName::MallocDebug
        )
    }

    /// The configuration without its debug hooks.
    pub const fn base(self) -> AllocatorName {
        match self {
            AllocatorName::Default
            | AllocatorName::Debug
            | AllocatorName::Pymalloc
            | AllocatorName::PymallocDebug => AllocatorName::Pymalloc,
            AllocatorName::Malloc | AllocatorName::MallocDebug => AllocatorName::Malloc,
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
        write!(
            f,
            "unknown PYTHONMALLOC allocator '{}'; valid names are: ",
            self.name
        )?;
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
        AllocatorName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| UnknownAllocator { name: s.to_owned() })
    }
}

/// Why a configuration could not be set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The name is not a configuration.
    Unknown(UnknownAllocator),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unknown(u) => u.fmt(f),
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
/// the allocator of its domain.
pub unsafe fn setup(name: AllocatorName) -> Result<(), ConfigError> {
    let pymalloc = MemAllocatorEx::pymalloc(global_heap());
    let (raw, mem, obj) = match name.base() {
        AllocatorName::Malloc => (
            MemAllocatorEx::malloc(),
            MemAllocatorEx::malloc(),
            MemAllocatorEx::malloc(),
        ),
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
    // SAFETY: forwarded contract.
    unsafe { setup(n)? };
    Ok(n)
}

/// The configuration the domains are in, if they match one exactly
/// (CPython's `_PyMem_GetCurrentAllocatorName`): `pymalloc`, `malloc`,
/// `pymalloc_debug`, `malloc_debug`, or `None` for anything else (a hook, a
/// custom allocator). Allocators are recognised by their context pointer.
pub fn current() -> Option<AllocatorName> {
    let pymalloc = MemAllocatorEx::pymalloc(global_heap());
    let malloc = MemAllocatorEx::malloc();
    let is = |d: [MemAllocatorEx; 3], want: [&MemAllocatorEx; 3]| {
        d.iter().zip(want).all(|(a, b)| a.is(b))
    };
    let now = Domain::ALL.map(Domain::allocator);
    if is(now, [&malloc, &malloc, &malloc]) {
        return Some(AllocatorName::Malloc);
    }
    if is(now, [&malloc, &pymalloc, &pymalloc]) {
        return Some(AllocatorName::Pymalloc);
    }
    let under = crate::debug::hooked_allocators()?;
    if is(under, [&malloc, &malloc, &malloc]) {
        return Some(AllocatorName::MallocDebug);
    }
    if is(under, [&malloc, &pymalloc, &pymalloc]) {
        return Some(AllocatorName::PymallocDebug);
    }
    None
}

/// Reads `PYTHONMALLOC` and `PYTHONMALLOCSTATS` and applies them: installs
/// the named configuration, and with a non-empty `PYTHONMALLOCSTATS` prints
/// the global heap's statistics to stderr whenever it allocates an arena and
/// when the process exits. Returns the configuration installed.
///
/// # Safety
/// As for [`setup`]: call it first thing, before other threads allocate.
pub unsafe fn init_from_env() -> Result<AllocatorName, ConfigError> {
    let name = std::env::var("PYTHONMALLOC").unwrap_or_default();
    // SAFETY: forwarded contract.
    let n = unsafe { setup_by_name(&name)? };
    if std::env::var_os("PYTHONMALLOCSTATS").is_some_and(|v| !v.is_empty()) {
        global_heap().lock().set_print_stats_on_new_arena(true);
        extern "C" fn at_exit() {
            crate::stats::print_to_stderr(&global_heap().stats());
        }
        // SAFETY: registering a plain function with no captured state.
        unsafe { libc::atexit(at_exit) };
    }
    Ok(n)
}
