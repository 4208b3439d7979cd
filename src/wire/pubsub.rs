//! Pub/sub messages (0x1_): publications and subscriptions.

use bytes::Bytes;

use super::field::wire_struct;

wire_struct! {
    /// PUBLISH (0x10): one message on a topic, from publisher to subscriber.
    /// `(publisher epoch, sequence)` orders one publisher's messages; a new
    /// epoch (a restarted publisher) starts a new sequence.
    pub struct Publish {
        /// Unique per publisher epoch; lets receivers drop duplicates.
        pub message_id: u64,
        /// The publisher's epoch (changes when it restarts).
        pub epoch: u64,
        /// Position in the publisher's stream of messages for this epoch.
        pub sequence: u64,
        /// The topic (dot-separated segments).
        pub topic: String,
        /// The application payload.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// SUBSCRIBE (0x11): asks the receiver to send PUBLISH frames matching
    /// `pattern` (`*` one segment, `#` the rest). Answered by REPLY (empty
    /// payload) or ERROR.
    pub struct Subscribe {
        /// Echoed by the answer.
        pub request_id: u64,
        /// The topic pattern.
        pub pattern: String,
    }
}

wire_struct! {
    /// UNSUBSCRIBE (0x12): withdraws a subscription. Answered by REPLY (empty
    /// payload) or ERROR.
    pub struct Unsubscribe {
        /// Echoed by the answer.
        pub request_id: u64,
        /// The pattern given to SUBSCRIBE.
        pub pattern: String,
    }
}
