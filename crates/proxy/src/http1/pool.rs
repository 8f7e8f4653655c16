//! Read buffers, lent to a connection while it has bytes to work on and
//! taken back when it goes idle, so an idle connection holds none. Each
//! thread keeps a bounded stack of them: a busy thread reuses buffers
//! without going to the allocator, and what a burst left behind is
//! capped.
//!
//! Header maps the same way: a request's and a response's map each cost two
//! allocations (index and entries) when made new, the two largest items
//! of an HTTP/1 request's allocations (dhat). A map is taken when a head is
//! parsed and given back, cleared, once the head has been written out.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

/// What a read asks for: most request heads fit, and the buffer grows to
/// `max_header_bytes` for those that do not.
pub const READ_SIZE: usize = 8 * 1024;
/// Buffers kept per thread (at most 512 KiB of them): enough that a busy
/// thread rarely goes to the allocator; what a burst left beyond them goes
/// back.
const KEPT: usize = 64;
/// A buffer grown past this (a large head) goes back to the allocator.
const KEEP_AT_MOST: usize = 4 * READ_SIZE;

/// Header maps kept per thread.
const MAPS_KEPT: usize = 64;
/// A map with room for more fields than this (a head with very many) goes
/// back to the allocator.
const MAP_KEEP_AT_MOST: usize = 128;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
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

/// An empty header map with room for `fields` without growing.
pub fn header_map(fields: usize) -> HeaderMap {
    let mut map = MAPS
        .try_with(|m| m.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    map.reserve(fields);
    map
}

/// Takes back a map whose head has been written (or is no longer needed).
/// Its values are dropped now, so the buffer they were slices of can be
/// reused sooner.
pub fn give_map(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAP_KEEP_AT_MOST {
        return;
    }
    map.clear();
    let _ = MAPS.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < MAPS_KEPT {
            m.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{self, HeaderValue};

    #[test]
    fn a_map_comes_back_empty_with_its_room() {
        let mut map = header_map(8);
        map.insert(header::HOST, HeaderValue::from_static("a"));
        map.append(header::VIA, HeaderValue::from_static("b"));
        let room = map.capacity();
        give_map(map);
        let again = header_map(4);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room, "the same map, its room kept");
    }

    #[test]
    fn a_map_grown_past_the_limit_is_not_kept() {
        while MAPS.with(|m| m.borrow_mut().pop()).is_some() {}
        give_map(HeaderMap::with_capacity(MAP_KEEP_AT_MOST * 2));
        give_map(HeaderMap::new());
        assert_eq!(MAPS.with(|m| m.borrow().len()), 0);
    }
}
