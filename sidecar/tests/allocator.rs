//! The allocator gives a burst's freed memory back (its own process: no other test allocates
//! meanwhile).

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use mcp_warden_sidecar::allocator;

/// Anonymous memory of this process, from `/proc/self/smaps_rollup` (kB).
fn anonymous_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn freed_memory_of_a_thread_arena_goes_back() {
    // A thread's burst: 32 MiB in 32 KiB blocks (below the size glibc maps on its own, so they
    // come from the thread's arena), all freed but the last, which keeps the arena from
    // shrinking at its end by itself.
    let kept = std::thread::spawn(|| {
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 32 * 1024]).collect();
        let last = blocks.pop().unwrap();
        drop(blocks);
        last
    })
    .join()
    .unwrap();
    let before = anonymous_kb();
    allocator::release();
    let after = anonymous_kb();
    assert_eq!(kept.len(), 32 * 1024);
    assert!(
        before.saturating_sub(after) >= 16 * 1024,
        "anonymous memory {before} kB before, {after} kB after"
    );
}
