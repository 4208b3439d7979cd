//! Spare circuits wanted: peers whose direct connection lost the circuit
//! behind it, with the relay to ask for a new one and when to ask next.
//!
//! A connection that moved from a relay circuit onto a direct path keeps
//! the circuit as the way back should the direct path die. When that
//! circuit closes while the path is direct (the relay restarted, our or the
//! peer's relay connection went silent, the relay closed it at its limit),
//! the dialer of the connection asks the same relay for a new one, a
//! *spare*, and asks again with backoff (1 s, doubling up to 30 s) for as
//! long as the connection is direct and has none. The table holds at most
//! [`MAX_SPARE_WANTS`] peers; past that a peer simply gets no spare.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::collections::HashMap;
use crate::id::NodeId;

/// The most peers waiting for a spare circuit at once.
pub const MAX_SPARE_WANTS: usize = 256;

/// The first wait between asks for a spare circuit to one peer.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between asks for a spare circuit to one peer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A spare circuit wanted to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpareWant {
    /// The relay to ask (the lost circuit's).
    pub relay: NodeId,
    /// Where the relay was reached.
    pub via: SocketAddr,
    /// When to ask next.
    pub due: Instant,
    /// How long to wait after the next ask.
    backoff: Duration,
}

/// The peers waiting for a spare circuit.
#[derive(Debug, Default)]
pub struct SpareWants {
    wants: HashMap<NodeId, SpareWant>,
}

impl SpareWants {
    /// Wants a spare circuit to `peer` through `relay` (reached at `via`),
    /// asked at once; a peer already waiting keeps its schedule, and none is
    /// added past [`MAX_SPARE_WANTS`]. True when the peer now waits.
    pub fn want(&mut self, now: Instant, peer: NodeId, relay: NodeId, via: SocketAddr) -> bool {
        if self.wants.contains_key(&peer) {
            return true;
        }
        if self.wants.len() >= MAX_SPARE_WANTS {
            return false;
        }
        let want = SpareWant {
            relay,
            via,
            due: now,
            backoff: FIRST_BACKOFF,
        };
        self.wants.insert(peer, want);
        true
    }

    /// The peers whose ask is due by `now`, sorted; each is asked again
    /// after its backoff (which doubles, up to 30 s) unless
    /// [`SpareWants::satisfied`] first.
    pub fn take_due(&mut self, now: Instant) -> Vec<(NodeId, SpareWant)> {
        let mut due: Vec<(NodeId, SpareWant)> = (self.wants.iter())
            .filter(|(_, w)| w.due <= now)
            .map(|(peer, w)| (*peer, *w))
            .collect();
        due.sort_by_key(|(peer, _)| *peer);
        for (peer, _) in &due {
            if let Some(want) = self.wants.get_mut(peer) {
                want.due = now + want.backoff;
                want.backoff = (want.backoff * 2).min(MAX_BACKOFF);
            }
        }
        due
    }

    /// `peer` needs no spare any more (it got one, or its connection is no
    /// longer direct or gone).
    pub fn satisfied(&mut self, peer: &NodeId) {
        self.wants.remove(peer);
    }

    /// When the next ask is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.wants.values().map(|w| w.due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn via() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 4433))
    }

    #[test]
    fn asks_at_once_then_backs_off_doubling_up_to_thirty_seconds() {
        let t0 = crate::test_epoch();
        let mut wants = SpareWants::default();
        assert!(wants.want(t0, id(1), id(9), via()));
        assert_eq!(wants.next_due(), Some(t0));
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let due = wants.take_due(now);
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].1.relay, id(9));
            let next = wants.next_due().unwrap();
            gaps.push((next - now).as_secs());
            assert!(wants.take_due(next - Duration::from_millis(1)).is_empty());
            now = next;
        }
        assert_eq!(gaps, [1, 2, 4, 8, 16, 30, 30, 30]);
        wants.satisfied(&id(1));
        assert_eq!(wants.next_due(), None);
    }

    #[test]
    fn wanting_again_keeps_the_schedule_and_the_table_is_bounded() {
        let t0 = crate::test_epoch();
        let mut wants = SpareWants::default();
        assert!(wants.want(t0, id(1), id(9), via()));
        wants.take_due(t0);
        assert!(wants.want(t0, id(1), id(8), via()));
        let due = wants.take_due(t0 + FIRST_BACKOFF);
        assert_eq!(due[0].1.relay, id(9), "the first relay is kept");
        let mut full = SpareWants::default();
        for n in 0..MAX_SPARE_WANTS {
            let mut bytes = [0; 32];
            bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
            assert!(full.want(t0, NodeId::from_bytes(bytes), id(9), via()));
        }
        assert!(!full.want(t0, id(0xff), id(9), via()));
        let asked = full.take_due(t0);
        assert_eq!(asked.len(), MAX_SPARE_WANTS);
        assert!(asked.iter().all(|(peer, _)| *peer != id(0xff)));
    }
}
