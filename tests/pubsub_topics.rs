//! Topic matching against a reference matcher, and the routing fact that a
//! matching pattern's literal prefix is always one of the topic's prefixes.

use macula::pubsub::{Pattern, Topic};
use proptest::prelude::*;

/// The reference: a direct recursive reading of the rules on segment lists.
fn reference(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (None, None) => true,
        (Some((&"#", _)), _) => true,
        (Some((&"*", p)), Some((_, t))) => reference(p, t),
        (Some((p0, p)), Some((t0, t))) => p0 == t0 && reference(p, t),
        _ => false,
    }
}

fn topic_segments() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..6)
}

fn pattern_segments() -> impl Strategy<Value = Vec<&'static str>> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 0..5),
        any::<bool>(),
    )
        .prop_filter_map("a pattern has a segment", |(mut segments, hash)| {
            if hash {
                segments.push("#");
            }
            (!segments.is_empty()).then_some(segments)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_like_the_reference(p in pattern_segments(), t in topic_segments()) {
        let pattern = Pattern::new(&p.join(".")).unwrap();
        let topic = Topic::new(&t.join(".")).unwrap();
        prop_assert_eq!(pattern.matches(&topic), reference(&p, &t));
    }

    #[test]
    fn a_match_is_found_under_one_of_the_topic_prefixes(
        p in pattern_segments(),
        t in topic_segments(),
    ) {
        let pattern = Pattern::new(&p.join(".")).unwrap();
        let topic = Topic::new(&t.join(".")).unwrap();
        if pattern.matches(&topic) {
            prop_assert!(topic.prefixes().any(|prefix| prefix == pattern.literal_prefix()));
        }
    }
}
