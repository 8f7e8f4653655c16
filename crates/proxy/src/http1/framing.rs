//! How a message body is delimited on the wire (RFC 9112 section 6), one
//! description for both roles and both directions: what a request or
//! response head read off the wire says, and what the proxy writes.

/// A body's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body follows (a bodiless request; a `HEAD` answer, `1xx`, `204`,
    /// `304`; a zero length).
    Empty,
    /// Exactly this many bytes (counts down as a body is read).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response only: until the connection closes.
    Close,
    /// A response only: `101`, after which the connection speaks another
    /// protocol.
    Upgrade,
}
