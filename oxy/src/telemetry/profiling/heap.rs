//! The heap profile: jemalloc is the global allocator (feature `jemalloc`, on by
//! default), built with profiling and sampling one allocation per 512 KiB on average
//! once profiling is enabled; `/debug/pprof/heap` dumps what is live as gzipped pprof.

#![allow(unsafe_code)]

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`MALLOC_CONF`-style pairs; the environment's
/// `_RJEM_MALLOC_CONF` is read after them and wins):
///
/// - `abort_conf:true`: an invalid pair, here or in `_RJEM_MALLOC_CONF`, stops the
///   process at its start with jemalloc's message naming the pair, instead of being
///   ignored.
/// - `prof:true,prof_active:false,lg_prof_sample:19`: profiling built in and off until
///   enabled.
/// - `tcache_ncached_max:4097-14336:128`: each thread caches up to 128 freed blocks of
///   each size class from 5 KiB to 14 KiB, where jemalloc's default is 20. By default
///   these classes have one to four blocks per slab (one for 8 KiB). A proxied HTTP/1.1
///   request allocates its boxed future (5 KiB) and, often, the upstream connection's
///   next 8 KiB read buffer, and frees them when it ends; with more of them in flight
///   than the cache of 20 held, jemalloc made and unmade a slab about once per request.
/// - `slab_sizes:` `512-512:4|1280-1280:15|1792-1792:14|3072-3072:6|4096-4096:8|`
///   `5120-5120:20|8192-8192:16` (pages a slab, by block size): slabs of 32 blocks of
///   512 bytes, 48 of 1,280, 32 of 1,792, 8 of 3 KiB, 8 of 4 KiB, 16 of 5 KiB and 8 of
///   8 KiB (with 4 KiB pages), where jemalloc's defaults hold 8, 16, 16, 4, 1, 4 and 1.
///   A slab goes back to its arena when its last block is freed, so with few blocks a
///   slab, blocks in flight beyond the thread cache made and unmade slabs: about 0.46 a
///   request over HTTP/2 with 400 streams in flight, most of them of 8 KiB (hyper's
///   upstream read buffers), 0.025 with these sizes; and 0.2 a CONNECT tunnel opened
///   64 at a time, most of them of 4 KiB (the size of an HTTP connection's first read),
///   0.02 with these sizes. Each is a whole multiple of its class, so no slab has room
///   left over.
// SAFETY: jemalloc reads this NUL-terminated string under this exact name; nothing else
// defines the symbol.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] =
    b"abort_conf:true,prof:true,prof_active:false,lg_prof_sample:19,tcache_ncached_max:4097-14336:128,\
      slab_sizes:512-512:4|1280-1280:15|1792-1792:14|3072-3072:6|4096-4096:8|5120-5120:20|8192-8192:16\0";

/// Starts sampling allocations.
pub(crate) async fn activate() {
    #[cfg(feature = "jemalloc")]
    if let Some(control) = jemalloc_pprof::PROF_CTL.as_ref()
        && let Err(e) = control.lock().await.activate()
    {
        tracing::warn!(error = %e, "heap profiling could not start");
    }
}

/// What is live now, as sampled since profiling started: gzipped pprof protobuf.
pub(crate) async fn profile() -> anyhow::Result<Vec<u8>> {
    #[cfg(feature = "jemalloc")]
    {
        let control = jemalloc_pprof::PROF_CTL
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("jemalloc was built without profiling"))?;
        let mut control = control.lock().await;
        if !control.activated() {
            anyhow::bail!("heap profiling is not active");
        }
        control.dump_pprof()
    }
    #[cfg(not(feature = "jemalloc"))]
    anyhow::bail!("heap profiles need the `jemalloc` feature of oxy")
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    /// A jemalloc setting, by its `mallctl` name, of `T`'s C type.
    fn read<T: Copy>(name: &str) -> T {
        let name = format!("{name}\0");
        // SAFETY: each name read here has `T`'s C type (`size_t` as `usize`, `unsigned`
        // and `uint32_t` as `u32`); jemalloc also refuses a length that differs.
        unsafe { tikv_jemalloc_ctl::raw::read::<T>(name.as_bytes()) }
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The slab sizes in [`malloc_conf`] are the ones jemalloc uses (it reads them at its
    /// start and, on an invalid pair, stops the process).
    #[test]
    fn the_slab_sizes_are_in_force() {
        if read::<usize>("arenas.page") != 4096 {
            return; // The sizes are in pages: 4 KiB pages only.
        }
        let mut blocks = Vec::new();
        for bin in 0..read::<u32>("arenas.nbins") {
            let size = read::<usize>(&format!("arenas.bin.{bin}.size"));
            if [512, 1280, 1792, 3072, 4096, 5120, 8192].contains(&size) {
                blocks.push((size, read::<u32>(&format!("arenas.bin.{bin}.nregs"))));
            }
        }
        assert_eq!(
            blocks,
            [
                (512, 32),
                (1280, 48),
                (1792, 32),
                (3072, 8),
                (4096, 8),
                (5120, 16),
                (8192, 8)
            ]
        );
    }
}
