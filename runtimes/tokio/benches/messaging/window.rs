//! The publish workloads' flow control, the same for macula and for the plain-quinn floor:
//! the publisher stays at most a window of messages ahead of what the receiver has read,
//! and while it is that far ahead it sleeps until the receiver has read a quarter window
//! more, rather than spinning (a spinning publisher takes a core from the two workers that
//! run the nodes on a two-core machine).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Messages read, and the wake-up of a publisher waiting for room.
pub struct Window {
    size: u64,
    /// Every how many messages read the publisher is told.
    step: u64,
    read: AtomicU64,
    room: Notify,
}

impl Window {
    /// A window of `size` messages (at least 1).
    pub fn new(size: u64) -> Self {
        let size = size.max(1);
        Self {
            size,
            step: (size / 4).max(1),
            read: AtomicU64::new(0),
            room: Notify::new(),
        }
    }

    /// Messages read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// The receiver read one more message.
    pub fn read_one(&self) {
        let read = self.read.fetch_add(1, Ordering::Relaxed) + 1;
        if read % self.step == 0 {
            self.room.notify_one();
        }
    }

    /// Waits until message `sent` (counting from 0) is within the window of what was read.
    pub async fn room_for(&self, sent: u64) {
        while sent - self.read().min(sent) >= self.size {
            // A notification sent before this await is kept as a permit: none is lost.
            self.room.notified().await;
        }
    }
}
