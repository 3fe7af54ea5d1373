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
///   each size class from 5 KiB to 14 KiB, where jemalloc's default is 20. These
///   classes have one to four blocks per slab (one for 8 KiB). A proxied HTTP/1.1
///   request allocates its boxed future (5 KiB) and, often, the upstream connection's
///   next 8 KiB read buffer, and frees them when it ends; with more of them in flight
///   than the cache of 20 held, jemalloc made and unmade a slab about once per request.
// SAFETY: jemalloc reads this NUL-terminated string under this exact name; nothing else
// defines the symbol.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] =
    b"abort_conf:true,prof:true,prof_active:false,lg_prof_sample:19,tcache_ncached_max:4097-14336:128\0";

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
