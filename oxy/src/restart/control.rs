//! The control socket (`server.control_socket`): `oxy --config FILE --restart` connects,
//! writes `restart`, and reads one line back, `ok PID` once the successor is ready or
//! `error REASON`.

use crate::drain::Drain;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A restart asked for on the control socket, and where its outcome goes.
pub(crate) type RestartRequest = oneshot::Sender<Result<u32, String>>;

/// How long a control client may take to send its command.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the control socket at `path`, replacing a file left there by a process that
/// has exited (a live one keeps answering, and binding is refused).
pub(crate) fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "{} is the control socket of a running process",
                path.display()
            ),
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answers control clients on `listener` until a successor has taken it over: each
/// `restart` is passed to the serving loop through `restarts`, and its outcome written
/// back. Answers are connection tasks of `drain`, so the process does not exit before
/// the client has its answer.
pub(crate) async fn serve(
    listener: UnixListener,
    restarts: mpsc::Sender<RestartRequest>,
    drain: Drain,
) {
    let stop = drain.handed_over();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let restarts = restarts.clone();
        drain.spawn_connection(async move {
            if let Err(e) = answer(stream, &restarts).await {
                tracing::debug!(error = %e, "control client");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    restarts: &mpsc::Sender<RestartRequest>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut command = String::new();
    // One short line: `restart`.
    let mut read = BufReader::new(tokio::io::AsyncReadExt::take(read, 64));
    if tokio::time::timeout(COMMAND_TIMEOUT, read.read_line(&mut command))
        .await
        .is_err()
    {
        return write.write_all(b"error no command within 5s\n").await;
    }
    let reply = match command.trim() {
        "restart" => {
            let (outcome, result) = oneshot::channel();
            let result = match restarts.send(outcome).await {
                Ok(()) => result
                    .await
                    .unwrap_or_else(|_| Err("this process is stopping".into())),
                Err(_) => Err("this process is stopping".into()),
            };
            match result {
                Ok(pid) => format!("ok {pid}\n"),
                Err(reason) => format!("error {reason}\n"),
            }
        }
        other => format!("error unknown command {other:?} (try restart)\n"),
    };
    write.write_all(reply.as_bytes()).await
}

/// `--restart`: asks the process behind the control socket at `path` to restart and
/// waits for the outcome. Returns the successor's process id, or the reason.
pub(crate) async fn request_restart(path: &Path) -> Result<u32, String> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("cannot reach the control socket {}: {e}", path.display()))?;
    stream
        .write_all(b"restart\n")
        .await
        .map_err(|e| format!("control socket: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .await
        .map_err(|e| format!("control socket: {e}"))?;
    let reply = reply.trim();
    if let Some(pid) = reply.strip_prefix("ok ") {
        return pid
            .parse()
            .map_err(|_| format!("the control socket answered {reply:?}"));
    }
    Err(reply
        .strip_prefix("error ")
        .unwrap_or(if reply.is_empty() {
            "the process closed the control socket without an answer"
        } else {
            reply
        })
        .to_string())
}
