//! The CPU profile: `/debug/pprof/profile?seconds=N` samples every thread 99 times a
//! second for N seconds (default 10, at most 300) and answers pprof protobuf, or with
//! `format=svg` a flame graph. One profile runs at a time.

use std::time::Duration;

/// Samples per second (not 100, so that sampling does not beat with periodic work).
const FREQUENCY: i32 = 99;
const DEFAULT_SECONDS: u64 = 10;
const MAX_SECONDS: u64 = 300;

/// What the query asked for.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    seconds: u64,
    svg: bool,
}

impl Request {
    /// Reads `seconds=N` and `format=pprof|svg`.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut request = Request {
            seconds: DEFAULT_SECONDS,
            svg: false,
        };
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*name {
                "seconds" => {
                    request.seconds = value
                        .parse()
                        .ok()
                        .filter(|s| (1..=MAX_SECONDS).contains(s))
                        .ok_or_else(|| {
                            format!("seconds must be a whole number from 1 to {MAX_SECONDS}")
                        })?;
                }
                "format" => {
                    request.svg = match &*value {
                        "svg" => true,
                        "pprof" => false,
                        other => return Err(format!("format {other:?}: pprof or svg")),
                    }
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(request)
    }
}

/// Runs one profile (on a blocking thread, for its whole duration) and encodes it.
pub(crate) async fn profile(request: Request) -> anyhow::Result<(&'static str, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(FREQUENCY)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the CPU profiler (is one running?): {e}"))?;
        std::thread::sleep(Duration::from_secs(request.seconds));
        let report = guard.report().build()?;
        drop(guard);
        let mut body = Vec::new();
        if request.svg {
            report.flamegraph(&mut body)?;
            return Ok(("image/svg+xml", body));
        }
        use pprof::protos::Message;
        report.pprof()?.encode(&mut body)?;
        Ok(("application/octet-stream", body))
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_and_checked() {
        assert_eq!(
            Request::parse(None),
            Ok(Request {
                seconds: 10,
                svg: false
            })
        );
        assert_eq!(
            Request::parse(Some("seconds=2&format=svg")),
            Ok(Request {
                seconds: 2,
                svg: true
            })
        );
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=x",
            "format=png",
            "other=1",
        ] {
            assert!(Request::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
