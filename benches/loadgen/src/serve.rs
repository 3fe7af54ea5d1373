//! The benchmark targets: a byte source that writes until its peer closes, and an echo
//! server.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves both targets until the process is killed.
pub async fn run(source: SocketAddr, echo: SocketAddr) -> anyhow::Result<String> {
    let source = TcpListener::bind(source).await?;
    let echo = TcpListener::bind(echo).await?;
    tokio::try_join!(accept(source, stream_bytes), accept(echo, echo_bytes))?;
    Ok(String::new())
}

async fn accept<F, Fut>(listener: TcpListener, serve: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream));
    }
}

async fn stream_bytes(mut stream: TcpStream) -> std::io::Result<()> {
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        stream.write_all(&chunk).await?;
    }
}

async fn echo_bytes(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
