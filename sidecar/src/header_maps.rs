//! Header maps kept for reuse on the thread that let them go. Each proxied request takes two:
//! the client's request head is parsed into one, and the response gets one for the fields the
//! sidecar adds (the app's own fields pass through as bytes); both are let go once written on.
//! An emptied map keeps its room, so taking one from here saves the allocations of a new one
//! and the frees of the old.

use std::cell::RefCell;

use http::HeaderMap;

/// Most maps kept per thread.
const KEEP: usize = 16;
/// Largest map kept (in fields it has room for); larger ones are freed.
const MAX_ROOM: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields.
pub fn take(fields: usize) -> HeaderMap {
    match FREE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Lets `map` go: emptied and kept for [`take`] on this thread, unless enough are kept or it is
/// large.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() > MAX_ROOM {
        return;
    }
    map.clear();
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = take(4);
        map.insert("x-a", HeaderValue::from_static("1"));
        let room = map.capacity();
        give_back(map);
        let again = take(2);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn large_maps_are_not_kept() {
        let map = HeaderMap::with_capacity(MAX_ROOM * 2);
        give_back(map);
        assert!(take(1).capacity() <= MAX_ROOM);
    }
}
