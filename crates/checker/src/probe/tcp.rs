//! The TCP probe: a connect that completes, then a close with `SO_LINGER`
//! 0, which sends RST instead of FIN.
//!
//! Why the reset: a normal close leaves the prober's side in TIME_WAIT for
//! 60 s, and behind Docker or Kubernetes every connection is also a
//! connection-tracking entry held 120 s after a FIN (only 10 s after an
//! RST). At 10,000 targets probed every second that is 600,000 TIME_WAIT
//! sockets wanted (the kernel caps them at `tcp_max_tw_buckets`) and a
//! full conntrack table within half a minute, which drops packets for
//! everything on the host. The probe has nothing in flight to lose, so the
//! abortive close costs nothing.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::ProbeError;

pub(super) async fn probe(addrs: &[SocketAddr]) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addrs)
        .await
        .map_err(|e| ProbeError::connect(&e))?;
    // If it cannot be set, the probe has still answered; the close is
    // merely a normal one.
    let _ = stream.set_zero_linger();
    drop(stream);
    Ok(())
}
