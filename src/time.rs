//! Clocks that work on the web: `std::time::Instant::now()` and `SystemTime::now()` panic on
//! wasm32-unknown-unknown, so the library takes them from here (`web-time` there, std elsewhere).

#[cfg(not(target_arch = "wasm32"))]
pub use std::time::{Instant, SystemTime, UNIX_EPOCH};
#[cfg(target_arch = "wasm32")]
pub use web_time::{Instant, SystemTime, UNIX_EPOCH};
