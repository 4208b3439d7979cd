//! How far from a target its closest nodes are expected to lie.
//!
//! Node ids are uniform, so the spacing of ids around us is the spacing
//! around any target: if our own k-th closest neighbour lies at distance
//! `d`, the n-th closest node to any target lies near `d · n / k`. A lookup
//! asks a candidate inside that radius (times a margin, in percent) at once instead of
//! α at a time: it is expected among the n closest, which the lookup must
//! hear from before it ends, so waiting only delays a request that will be
//! sent anyway.
//!
//! Distances are compared on their 128 most significant bits (a network
//! would need some 2^100 nodes for that to blur the k-th neighbour).
//! A crowd of ids planted around us makes the radius smaller, so the
//! lookup falls back to α at a time; it can never ask more than k at once.

use crate::id::Distance;

/// Distances at or under this are expected among a lookup's closest results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NearRadius(u128);

/// The 128 most significant bits of `d`.
fn high_bits(d: &Distance) -> u128 {
    let mut high = [0u8; 16];
    high.copy_from_slice(&d.as_bytes()[..16]);
    u128::from_be_bytes(high)
}

impl NearRadius {
    /// The radius of the `n` closest nodes to any target, `percent` of it,
    /// when our own `k`-th closest neighbour lies at `kth`; `None` when `k`,
    /// `n` or `percent` is zero.
    pub fn estimate(kth: &Distance, k: usize, n: usize, percent: u32) -> Option<Self> {
        let k = u128::try_from(k).ok().filter(|&k| k > 0)?;
        let n = u128::try_from(n).ok().filter(|&n| n > 0)?;
        let times = n.saturating_mul(u128::from(percent));
        if times == 0 {
            return None;
        }
        // Divide first where exact enough (distances are ~2^250 in any real
        // network), so the product saturates only when it truly overflows.
        let radius = (high_bits(kth) / k.saturating_mul(100)).saturating_mul(times);
        Some(Self(radius))
    }

    /// Whether `d` lies within the radius.
    pub fn contains(&self, d: &Distance) -> bool {
        high_bits(d) <= self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    /// The distance from zero to the id whose 16 high bytes are `high`.
    fn at(high: u128) -> Distance {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&high.to_be_bytes());
        bytes[31] = 0xff; // low bits below the comparison's precision
        NodeId::from_bytes([0; 32]).distance(&NodeId::from_bytes(bytes))
    }

    #[test]
    fn scales_with_the_share_of_k_and_the_margin() {
        let kth = at(2000 << 100);
        let r = NearRadius::estimate(&kth, 20, 20, 100).expect("a radius");
        assert!(r.contains(&at(2000 << 100)));
        assert!(!r.contains(&at((2000 << 100) + 1)));
        let r = NearRadius::estimate(&kth, 20, 3, 100).expect("a radius");
        assert!(r.contains(&at(300 << 100)));
        assert!(!r.contains(&at((300 << 100) + 1)));
        let r = NearRadius::estimate(&kth, 20, 20, 200).expect("a radius");
        assert!(r.contains(&at(4000 << 100)));
        assert!(!r.contains(&at((4000 << 100) + 1)));
        let r = NearRadius::estimate(&kth, 20, 20, 125).expect("a radius");
        assert!(r.contains(&at(2500 << 100)));
        assert!(!r.contains(&at((2500 << 100) + 1)));
    }

    #[test]
    fn no_radius_from_zeros_and_no_overflow() {
        let kth = at(1 << 120);
        assert_eq!(NearRadius::estimate(&kth, 0, 20, 1), None);
        assert_eq!(NearRadius::estimate(&kth, 20, 0, 1), None);
        assert_eq!(NearRadius::estimate(&kth, 20, 20, 0), None);
        let r = NearRadius::estimate(&at(u128::MAX), 1, usize::MAX, u32::MAX).expect("a radius");
        assert!(r.contains(&at(u128::MAX)), "saturates at the whole space");
        let r = NearRadius::estimate(&at(99), 1, 1, 100).expect("a radius");
        assert!(
            !r.contains(&at(1)),
            "under the precision of a percent: nothing is near"
        );
    }
}
