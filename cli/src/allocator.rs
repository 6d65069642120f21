//! The `respawn` program's memory allocator: the C library's, or mimalloc with the `mimalloc`
//! feature (`cargo build --release -p respawn-cli --features mimalloc`), and how the proxy gives
//! free memory back to the system after a request with a large body.
//!
//! A proxied request allocates and frees a few dozen blocks, among them buffers of 8 KiB (awc's
//! HTTP/1 read and write buffers for the request to the model server), which glibc serves from its
//! arenas rather than its per-thread cache; mimalloc's per-thread free lists serve them for less
//! (up to 9 % less CPU per request side by side, though some runs show no difference). The cost is
//! memory: mimalloc keeps pages of each size class for each thread, so the proxy's resident size
//! under 64 connections is 2–2.5 MiB larger. Measured side by side by the benchmark
//! (docs/BENCHMARKS.md, section 4, "The allocator"); the default stays the C library's, whose
//! resident size meets the proxy's memory budget, and the feature is there for deployments that
//! would rather spend the memory.
//!
//! mimalloc is built without transparent huge pages (`no_thp`): asked for them, the kernel backs
//! its arenas with 2 MiB pages, and an idle proxy holds ~23 MiB instead of ~11.

/// The program's global allocator (for every binary and test that links this crate).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives mimalloc's free memory back to the system at once, instead of after its purge delay
/// (which runs only when the allocator is next used, so an idle proxy would keep it); the proxy
/// calls it when a request with a large body ends (`ProxySettings::return_free_memory`). What
/// the request still held at that moment (the body in the sender's write buffer, freed as the
/// connection goes back to the pool) is freed a moment later: on a runtime, a second collect
/// follows after [`SECOND_COLLECT`].
#[cfg(feature = "mimalloc")]
pub fn return_free_memory() {
    collect();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async {
            tokio::time::sleep(SECOND_COLLECT).await;
            collect();
        });
    }
}

/// Gives the C library's free memory back to the system (`malloc_trim`); large blocks are
/// unmapped as soon as they are freed, so no second pass is needed.
#[cfg(not(feature = "mimalloc"))]
pub fn return_free_memory() {
    respawn::proxy::trim_system_allocator();
}

/// How long after a large request ends its last buffers are taken back.
#[cfg(feature = "mimalloc")]
pub const SECOND_COLLECT: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(feature = "mimalloc")]
fn collect() {
    // SAFETY: mi_collect only frees memory the allocator holds and no one uses; it takes no
    // pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    /// The tests measure the whole process's resident size, and a collect takes back every
    /// thread's free memory: one at a time.
    static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    /// The process's resident size, from `/proc` (`None` where there is none).
    fn rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Freed large blocks leave the process: its resident size drops back after a collect.
    #[test]
    fn collect_returns_freed_memory_to_the_system() {
        let _alone = ONE_AT_A_TIME.lock();
        let Some(before) = rss_kib() else {
            return; // no /proc: nothing to measure
        };
        let blocks: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8 + 1; 8 << 20]).collect();
        let touched = rss_kib().unwrap_or(0);
        assert!(
            touched >= before + 48 * 1024,
            "64 MiB of written blocks should be resident: {before} KiB before, {touched} KiB with them"
        );
        drop(blocks);
        collect();
        let after = rss_kib().unwrap_or(u64::MAX);
        assert!(
            after < touched - 48 * 1024,
            "freed and collected, the blocks should have left: {touched} KiB with them, {after} KiB after"
        );
    }

    /// A block freed just after the call (as a request's last buffers are) is taken back by the
    /// collect that follows on the runtime.
    #[test]
    fn a_block_freed_after_the_call_is_taken_back_later() {
        let _alone = ONE_AT_A_TIME.lock();
        let Some(before) = rss_kib() else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime for the test");
        let held = runtime.block_on(async {
            let block = vec![7u8; 64 << 20];
            return_free_memory();
            drop(block);
            rss_kib().unwrap_or(0)
        });
        assert!(
            held >= before + 48 * 1024,
            "the block freed after the call stays until the second collect: {before} KiB before, {held} KiB after its free"
        );
        runtime.block_on(async { tokio::time::sleep(SECOND_COLLECT * 3).await });
        let after = rss_kib().unwrap_or(u64::MAX);
        assert!(
            after < held - 48 * 1024,
            "the second collect should have taken it back: {held} KiB held, {after} KiB after"
        );
    }
}
