//! The statistics table is laid out exactly like CPython 3.11's
//! `sys._debugmallocstats()`: the numbers of the reference output, fed into
//! our renderer, give back the reference byte for byte.

// The reference is 64-bit CPython 3.11 default geometry; the legacy build only
// checks the free-list lines.
#![cfg_attr(feature = "legacy-geometry", allow(unused_imports, dead_code))]

use pymalloc::stats::{allocator_stats_line, Stats};

const REFERENCE: &str = include_str!("data/cpython-3.11/debugmallocstats.txt");

/// The number at the end of the line starting with `label`.
fn value(label: &str) -> usize {
    let line = REFERENCE.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no line {label}"));
    line.rsplit('=').next().unwrap().trim().replace(',', "").parse().unwrap()
}

#[test]
#[cfg(not(feature = "legacy-geometry"))]
fn reference_numbers_render_to_the_reference_text() {
    let mut s = Stats::new();
    for line in REFERENCE.lines().skip(4) {
        let f: Vec<usize> = line.split_whitespace().map(|x| x.parse().unwrap()).collect::<Vec<_>>();
        if f.len() != 5 {
            break;
        }
        let c = &mut s.classes[f[0]];
        assert_eq!(c.size, f[1], "class {} size", f[0]);
        (c.pools, c.blocks_in_use, c.avail_blocks) = (f[2], f[3], f[4]);
    }
    s.arenas_allocated_total = value("# arenas allocated total");
    s.arenas_reclaimed = value("# arenas reclaimed");
    s.arenas_highwater = value("# arenas highwater mark");
    s.arenas_current = value("# arenas allocated current");
    s.arena_bytes = s.arenas_current * pymalloc::geometry::ARENA_SIZE;
    s.allocated_bytes = value("# bytes in allocated blocks");
    s.available_bytes = value("# bytes in available blocks");
    s.unused_pools =
        REFERENCE.lines().find(|l| l.contains("unused pools")).unwrap().split(' ').next().unwrap().parse().unwrap();
    s.unused_pool_bytes = s.unused_pools * pymalloc::geometry::POOL_SIZE;
    s.pool_header_bytes = value("# bytes lost to pool headers");
    s.quantization_bytes = value("# bytes lost to quantization");
    s.arena_alignment_bytes = value("# bytes lost to arena alignment");
    s.map.mid_nodes = value("# arena map mid nodes");
    s.map.bot_nodes = value("# arena map bot nodes");
    let u = pymalloc::radix::ARENA_MAP.usage();
    (s.map.root_bytes, s.map.mid_node_bytes, s.map.bot_node_bytes) = (u.root_bytes, u.mid_node_bytes, u.bot_node_bytes);

    // Our derived totals agree with CPython's.
    let mut derived = s.clone();
    (derived.allocated_bytes, derived.available_bytes, derived.pool_header_bytes, derived.quantization_bytes) =
        (0, 0, 0, 0);
    for c in &derived.classes.clone() {
        derived.allocated_bytes += c.blocks_in_use * c.size;
        derived.available_bytes += c.avail_blocks * c.size;
        derived.pool_header_bytes += c.pools * pymalloc::geometry::POOL_OVERHEAD;
        derived.quantization_bytes +=
            c.pools * ((pymalloc::geometry::POOL_SIZE - pymalloc::geometry::POOL_OVERHEAD) % c.size);
    }
    assert_eq!(derived, s, "CPython's byte totals follow from its class table the same way ours do");
    assert_eq!(s.accounted_bytes(), s.arena_bytes);

    // sys._debugmallocstats() prints the table, a blank line, then the free
    // lists; the blank line is the caller's, not the table's.
    let mut ours = String::new();
    s.render_as(&mut ours, pymalloc::stats::TableLayout::Cpython310).unwrap();
    ours.push('\n');
    let theirs: String = REFERENCE.split_inclusive('\n').take_while(|l| !l.contains(" free ")).collect();
    assert_eq!(ours, theirs);
}

#[test]
fn free_list_lines_match_the_reference() {
    let mut n = 0;
    for line in REFERENCE.lines().filter(|l| l.contains(" free ")) {
        // "   4 free 1-sized PyTupleObjects * 32 bytes each =  ..."
        let words: Vec<&str> = line.split_whitespace().collect();
        let count: usize = words[0].parse().unwrap();
        let star = words.iter().position(|&w| w == "*").unwrap();
        let name = words[1..star].join(" ");
        let name = name.strip_suffix('s').unwrap();
        let size: usize = words[star + 1].parse().unwrap();
        let mut out = String::new();
        allocator_stats_line(&mut out, name, count, size).unwrap();
        assert_eq!(out, format!("{line}\n"));
        n += 1;
    }
    assert_eq!(n, 23);
}

#[test]
fn a_live_heap_renders_consistently() {
    let mut heap = pymalloc::Heap::new();
    let blocks: Vec<_> = (1..=2000).map(|i| heap.malloc(i % 600)).collect();
    let s = heap.stats();
    let mut text = String::new();
    s.render_as(&mut text, pymalloc::stats::TableLayout::Cpython310).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("Small block threshold = 512, in {} size classes.", pymalloc::geometry::NB_SMALL_SIZE_CLASSES)
    );
    assert_eq!(lines[2], "class   size   num pools   blocks in use  avail blocks");
    let rows = s.classes.iter().filter(|c| c.pools > 0).count();
    assert_eq!(lines[4 + rows], "");
    assert!(lines[5 + rows].starts_with("# arenas allocated total           ="));
    for l in &lines[5 + rows..] {
        assert!(l.is_empty() || l == &"arena map counts" || l.len() == 57, "bad width: {l:?}");
    }
    let total: usize =
        lines.iter().find(|l| l.starts_with("Total")).unwrap()[36..].trim().replace(',', "").parse().unwrap();
    assert_eq!(total, s.arena_bytes);
    for p in blocks {
        unsafe { heap.free(p) };
    }
}

#[test]
fn the_cpython_3_9_layout_ends_before_the_arena_map() {
    use pymalloc::stats::{set_table_layout, table_layout, TableLayout};
    let mut heap = pymalloc::Heap::new();
    let p = heap.malloc(100);
    let s = heap.stats();
    let (mut new, mut old) = (String::new(), String::new());
    s.render_as(&mut new, TableLayout::Cpython310).unwrap();
    s.render_as(&mut old, TableLayout::Cpython39).unwrap();
    let cut = new.find("\n\narena map counts\n").expect("3.10's table has the arena map");
    assert_eq!(old, new[..cut + 1], "3.9's table is 3.10's without the arena-map block");
    assert!(old.lines().last().unwrap().starts_with("Total"), "{old}");

    // The process-wide layout is what render() and Display use.
    assert_eq!(table_layout(), TableLayout::Cpython310);
    set_table_layout(TableLayout::Cpython39);
    assert_eq!(s.to_string(), old);
    set_table_layout(TableLayout::Cpython310);
    assert_eq!(s.to_string(), new);
    unsafe { heap.free(p) };
}
