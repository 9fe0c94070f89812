//! Topic patterns: which topics a token's `sse.subscribe`/`sse.publish` claim or the
//! `--public-topics` flag covers.
//!
//! A pattern is one of:
//! - `*` alone: every topic, the default stream (`""`) included;
//! - a name ending in `*`: every topic that starts with what comes before the `*`
//!   (`shop/7/*` covers `shop/7/` and `shop/7/orders/1`, not `shop/7` nor `shop/70`);
//! - anything else: exactly that topic name (`""` is the default stream). A `*` anywhere but at
//!   the end is an ordinary character.
//!
//! Matching is byte-wise on the names as the request gives them (after percent-decoding): no
//! case folding, no normalisation, no `..` or path semantics.

/// One topic pattern (see the module docs for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// `*`: every topic.
    Any,
    /// `prefix*`: every topic starting with `prefix` (which may be empty only via `Any`).
    Prefix(String),
    /// An exact topic name.
    Exact(String),
}

impl TopicPattern {
    /// Parses a pattern; every string is a valid pattern.
    pub fn parse(pattern: &str) -> TopicPattern {
        match pattern.strip_suffix('*') {
            Some("") => TopicPattern::Any,
            Some(prefix) => TopicPattern::Prefix(prefix.to_owned()),
            None => TopicPattern::Exact(pattern.to_owned()),
        }
    }

    /// Whether `topic` is covered by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Any => true,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
            TopicPattern::Exact(name) => topic == name,
        }
    }
}

/// A set of patterns; a topic is covered when any of them matches. Empty covers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPatterns(Vec<TopicPattern>);

impl TopicPatterns {
    /// Parses every pattern in `patterns`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> TopicPatterns {
        TopicPatterns(
            patterns
                .iter()
                .map(|p| TopicPattern::parse(p.as_ref()))
                .collect(),
        )
    }

    /// No pattern: covers no topic.
    pub fn none() -> TopicPatterns {
        TopicPatterns(Vec::new())
    }

    /// Whether any pattern covers `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        self.0.iter().any(|p| p.matches(topic))
    }

    /// Whether there is no pattern at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn star_alone_covers_every_topic_and_the_default_stream() {
        let p = TopicPattern::parse("*");
        assert_eq!(p, TopicPattern::Any);
        for t in ["", "user/42", "*", "a*b"] {
            assert!(p.matches(t), "{t:?}");
        }
    }

    #[test]
    fn trailing_star_is_a_prefix() {
        let p = TopicPattern::parse("shop/7/*");
        assert!(p.matches("shop/7/"));
        assert!(p.matches("shop/7/orders"));
        assert!(p.matches("shop/7/orders/1"));
        assert!(!p.matches("shop/7"));
        assert!(!p.matches("shop/70"));
        assert!(!p.matches("shop/"));
        assert!(!p.matches(""));
        // Not a glob: no `*` in the middle, no case folding.
        assert!(!TopicPattern::parse("Shop/*").matches("shop/1"));
        assert!(TopicPattern::parse("user*").matches("users"));
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let p = TopicPattern::parse("user/42");
        assert!(p.matches("user/42"));
        for t in ["user/4", "user/420", "user/42/", "USER/42", ""] {
            assert!(!p.matches(t), "{t:?}");
        }
        // A star elsewhere is a literal character.
        let mid = TopicPattern::parse("a*b");
        assert!(mid.matches("a*b"));
        assert!(!mid.matches("axb"));
        // The empty pattern is the default stream.
        let default = TopicPattern::parse("");
        assert!(default.matches(""));
        assert!(!default.matches("x"));
    }

    #[test]
    fn a_set_is_the_union_and_empty_covers_nothing() {
        let set = TopicPatterns::parse(&["user/42", "shop/7/*"]);
        assert!(set.matches("user/42"));
        assert!(set.matches("shop/7/x"));
        assert!(!set.matches("user/43"));
        assert!(!set.matches(""));
        assert!(!TopicPatterns::none().matches(""));
        assert!(TopicPatterns::none().is_empty());
        assert!(TopicPatterns::parse(&[""]).matches(""));
    }

    /// A reference definition of matching, written differently from the real one.
    fn covered_by_reference(pattern: &str, topic: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        if pattern.ends_with('*') {
            let prefix = &pattern.as_bytes()[..pattern.len() - 1];
            return topic.len() >= prefix.len() && &topic.as_bytes()[..prefix.len()] == prefix;
        }
        pattern == topic
    }

    fn name() -> impl Strategy<Value = String> {
        // Small alphabet so that prefixes and near-misses are common.
        proptest::string::string_regex("[ab/*]{0,6}").expect("valid regex")
    }

    proptest! {
        /// A set never covers a topic that none of its patterns matches (and covers every topic
        /// one of them does).
        #[test]
        fn set_covers_exactly_what_some_pattern_covers(
            patterns in proptest::collection::vec(name(), 0..5),
            topic in name(),
        ) {
            let set = TopicPatterns::parse(&patterns);
            let expected = patterns.iter().any(|p| covered_by_reference(p, &topic));
            prop_assert_eq!(set.matches(&topic), expected);
        }
    }
}
