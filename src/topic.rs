//! Topics and topic patterns: validation, matching, and the DHT names a
//! subscription is published under and a publisher looks up. RPC procedure
//! names follow the same rules (a procedure name is a [`Topic`]).
//!
//! A topic is dot-separated segments (`sensors.kitchen.temp`). A pattern is a
//! topic whose segments may also be `*` (exactly one segment) or, as the last
//! segment only, `#` (the rest of the topic: **zero or more** segments, as in
//! MQTT and AMQP, so `sensors.#` matches `sensors` itself too). A wildcard is a
//! whole segment: `sens*` is refused.
//!
//! Routing rests on one fact: a pattern matches a topic only if the pattern's
//! [longest literal prefix](Pattern::literal_prefix) (its segments before the
//! first wildcard) is a [prefix](Topic::prefixes) of the topic, segment by
//! segment. So a subscriber publishes its pattern under that prefix and a
//! publisher looks up every prefix of its topic, from the empty one (where
//! `*.temp` and `#` live) to the whole topic. Topics and patterns carry no
//! realm: the realm goes into the DHT key ([`crate::id::RecordKey`]).

use core::fmt;
use std::sync::Arc;

/// Longest topic or pattern in bytes.
pub const MAX_LEN: usize = 255;

/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 16;

/// What is wrong with a topic or a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty, or longer than [`MAX_LEN`] bytes.
    #[error("{text:?} is {len} bytes; a topic or pattern must be 1..={MAX_LEN}")]
    Length {
        /// The rejected text.
        text: String,
        /// Its length in bytes.
        len: usize,
    },
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("{text:?} has {count} segments; at most {MAX_SEGMENTS} are allowed")]
    TooManySegments {
        /// The rejected text.
        text: String,
        /// How many segments it has.
        count: usize,
    },
    /// An empty segment (a leading, trailing or doubled dot).
    #[error("{text:?} has an empty segment (a leading, trailing or doubled '.')")]
    EmptySegment {
        /// The rejected text.
        text: String,
    },
    /// A character that is never allowed: whitespace, a control character,
    /// or a wildcard character inside a segment of other characters.
    #[error("{text:?}: segment {segment:?} may not contain {ch:?}")]
    BadCharacter {
        /// The rejected text.
        text: String,
        /// The offending segment.
        segment: String,
        /// The offending character.
        ch: char,
    },
    /// A wildcard segment in a topic (only patterns have wildcards).
    #[error("topic {text:?} has the wildcard segment {segment:?}; only patterns may")]
    WildcardInTopic {
        /// The rejected text.
        text: String,
        /// The wildcard segment.
        segment: String,
    },
    /// `#` somewhere other than the last segment.
    #[error("pattern {text:?}: '#' may only be the last segment")]
    HashNotLast {
        /// The rejected text.
        text: String,
    },
}

/// One segment of a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    /// `*`: exactly one segment.
    One,
    /// `#`: zero or more segments (last only).
    Rest,
}

impl<'a> Segment<'a> {
    fn parse(segment: &'a str) -> Self {
        match segment {
            "*" => Segment::One,
            "#" => Segment::Rest,
            literal => Segment::Literal(literal),
        }
    }
}

/// Checks what topics and patterns share: length, segment count, no empty
/// segment, no whitespace or control character, wildcards only as whole
/// segments.
fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() || text.len() > MAX_LEN {
        return Err(TopicError::Length {
            text: text.into(),
            len: text.len(),
        });
    }
    let count = text.split('.').count();
    if count > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments {
            text: text.into(),
            count,
        });
    }
    for segment in text.split('.') {
        if segment.is_empty() {
            return Err(TopicError::EmptySegment { text: text.into() });
        }
        let wildcard = segment == "*" || segment == "#";
        if segment.is_ascii() && !segment.bytes().any(|b| bad_ascii(b, wildcard)) {
            // The common case, byte by byte; other text goes char by char.
            continue;
        }
        let bad = segment.chars().find(|&c| {
            c.is_whitespace() || c.is_control() || (!wildcard && (c == '*' || c == '#'))
        });
        if let Some(ch) = bad {
            return Err(TopicError::BadCharacter {
                text: text.into(),
                segment: segment.into(),
                ch,
            });
        }
    }
    Ok(())
}

/// Whether the ASCII byte `b` has no place in a segment (a `wildcard` one
/// or not): whitespace and control characters are all at or below the space
/// but DEL, and `*` and `#` are whole segments or nothing.
fn bad_ascii(b: u8, wildcard: bool) -> bool {
    b <= b' ' || b == 0x7f || (!wildcard && (b == b'*' || b == b'#'))
}

/// A concrete topic: what a message is published on. Cloning one is cheap
/// (the text is shared): a publication's topic is held once per subscriber
/// queue and carry-over ring.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `text` as a topic: 1..=[`MAX_LEN`] bytes, at most
    /// [`MAX_SEGMENTS`] non-empty dot-separated segments, no whitespace,
    /// control characters, `*` or `#`.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check_common(text)?;
        if let Some(segment) = text.split('.').find(|s| *s == "*" || *s == "#") {
            return Err(TopicError::WildcardInTopic {
                text: text.into(),
                segment: segment.into(),
            });
        }
        Ok(Self(text.into()))
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic text, shared with this topic (no copy): what a PUBLISH
    /// frame carries.
    pub fn to_shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// Every prefix of the topic a publisher looks up, shortest first: the
    /// empty prefix, then one segment, two, ..., the whole topic.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        let ends = self
            .0
            .match_indices('.')
            .map(|(i, _)| i)
            .chain([self.0.len()]);
        core::iter::once("").chain(ends.map(|end| &self.0[..end]))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription pattern: a topic whose segments may be `*` or, last, `#`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Pattern(String);

impl Pattern {
    /// Validates `text` as a pattern: the rules of [`Topic::new`], except that
    /// a segment may be `*`, and the last one `#`.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check_common(text)?;
        let count = text.split('.').count();
        if text.split('.').take(count - 1).any(|s| s == "#") {
            return Err(TopicError::HashNotLast { text: text.into() });
        }
        Ok(Self(text.into()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        self.0.split('.').map(Segment::parse)
    }

    /// The segments before the first wildcard, joined by dots: where the
    /// subscription is published. Empty when the pattern starts with a
    /// wildcard; the whole pattern when it has none.
    pub fn literal_prefix(&self) -> &str {
        let mut end = 0;
        for (i, segment) in self.0.split('.').enumerate() {
            if !matches!(Segment::parse(segment), Segment::Literal(_)) {
                break;
            }
            end = if i == 0 {
                segment.len()
            } else {
                end + 1 + segment.len()
            };
        }
        &self.0[..end]
    }

    /// True when the pattern matches `topic`.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic = topic.0.split('.');
        for segment in self.segments() {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if topic.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if topic.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(t: &str) -> Topic {
        Topic::new(t).unwrap()
    }

    fn pattern(p: &str) -> Pattern {
        Pattern::new(p).unwrap()
    }

    #[test]
    fn matching_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            ("a", "a", true),
            ("a", "b", false),
            ("a", "a.b", false),
            ("a.b", "a", false),
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b.d", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("a.*", "b.c", false),
            ("*.b", "a.b", true),
            ("*.b", "a.c", false),
            ("*.*", "a.b", true),
            ("*.*", "a", false),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.x.d", false),
            ("a.*.c", "a.c", false),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("a.#", "a", true),
            ("a.#", "a.b", true),
            ("a.#", "a.b.c.d", true),
            ("a.#", "b", false),
            ("a.#", "ab", false),
            ("a.b.#", "a", false),
            ("a.b.#", "a.b", true),
            ("a.b.#", "a.c.b", false),
            ("*.#", "a", true),
            ("*.#", "a.b.c", true),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("a.*.#", "a.b.c.d", true),
            ("*.b.#", "x.b.y", true),
            ("*.b.#", "x.c.y", false),
            ("sensors.*.temp", "sensors.kitchen.temp", true),
            ("sensors.*.temp", "sensors.kitchen.humidity", false),
            ("sensors.#", "sensors.kitchen.temp", true),
            ("sensor.#", "sensors.kitchen", false),
        ];
        for &(p, t, expected) in cases {
            assert_eq!(pattern(p).matches(&topic(t)), expected, "{p} vs {t}");
        }
    }

    #[test]
    fn literal_prefix_table() {
        for (p, prefix) in [
            ("a", "a"),
            ("a.b.c", "a.b.c"),
            ("a.*", "a"),
            ("a.b.*.d", "a.b"),
            ("a.b.#", "a.b"),
            ("*", ""),
            ("#", ""),
            ("*.b.c", ""),
            ("long.segments.*", "long.segments"),
        ] {
            assert_eq!(pattern(p).literal_prefix(), prefix, "{p}");
        }
    }

    #[test]
    fn prefixes_go_from_empty_to_whole() {
        assert_eq!(topic("a").prefixes().collect::<Vec<_>>(), ["", "a"]);
        assert_eq!(
            topic("ab.c.def").prefixes().collect::<Vec<_>>(),
            ["", "ab", "ab.c", "ab.c.def"]
        );
    }

    #[test]
    fn the_ascii_rule_is_the_char_rule_for_every_ascii_byte() {
        for b in 0..=0x7f_u8 {
            let c = char::from(b);
            for wildcard in [false, true] {
                let by_char =
                    c.is_whitespace() || c.is_control() || (!wildcard && (c == '*' || c == '#'));
                assert_eq!(bad_ascii(b, wildcard), by_char, "{b:#x} {wildcard}");
            }
        }
    }

    #[test]
    fn validation_table() {
        let long = "a".repeat(MAX_LEN + 1);
        let deep = vec!["a"; MAX_SEGMENTS + 1].join(".");
        // Each bad topic and the start of its error's Debug form.
        let topic_errors = [
            ("", "Length { text: \"\", len: 0 }"),
            (&long, "Length"),
            (&deep, "TooManySegments"),
            (".a", "EmptySegment"),
            ("a.", "EmptySegment"),
            ("a..b", "EmptySegment"),
            ("a b", "BadCharacter"),
            ("a\nb", "BadCharacter"),
            ("a*", "BadCharacter"),
            ("a.b#", "BadCharacter"),
            ("a.*", "WildcardInTopic"),
            ("#", "WildcardInTopic"),
        ];
        for (text, expected) in topic_errors {
            let err = format!("{:?}", Topic::new(text).unwrap_err());
            assert!(err.starts_with(expected), "topic {text:?}: {err}");
        }
        for text in ["a.#.b", "#.a", "#.#"] {
            assert_eq!(
                Pattern::new(text),
                Err(TopicError::HashNotLast { text: text.into() })
            );
        }
        for text in ["a*.b", "*a", "a.##", "a. b"] {
            assert!(
                matches!(Pattern::new(text), Err(TopicError::BadCharacter { .. })),
                "{text}"
            );
        }
        for text in ["a", "a.b-c_d:e@f", "é.ü", &"a".repeat(MAX_LEN)] {
            assert!(Topic::new(text).is_ok(), "{text}");
            assert!(Pattern::new(text).is_ok(), "{text}");
        }
        let deepest = vec!["*"; MAX_SEGMENTS].join(".");
        assert!(Pattern::new(&deepest).is_ok());
    }
}
