//! Who may use which name: allow-lists of node ids per name pattern, plus a
//! callback for code. RPC keeps one for the callers of its procedures
//! ([`RpcConfig::callers`](crate::rpc::RpcConfig::callers)) and pub/sub one
//! for the publishers of the topics it receives
//! ([`PubSubConfig::publishers`](crate::pubsub::PubSubConfig::publishers)).
//!
//! **The rule.** A name (a procedure or a topic; both follow the
//! [`crate::topic`] rules) that no rule's pattern matches is open to every
//! peer. A name that one or more rules match is open only to the node ids
//! those rules list (their union). When a callback is set it is asked as
//! well, and must also say yes. A name that is not a valid topic is open to
//! nobody once any rule or callback is set. The default has no rule and no
//! callback: everyone may use everything, as before authorization existed.
//!
//! Node ids are free to make, so an allow-list is the only kind of rule: a
//! deny-list of ids would be side-stepped by a fresh identity.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::id::NodeId;
use crate::topic::{Pattern, Topic, TopicError};

/// Decides which peer may use which name (call a procedure, publish on a
/// topic). A closure `Fn(&NodeId, &str) -> bool` will do.
pub trait Authorize: Send + Sync {
    /// True when `peer` may use `name`.
    fn authorize(&self, peer: &NodeId, name: &str) -> bool;
}

impl<F: Fn(&NodeId, &str) -> bool + Send + Sync> Authorize for F {
    fn authorize(&self, peer: &NodeId, name: &str) -> bool {
        self(peer, name)
    }
}

/// An allow-list per name pattern, and an optional callback (see the module
/// docs for the rule). Cheap to clone: the callback is shared.
#[derive(Clone, Default)]
pub struct AccessList {
    rules: Vec<(Pattern, BTreeSet<NodeId>)>,
    check: Option<Arc<dyn Authorize>>,
}

/// What is wrong with a rule's text (`PATTERN=ID,ID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No `=` between the pattern and the ids.
    #[error("{0:?} is not PATTERN=NODEID,NODEID")]
    Form(String),
    /// The pattern is not valid.
    #[error(transparent)]
    Pattern(#[from] TopicError),
    /// An id is not 64 hex digits.
    #[error(transparent)]
    Id(#[from] crate::id::NodeIdParseError),
}

impl AccessList {
    /// Everyone may use everything (the default).
    pub fn open() -> Self {
        Self::default()
    }

    /// Opens the names `pattern` matches to `ids` (and to those of any other
    /// rule matching them), and closes them to everyone else.
    pub fn allow(mut self, pattern: Pattern, ids: impl IntoIterator<Item = NodeId>) -> Self {
        self.rules.push((pattern, ids.into_iter().collect()));
        self
    }

    /// Asks `check` as well: a peer must pass both the rules and the
    /// callback. Replaces an earlier callback.
    pub fn check(mut self, check: impl Authorize + 'static) -> Self {
        self.check = Some(Arc::new(check));
        self
    }

    /// Adds a rule written `PATTERN=ID,ID` (ids in hex, as `macula node`
    /// prints them; no id closes the names to everyone).
    pub fn allow_text(self, rule: &str) -> Result<Self, RuleError> {
        let (pattern, ids) = parse_rule(rule)?;
        Ok(self.allow(pattern, ids))
    }

    /// True when neither a rule nor a callback is set.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.check.is_none()
    }

    /// True when `peer` may use `name`.
    pub fn allows(&self, peer: &NodeId, name: &str) -> bool {
        if self.is_open() {
            return true;
        }
        let Ok(topic) = Topic::new(name) else {
            return false;
        };
        let mut matched = self
            .rules
            .iter()
            .filter(|(pattern, _)| pattern.matches(&topic))
            .peekable();
        let listed = matched.peek().is_none() || matched.any(|(_, ids)| ids.contains(peer));
        listed && self.check.as_ref().is_none_or(|c| c.authorize(peer, name))
    }
}

/// Reads `PATTERN=ID,ID`.
fn parse_rule(rule: &str) -> Result<(Pattern, Vec<NodeId>), RuleError> {
    let (pattern, ids) = rule
        .split_once('=')
        .ok_or_else(|| RuleError::Form(rule.chars().take(80).collect()))?;
    let pattern = Pattern::new(pattern.trim())?;
    let ids = ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<NodeId>, _>>()?;
    Ok((pattern, ids))
}

impl fmt::Debug for AccessList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessList")
            .field("rules", &self.rules)
            .field("check", &self.check.as_ref().map(|_| "set"))
            .finish()
    }
}

/// Equal rules and the same callback (the same shared closure, or none).
impl PartialEq for AccessList {
    fn eq(&self, other: &Self) -> bool {
        let same_check = match (&self.check, &other.check) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.rules == other.rules && same_check
    }
}

impl Eq for AccessList {}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> NodeId {
        NodeId::from_bytes([byte; 32])
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    #[test]
    fn open_by_default() {
        let open = AccessList::open();
        assert!(open.is_open());
        assert!(open.allows(&id(1), "anything.at.all"));
        assert!(open.allows(&id(1), "not a topic"), "nothing to check");
    }

    #[test]
    fn a_rule_closes_what_it_matches_to_everyone_but_its_ids() {
        let list = AccessList::open()
            .allow(pattern("admin.#"), [id(1)])
            .allow(pattern("admin.reboot"), [id(2)]);
        assert!(list.allows(&id(1), "admin.users"));
        assert!(!list.allows(&id(2), "admin.users"));
        assert!(
            list.allows(&id(2), "admin.reboot"),
            "the union of matching rules"
        );
        assert!(list.allows(&id(1), "admin.reboot"));
        assert!(
            list.allows(&id(3), "public.echo"),
            "unmatched names stay open"
        );
        assert!(!list.allows(&id(1), "bad name"), "invalid names are closed");
    }

    #[test]
    fn the_callback_must_agree_too() {
        let list = AccessList::open()
            .allow(pattern("a.*"), [id(1), id(2)])
            .check(|peer: &NodeId, name: &str| *peer != id(2) && name != "b");
        assert!(list.allows(&id(1), "a.x"));
        assert!(
            !list.allows(&id(2), "a.x"),
            "listed, but the callback says no"
        );
        assert!(!list.allows(&id(3), "b"));
        assert!(list.allows(&id(3), "c"));
        assert_eq!(list.clone(), list, "a clone shares the callback");
    }

    #[test]
    fn rules_parse_from_text() {
        let one = id(0xab).to_string();
        let two = id(0x0c).to_string();
        let list = AccessList::open()
            .allow_text(&format!("jobs.* = {one}, {two}"))
            .unwrap()
            .allow_text("secret=")
            .unwrap();
        assert!(list.allows(&id(0xab), "jobs.run"));
        assert!(list.allows(&id(0x0c), "jobs.run"));
        assert!(!list.allows(&id(1), "jobs.run"));
        assert!(!list.allows(&id(0xab), "secret"), "no id: closed to all");
        let no_eq = AccessList::open().allow_text("jobs.*").unwrap_err();
        assert!(matches!(no_eq, RuleError::Form(_)));
        let bad_id = AccessList::open().allow_text("jobs=xyz").unwrap_err();
        assert!(matches!(bad_id, RuleError::Id(_)));
        let bad_pattern = AccessList::open().allow_text("a.#.b=").unwrap_err();
        assert!(matches!(bad_pattern, RuleError::Pattern(_)));
    }
}
