//! HTTP/1.1, both roles: the server loop that serves a client connection
//! with a [`Handler`] (`server`) and the client that exchanges a request
//! with a backend on an upstream connection (`client`), over one codec:
//! request and response heads (`head`), a response head passed back as
//! the backend sent it (`raw`), one description of a body's
//! framing (`framing`), the chunked coding both ways (`chunked`), the
//! response writer (`write`), a streamed request body (`body`), read
//! buffers lent per thread (`pool`) and a connection with bytes put back
//! in front (`rewind`).

mod body;
mod chunked;
pub mod client;
mod framing;
mod head;
pub(crate) mod pool;
pub mod raw;
mod rewind;
pub mod server;
mod write;

pub use body::RequestBody;
pub use chunked::{Decoded, Decoder, Invalid};
pub use framing::Framing;
pub use head::{Head, Parsed, Scanned, parse, parse_response, scan_response};
pub use rewind::Rewind;
pub use server::{Conn, Ended, Handler, Upgrade, serve};
