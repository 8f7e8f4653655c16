//! HTTP/1.1, both roles: the server loop that serves a client connection
//! (`server`) and the client that exchanges a request with a backend on
//! an upstream connection (`client`), over one codec: request heads
//! (`head`), chunked bodies (`chunked`), the response writer (`write`),
//! a streamed request body (`body`), read buffers lent per thread
//! (`pool`) and a connection with bytes put back in front (`rewind`).

mod body;
mod chunked;
pub mod client;
mod head;
pub(crate) mod pool;
mod rewind;
pub mod server;
mod write;

pub use body::RequestBody;
pub use chunked::{Decoded, Decoder, Invalid};
pub use head::{Framing, Head, Parsed, parse};
pub use rewind::Rewind;
pub use server::{Conn, Ended, Upgrade, serve};
