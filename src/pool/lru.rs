//! Intrusive doubly linked lists threaded through a slab by index.
//!
//! The pool keeps its entries in a `Vec` and links the idle ones into one
//! list per direction: the front is the least recently used entry and,
//! because entries are appended when they become idle, also the one whose
//! idle deadline comes first. Every operation is O(1) and allocates nothing:
//! the links live inside the entries themselves.

/// The index that marks "no entry" (the ends of a list).
const NIL: u32 = u32::MAX;

/// The `prev` of an entry that is in no list (a lone entry in a list has
/// `prev == next == NIL`, so "unlinked" needs a mark of its own). Slab
/// indices stay far below it: the pool's caps are validated.
const DETACHED: u32 = u32::MAX - 1;

/// The links of one slab entry: 8 bytes, so an entry's hot fields fit one
/// cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    /// The links of an entry that is in no list.
    pub(crate) const UNLINKED: Link = Link {
        prev: DETACHED,
        next: DETACHED,
    };

    /// Whether the entry is in a list.
    pub(crate) fn is_linked(&self) -> bool {
        self.prev != DETACHED
    }
}

/// A slab element that can be linked into a [`List`].
pub(crate) trait Linked {
    /// The element's links.
    fn link(&self) -> &Link;
    /// The element's links, to change them.
    fn link_mut(&mut self) -> &mut Link;
}

/// A doubly linked list of slab indices, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for List {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

fn some(index: u32) -> Option<u32> {
    (index != NIL).then_some(index)
}

impl List {
    /// The oldest entry.
    pub(crate) fn front(&self) -> Option<u32> {
        some(self.head)
    }

    /// How many entries are linked.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends entry `index`, which must be unlinked, as the newest.
    pub(crate) fn push_back<T: Linked>(&mut self, nodes: &mut [T], index: u32) {
        debug_assert!(!nodes[index as usize].link().is_linked());
        *nodes[index as usize].link_mut() = Link {
            prev: self.tail,
            next: NIL,
        };
        match some(self.tail) {
            Some(tail) => nodes[tail as usize].link_mut().next = index,
            None => self.head = index,
        }
        self.tail = index;
        self.len += 1;
    }

    /// Takes entry `index`, which must be in this list, out of it.
    pub(crate) fn unlink<T: Linked>(&mut self, nodes: &mut [T], index: u32) {
        let Link { prev, next } = *nodes[index as usize].link();
        debug_assert!(prev != DETACHED);
        match some(prev) {
            Some(prev) => nodes[prev as usize].link_mut().next = next,
            None => self.head = next,
        }
        match some(next) {
            Some(next) => nodes[next as usize].link_mut().prev = prev,
            None => self.tail = prev,
        }
        *nodes[index as usize].link_mut() = Link::UNLINKED;
        self.len -= 1;
    }

    /// The linked indices, oldest first (O(n): for consistency checks).
    pub(crate) fn iter<'a, T: Linked>(&self, nodes: &'a [T]) -> impl Iterator<Item = u32> + 'a {
        let mut at = self.head;
        core::iter::from_fn(move || {
            let here = some(at)?;
            at = nodes[here as usize].link().next;
            Some(here)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node(Link);

    impl Linked for Node {
        fn link(&self) -> &Link {
            &self.0
        }
        fn link_mut(&mut self) -> &mut Link {
            &mut self.0
        }
    }

    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(|_| Node(Link::UNLINKED)).collect()
    }

    fn order(list: &List, nodes: &[Node]) -> Vec<u32> {
        list.iter(nodes).collect()
    }

    #[test]
    fn push_back_appends_and_unlink_removes_from_anywhere() {
        let mut slab = nodes(4);
        let mut list = List::default();
        for i in [2, 0, 3, 1] {
            list.push_back(&mut slab, i);
        }
        assert_eq!(order(&list, &slab), [2, 0, 3, 1]);
        assert_eq!(list.front(), Some(2));

        list.unlink(&mut slab, 3); // middle
        assert_eq!(order(&list, &slab), [2, 0, 1]);
        list.unlink(&mut slab, 2); // head
        assert_eq!(order(&list, &slab), [0, 1]);
        list.unlink(&mut slab, 1); // tail
        assert_eq!(order(&list, &slab), [0]);
        assert!(!slab[1].0.is_linked());

        list.push_back(&mut slab, 3);
        assert_eq!(order(&list, &slab), [0, 3]);
        assert_eq!(list.len(), 2);
        list.unlink(&mut slab, 0);
        list.unlink(&mut slab, 3);
        assert_eq!(list, List::default());
    }
}
