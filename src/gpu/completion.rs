//! A one-shot future completed by a wgpu callback (`map_async`): the single await point of a
//! readback. Natively the callback runs inside `device.poll`, which the caller does first, so
//! the future is ready when first polled; on the web the browser runs it when the mapping's
//! promise resolves, and the awaiting task is woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Shared<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The callback's half: [`Callback::complete`] resolves the [`Completion`].
pub(crate) struct Callback<T>(Arc<Mutex<Shared<T>>>);

/// The awaiting half: `Some(value)`, or `None` when the callback was dropped uncalled (the
/// device was lost).
pub(crate) struct Completion<T>(Arc<Mutex<Shared<T>>>);

/// A connected pair.
pub(crate) fn completion<T>() -> (Callback<T>, Completion<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        value: None,
        waker: None,
    }));
    (Callback(shared.clone()), Completion(shared))
}

impl<T> Callback<T> {
    pub fn complete(self, value: T) {
        let waker = match self.0.lock() {
            Ok(mut shared) => {
                shared.value = Some(value);
                shared.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Callback<T> {
    /// A dropped callback wakes the awaiting side, which then sees no value.
    fn drop(&mut self) {
        let waker = self.0.lock().ok().and_then(|mut s| s.waker.take());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Ok(mut shared) = self.0.lock() else {
            return Poll::Ready(None);
        };
        if let Some(value) = shared.value.take() {
            return Poll::Ready(Some(value));
        }
        // Only this half is left: the callback was dropped without a value.
        if Arc::strong_count(&self.0) == 1 {
            return Poll::Ready(None);
        }
        shared.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_and_reports_a_dropped_callback() {
        let (callback, done) = completion();
        callback.complete(7);
        assert_eq!(pollster::block_on(done), Some(7));
        let (callback, done) = completion::<u8>();
        drop(callback);
        assert_eq!(pollster::block_on(done), None);
        // Completed from another thread while the awaiting side waits.
        let (callback, done) = completion();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            callback.complete("mapped");
        });
        assert_eq!(pollster::block_on(done), Some("mapped"));
        t.join().unwrap();
    }
}
