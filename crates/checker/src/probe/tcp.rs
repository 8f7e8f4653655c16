//! The TCP probe: a connect that completes.

use tokio::net::TcpStream;

pub(super) async fn probe(host: &str, port: u16) -> Result<(), String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    drop(stream);
    Ok(())
}
