//! Futures boxed where they are made. A future made and then boxed is built on the stack and
//! copied into its box, kilobytes for a request's or a connection's; with the box taken first,
//! the compiler builds it there.

use std::pin::Pin;

/// What `make` returns, pinned in a box taken before `make` runs.
#[inline(always)]
pub fn boxed<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    let space = Box::new_uninit();
    Box::into_pin(Box::write(space, make()))
}
