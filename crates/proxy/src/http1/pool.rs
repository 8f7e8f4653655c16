//! Read buffers, lent to a connection while it has bytes to work on and
//! taken back when it goes idle, so an idle connection holds none. Each
//! thread keeps a bounded stack of them: a busy thread reuses buffers
//! without going to the allocator, and what a burst left behind is
//! capped.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// What a read asks for: most request heads fit, and the buffer grows to
/// `max_header_bytes` for those that do not.
pub const READ_SIZE: usize = 8 * 1024;
/// Buffers kept per thread (at most 512 KiB of them): enough that a busy
/// thread rarely goes to the allocator; what a burst left beyond them goes
/// back.
const KEPT: usize = 64;
/// A buffer grown past this (a large head) goes back to the allocator.
const KEEP_AT_MOST: usize = 4 * READ_SIZE;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for a read.
pub fn take() -> BytesMut {
    // `try_with`: a thread being torn down has no stack of buffers any
    // more (a body dropped then still works, through the allocator).
    let mut b = FREE
        .try_with(|f| f.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE));
    // A buffer whose bytes were all handed on may still share its memory
    // with them; `reserve` reclaims it in place when they are gone, and
    // allocates anew when they are not.
    b.reserve(READ_SIZE);
    b
}

/// Makes room for a read of at least half a buffer.
pub fn room(b: &mut BytesMut) {
    if b.capacity() - b.len() < READ_SIZE / 2 {
        b.reserve(READ_SIZE);
    }
}

/// Takes back an empty buffer.
pub fn give(b: BytesMut) {
    debug_assert!(b.is_empty());
    if !b.is_empty() || b.capacity() > KEEP_AT_MOST {
        return;
    }
    let _ = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEPT {
            f.push(b);
        }
    });
}

/// Takes back the buffer a request head was parsed in, if nothing else
/// still holds a piece of it (the request's headers usually are gone by
/// the time its answer is written; when they are not, it is freed later).
pub fn recycle(storage: Bytes) {
    if let Ok(mut b) = storage.try_into_mut() {
        b.clear();
        give(b);
    }
}
