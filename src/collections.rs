//! Hash collections with a fixed-seed hasher.
//!
//! The core never uses `std::collections::HashMap`: its per-process random seed
//! would make iteration order, and so traces, differ between runs. These aliases
//! use `hashbrown` with `foldhash` seeded by a constant, so the same inputs give
//! the same iteration order every time.

use core::hash::BuildHasher;

/// The seed of every hasher in the core. Changing it changes iteration orders,
/// never correctness.
const FIXED_SEED: u64 = 0x6d61_6375_6c61_2d31; // "macula-1"

/// A `BuildHasher` that always starts from the same seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = foldhash::fast::FoldHasher;

    fn build_hasher(&self) -> Self::Hasher {
        foldhash::fast::FixedState::with_seed(FIXED_SEED).build_hasher()
    }
}

/// A hash map whose iteration order depends only on its contents and history.
pub type HashMap<K, V> = hashbrown::HashMap<K, V, FixedState>;

/// A hash set whose iteration order depends only on its contents and history.
pub type HashSet<T> = hashbrown::HashSet<T, FixedState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_order_is_the_same_for_two_maps_with_the_same_history() {
        let mut a: HashMap<u32, u32> = HashMap::default();
        let mut b: HashMap<u32, u32> = HashMap::default();
        for i in 0..1000 {
            a.insert(i * 7919, i);
            b.insert(i * 7919, i);
        }
        assert!(a.iter().eq(b.iter()));
    }
}
