//! Gives memory the allocator keeps but no longer uses back to the operating system.
//!
//! glibc's `malloc` holds on to freed memory: each thread allocates from its own arena, and the
//! free space in the middle of an arena stays resident for good. After a burst (buffers of many
//! connections, a backlog of audit lines) the process would keep its peak memory. Every
//! [`INTERVAL`] the sidecar asks glibc (`malloc_trim`) to hand the free pages of every arena
//! back; memory still in use is untouched, and pages handed back cost a page fault when they
//! are used again, a few hundred per interval under load. Other C libraries: nothing to do.

use std::time::Duration;

/// How often free memory is given back: after a burst, memory returns to what is in use within
/// this time.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Gives the free memory of every arena back, every [`INTERVAL`], until the runtime stops.
pub async fn release_periodically() {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate.
    loop {
        ticker.tick().await;
        release();
    }
}

/// Gives the free memory of every arena back to the operating system now.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The one call into the C library; see the SAFETY note.
pub fn release() {
    // SAFETY: malloc_trim takes no pointer and is thread-safe (it locks each arena while it
    // walks it); it only releases pages of free chunks, never memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the free memory of every arena back to the operating system now (other C libraries:
/// nothing to do).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}
