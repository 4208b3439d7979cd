//! The value of a subscriber record (docs/PROTOCOL.md §8.5): the patterns
//! one node subscribes to under one literal prefix, as UTF-8 text, one
//! pattern a line, sorted, joined by `\n` with no trailing newline.
//!
//! Reading is lenient: a value that is not UTF-8 holds no pattern, and a
//! line that is not a valid pattern is skipped, so a newer writer's
//! additions do not hide the patterns an older reader understands.

use bytes::Bytes;

use crate::topic::{Pattern, Topic};

/// Encodes `patterns` (already sorted and distinct, as a `BTreeSet` gives
/// them) as a subscriber record value.
pub fn encode_subscriber_value<'a>(patterns: impl IntoIterator<Item = &'a Pattern>) -> Bytes {
    let lines: Vec<&str> = patterns.into_iter().map(Pattern::as_str).collect();
    Bytes::from(lines.join("\n"))
}

/// The valid patterns of a subscriber record value.
pub fn decode_subscriber_value(value: &[u8]) -> Vec<Pattern> {
    let Ok(text) = core::str::from_utf8(value) else {
        return Vec::new();
    };
    text.split('\n')
        .filter_map(|line| Pattern::new(line).ok())
        .collect()
}

/// True when one of the patterns of a subscriber record value matches
/// `topic`.
pub(crate) fn subscriber_value_matches(value: &[u8], topic: &Topic) -> bool {
    decode_subscriber_value(value)
        .iter()
        .any(|pattern| pattern.matches(topic))
}
