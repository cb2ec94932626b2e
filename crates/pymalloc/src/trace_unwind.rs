//! A caching stack walker for x86-64 Linux: the tracer's fast way to the
//! return addresses of an allocation.
//!
//! The system unwinder (`_Unwind_Backtrace`) finds the frame description
//! entry of every return address and interprets its call-frame program on
//! every walk, some hundreds of instructions a frame. A return address
//! always unwinds by the same rule, though, and in code compiled for x86-64
//! that rule is nearly always simple: the canonical frame address (CFA) is
//! `rsp` or `rbp` plus a constant, the return address is at `CFA - 8`, and
//! the caller's `rbp` is either unchanged or saved at `CFA + n`. This walker
//! works the rule out once per address (with `gimli`, from the module's
//! `.eh_frame`), keeps it in a table of [`SLOTS`] entries, and afterwards
//! unwinds a frame with a table look and two loads.
//!
//! Rules are kept for the life of the process: a module unloaded and
//! another loaded at the same addresses would find its predecessor's rules.
//! The bounds checks below keep such a walk inside the stack; its frames
//! would be wrong, not its memory accesses.
//!
//! An address whose rule is not of that form (a DWARF expression, as in PLT
//! stubs and signal trampolines, or a return address stored elsewhere) makes
//! [`walk`] give up, and the tracer uses the system unwinder for that call.
//! Every load from the stack is checked against the thread's stack bounds
//! first, so a wrong rule ends the walk instead of reading stray memory.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, NativeEndian, Pointer, Register, RegisterRule, UnwindContext,
    UnwindContextStorage, UnwindSection, X86_64,
};

use crate::sync::SpinLock;

/// Entries of the rule table (a power of two).
const SLOTS: usize = 4096;

/// The rule of one return address, packed into a word (never 0):
/// bits 0–1 the CFA's register (`RSP` or `RBP`), or `GIVE_UP`, or `END`;
/// bit 2 set if the caller's `rbp` is saved, at `CFA + (bits 8–23 as
/// i16)`; bit 3 always set; bits 32–63 the CFA's offset from its register
/// (i32).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Rule(u64);

const RSP: u64 = 1;
const RBP: u64 = 2;
const GIVE_UP: u64 = 3;
/// The outermost frame (its return address is undefined): bits 0–1 are 0.
const END: u64 = 0;
const RBP_SAVED: u64 = 4;
/// Set in every rule, so that no rule is the table's empty word.
const VALID: u64 = 8;

impl Rule {
    fn new(base: u64, cfa_offset: i32, rbp_at: Option<i16>) -> Rule {
        let rbp = rbp_at.map_or(0, |o| RBP_SAVED | (u64::from(o as u16) << 8));
        Rule(VALID | base | rbp | (u64::from(cfa_offset as u32) << 32))
    }
    fn base(self) -> u64 {
        self.0 & 3
    }
    fn cfa_offset(self) -> i64 {
        i64::from((self.0 >> 32) as u32 as i32)
    }
    fn rbp_at(self) -> Option<i64> {
        (self.0 & RBP_SAVED != 0).then(|| i64::from((self.0 >> 8) as u16 as i16))
    }
}

/// The rule table: entry `i` caches the rule of one address whose hash is
/// `i`.
///
/// Invariant: an entry whose `key` reads the same address before and after
/// its `rule` is read holds that address's rule. Writers are serialised by
/// `WRITER` and clear `key` before they change `rule` (a seqlock whose
/// sequence number is the key itself); readers never wait.
struct Entry {
    key: AtomicU64,
    rule: AtomicU64,
}

static TABLE: [Entry; SLOTS] = [const { Entry { key: AtomicU64::new(0), rule: AtomicU64::new(0) } }; SLOTS];
static WRITER: SpinLock = SpinLock::new();

/// Held around each call the tracer makes into the dynamic loader
/// (`dl_iterate_phdr`, `dladdr`, `dladdr1`, and the system unwinder, which
/// calls `dl_iterate_phdr` to find each frame's description; see
/// [`with_loader`]), and by the fork handler. glibc does not reset its
/// loader locks in the child of `fork`: a thread inside `dl_iterate_phdr`
/// when another thread forked left the child's first traced allocation
/// waiting in `_dl_load_write_lock` until its alarm killed it (the
/// `trace_fork` test, once in about 500 runs under load).
///
/// It nests on one thread (the system unwinder's callback classifies
/// frames with `dladdr`): [`LOADER_DEPTH`] counts the calling thread's
/// levels, and only the outermost takes and gives back the lock.
static LOADER: SpinLock = SpinLock::new();

std::thread_local! {
    /// How many [`with_loader`] calls the calling thread is inside: above
    /// 0, it holds [`LOADER`]. (Constant-initialised and without a
    /// destructor: readable at any point of a thread's life.)
    static LOADER_DEPTH: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// Runs `f`, a call into the dynamic loader that calls nothing that
/// traces, with [`LOADER`] held (taken here unless the calling thread
/// already holds it).
pub(crate) fn with_loader<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the calling thread's depth back, also if `f` unwinds.
    struct Level(u32);
    impl Drop for Level {
        fn drop(&mut self) {
            LOADER_DEPTH.with(|d| d.set(self.0));
        }
    }
    let depth = LOADER_DEPTH.with(|d| d.get());
    // Declared before the level, so dropped after it.
    let _lock = (depth == 0).then(|| LOADER.lock());
    LOADER_DEPTH.with(|d| d.set(depth + 1));
    let _level = Level(depth);
    f()
}

/// True if the calling thread is inside [`with_loader`].
#[cfg(test)]
pub(crate) fn holds_loader() -> bool {
    LOADER_DEPTH.with(|d| d.get()) != 0
}

/// Takes the loader lock and the table's writer lock (before `fork`); no
/// path holds both, so the order between them is free. The loader lock is
/// taken before `trace_frames`' symbol lock, which a system walk takes
/// inside it (`trace_fork.rs` keeps that order).
pub(crate) fn fork_acquire() {
    LOADER.acquire();
    WRITER.acquire();
}

/// Gives back what [`fork_acquire`] took.
///
/// # Safety
/// The calling thread ran [`fork_acquire`] and has not released since.
pub(crate) unsafe fn fork_release() {
    // SAFETY: taken by fork_acquire on this thread (our contract).
    unsafe {
        WRITER.release();
        LOADER.release();
    }
}

fn slot(addr: u64) -> &'static Entry {
    // Return addresses are spread over a few megabytes of code; mixing the
    // bits above the low twelve keeps distant modules apart.
    let h = (addr ^ (addr >> 12) ^ (addr >> 24)) as usize;
    &TABLE[h % SLOTS]
}

fn cached(addr: u64) -> Option<Rule> {
    let e = slot(addr);
    let k1 = e.key.load(Ordering::Acquire);
    if k1 != addr {
        return None;
    }
    let r = e.rule.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    (e.key.load(Ordering::Relaxed) == addr && r != 0).then_some(Rule(r))
}

fn remember(addr: u64, r: Rule) {
    let _w = WRITER.lock();
    let e = slot(addr);
    e.key.store(0, Ordering::Relaxed);
    fence(Ordering::Release);
    e.rule.store(r.0, Ordering::Relaxed);
    e.key.store(addr, Ordering::Release);
}

/// The rule of the code at `addr` (for a return address, the address of
/// its call: one byte before), from the table or worked out now.
#[inline]
fn rule_at(addr: u64) -> Rule {
    cached(addr).unwrap_or_else(|| {
        let r = find_rule(addr);
        remember(addr, r);
        r
    })
}

/// Register rules and row stack of the call-frame interpreter, on the
/// stack: working a rule out allocates nothing.
struct OnStack;
impl UnwindContextStorage<usize> for OnStack {
    type Rules = [(Register, RegisterRule<usize>); 32];
    type Stack = [gimli::UnwindTableRow<usize, Self>; 4];
}

/// Works out the rule at `addr` from the `.eh_frame` of the module holding
/// it; `GIVE_UP` if there is none or it is not of the simple form.
#[cold]
#[inline(never)]
fn find_rule(addr: u64) -> Rule {
    let give_up = Rule::new(GIVE_UP, 0, None);
    let Some(m) = module_of(addr) else { return give_up };
    // SAFETY: `m` describes a loaded module's read-only `.eh_frame_hdr`
    // and `.eh_frame`, mapped for as long as the module is loaded (an
    // address of its code is being walked: it is).
    let (hdr, frame) = unsafe {
        (
            core::slice::from_raw_parts(m.hdr as *const u8, m.hdr_len),
            core::slice::from_raw_parts(m.frame as *const u8, m.frame_len),
        )
    };
    let bases = BaseAddresses::default().set_eh_frame_hdr(m.hdr).set_eh_frame(m.frame);
    let Ok(parsed) = EhFrameHdr::new(hdr, NativeEndian).parse(&bases, 8) else { return give_up };
    let Some(table) = parsed.table() else { return give_up };
    let eh_frame = EhFrame::new(frame, NativeEndian);
    let mut ctx = UnwindContext::<usize, OnStack>::new_in();
    let Ok(row) = table.unwind_info_for_address(&eh_frame, &bases, &mut ctx, addr, EhFrame::cie_from_offset) else {
        return give_up;
    };
    let (base, offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => (RSP, *offset),
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => (RBP, *offset),
        _ => return give_up,
    };
    let Ok(offset) = i32::try_from(offset) else { return give_up };
    // Every CIE of x86-64 code puts the return address at CFA - 8; an
    // undefined one marks the outermost frame (`_start`, a new thread's).
    match row.register(X86_64::RA) {
        RegisterRule::Offset(-8) => {}
        RegisterRule::Undefined => return Rule::new(END, 0, None),
        _ => return give_up,
    }
    // No rule for rbp (gimli's Undefined) means the callee left it alone.
    let rbp_at = match row.register(X86_64::RBP) {
        RegisterRule::SameValue | RegisterRule::Undefined => None,
        RegisterRule::Offset(o) => match i16::try_from(o) {
            Ok(o) => Some(o),
            Err(_) => return give_up,
        },
        _ => return give_up,
    };
    Rule::new(base, offset, rbp_at)
}

/// Where a loaded module keeps its unwind tables.
struct Module {
    hdr: u64,
    hdr_len: usize,
    frame: u64,
    frame_len: usize,
}

/// The unwind tables of the module whose loaded segments hold `addr`.
fn module_of(addr: u64) -> Option<Module> {
    struct Search {
        addr: u64,
        found: Option<Module>,
    }
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info record whose program
        // headers are readable, and our own `data`.
        unsafe {
            let s = &mut *data.cast::<Search>();
            let info = &*info;
            let base = info.dlpi_addr;
            let phdrs = core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let holds = |addr: u64| {
                phdrs.iter().find(|p| {
                    p.p_type == libc::PT_LOAD && (base + p.p_vaddr..base + p.p_vaddr + p.p_memsz).contains(&addr)
                })
            };
            if holds(s.addr).is_none() {
                return 0;
            }
            let Some(eh) = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME) else { return 1 };
            let hdr = base + eh.p_vaddr;
            let hdr_len = eh.p_memsz as usize;
            // The header names `.eh_frame`; its length is not recorded, so
            // the slice runs to the end of the segment holding it.
            let bases = BaseAddresses::default().set_eh_frame_hdr(hdr);
            let slice = core::slice::from_raw_parts(hdr as *const u8, hdr_len);
            let Ok(parsed) = EhFrameHdr::new(slice, NativeEndian).parse(&bases, 8) else { return 1 };
            let Pointer::Direct(frame) = parsed.eh_frame_ptr() else { return 1 };
            let Some(seg) = holds(frame) else { return 1 };
            let frame_len = (base + seg.p_vaddr + seg.p_filesz.min(seg.p_memsz)).saturating_sub(frame) as usize;
            s.found = Some(Module { hdr, hdr_len, frame, frame_len });
            1
        }
    }
    let mut s = Search { addr, found: None };
    // SAFETY: `visit` matches dl_iterate_phdr's callback and reads `data`
    // as the Search it is.
    with_loader(|| unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut s).cast()) });
    s.found
}

/// The registers a walk starts from: a code address and the stack and
/// frame pointers there.
#[derive(Clone, Copy)]
pub(crate) struct Regs {
    ip: u64,
    sp: u64,
    bp: u64,
}

impl Regs {
    /// The registers at this point of the function this is inlined into;
    /// a walk from them reports that function's caller first. The function
    /// must still be running when the walk is made (its frame and those
    /// above it are what is walked).
    #[inline(always)]
    pub(crate) fn here() -> Regs {
        let mut r = Regs { ip: 0, sp: 0, bp: 0 };
        // SAFETY: reads three registers into locals; no memory is touched.
        unsafe {
            core::arch::asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) r.ip,
                sp = out(reg) r.sp,
                bp = out(reg) r.bp,
                options(nomem, nostack, preserves_flags),
            );
        }
        r
    }
}

/// Calls `f(return address, stack pointer)` for each frame above the one
/// `start` was taken in, most recent first, until `f` returns false or the stack ends: as
/// the system unwinder reports a frame, its stack pointer is the one it
/// had when it made its call (the CFA of the frame it called). Returns false
/// if a frame's unwind rule is not one this walker handles (the caller then
/// uses the system unwinder), true otherwise.
///
/// `stack_top` bounds every load: the address just above the thread's
/// stack. The frame `start` was taken in must still be running.
#[inline]
pub(crate) fn walk(start: Regs, stack_top: u64, mut f: impl FnMut(u64, u64) -> bool) -> bool {
    let mut r = start;
    let low = r.sp;
    // The first address is where `start` was taken; later ones are return
    // addresses, looked up at their call (one byte before).
    let mut lookup = r.ip;
    loop {
        let rule = rule_at(lookup);
        let base = match rule.base() {
            RSP => r.sp,
            RBP => r.bp,
            END => return true,
            _ => return false,
        };
        let cfa = base.wrapping_add_signed(rule.cfa_offset());
        // A caller's frame lies above its callee's; the return address is
        // just below the CFA.
        if cfa <= r.sp || cfa > stack_top || cfa - 8 < low {
            return true;
        }
        // SAFETY: cfa - 8 is inside this thread's stack, between the walk's
        // own stack pointer and the stack's top (checked above): mapped and
        // readable. Volatile: the words belong to other frames, which the
        // compiler must not reason about.
        let ra = unsafe { ((cfa - 8) as *const u64).read_volatile() };
        if let Some(o) = rule.rbp_at() {
            let at = cfa.wrapping_add_signed(o);
            if at < low || at + 8 > stack_top {
                return true;
            }
            // SAFETY: inside the stack, as for the return address.
            r.bp = unsafe { (at as *const u64).read_volatile() };
        }
        if ra == 0 {
            return true;
        }
        (r.sp, r.ip, lookup) = (cfa, ra, ra - 1);
        if !f(ra, cfa) {
            return true;
        }
    }
}

/// The address just above the calling thread's stack, or 0 if unknown.
pub(crate) fn stack_top() -> u64 {
    // SAFETY: pthread_getattr_np fills the attribute object for the calling
    // thread; it is destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut libc::c_void = core::ptr::null_mut();
        let mut size = 0usize;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return 0;
        }
        addr as u64 + size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pack_and_unpack() {
        let r = Rule::new(RSP, 56, None);
        assert_eq!((r.base(), r.cfa_offset(), r.rbp_at()), (RSP, 56, None));
        let r = Rule::new(RBP, 16, Some(-16));
        assert_eq!((r.base(), r.cfa_offset(), r.rbp_at()), (RBP, 16, Some(-16)));
        let r = Rule::new(RSP, -4, Some(i16::MIN));
        assert_eq!((r.base(), r.cfa_offset(), r.rbp_at()), (RSP, -4, Some(i16::MIN as i64)));
    }

    #[test]
    fn the_table_keeps_a_rule_per_address() {
        let (a, b) = (0x1234_5678_9abc_u64, 0x1234_5678_9abc_u64 + SLOTS as u64 * 4096 * 4097);
        remember(a, Rule::new(RSP, 8, None));
        assert_eq!(cached(a), Some(Rule::new(RSP, 8, None)));
        assert_eq!(cached(a + 1), None);
        remember(b, Rule::new(RBP, 16, Some(-16)));
        assert_eq!(cached(b), Some(Rule::new(RBP, 16, Some(-16))));
    }

    /// Frames as (return address, stack pointer).
    type Frames = Vec<(u64, u64)>;

    /// Walks this test's stack with both walkers: (this walker's frames,
    /// whether it finished, the system unwinder's frames).
    #[inline(never)]
    fn both_walks() -> (Frames, bool, Frames) {
        let mut mine = Vec::new();
        let ok = walk(Regs::here(), stack_top(), |ip, cfa| {
            mine.push((ip, cfa));
            true
        });
        let mut system = Vec::new();
        backtrace::trace(|f| {
            system.push((f.ip() as u64, f.sp() as u64));
            true
        });
        (mine, ok, system)
    }

    #[inline(never)]
    fn nested(depth: u32) -> (Frames, bool, Frames) {
        if depth == 0 {
            both_walks()
        } else {
            // black_box keeps the recursion a real call chain.
            let r = nested(core::hint::black_box(depth - 1));
            core::hint::black_box(&r);
            r
        }
    }

    #[test]
    fn walks_the_frames_the_system_unwinder_walks() {
        let (mine, ok, system) = nested(6);
        assert!(ok, "every frame of the test's stack has a simple rule");
        // The first frame is both_walks' own (its stack pointer is the same
        // in both walks; its address differs, after two different calls).
        let first = system.iter().position(|&(_, cfa)| cfa == mine[0].1).expect("both walks pass both_walks");
        let theirs = &system[first + 1..];
        let n = mine.len() - 1;
        assert!(n >= 10, "the nested calls and the test harness's frames: {n}");
        assert!(theirs.len() >= n, "the system unwinder ends first: {} < {n}", theirs.len());
        assert_eq!(&mine[1..], &theirs[..n], "frame for frame, address and CFA");
    }

    #[test]
    fn a_thread_of_its_own_walks_to_its_start() {
        let (mine, ok, system) = std::thread::spawn(|| nested(3)).join().unwrap();
        assert!(ok);
        let first = system.iter().position(|&(_, cfa)| cfa == mine[0].1).unwrap();
        let n = mine.len() - 1;
        assert_eq!(&mine[1..], &system[first + 1..first + 1 + n]);
        // Past the thread's start routine only the outermost frames remain.
        assert!(system.len() - (first + 1 + n) <= 1, "the walk stopped early: {mine:x?} / {system:x?}");
    }
}
