//! Paths: every peer behind a stable virtual address.
//!
//! quinn-proto only ever sees one virtual address per connection, from its
//! first packet on, taken from a reserved IPv6 range ([`VIRTUAL_PREFIX`]).
//! This table maps each virtual address to the real path its packets take
//! now: a direct UDP address or a relay circuit. Because
//! QUIC never sees the real address change, switching a path (relay to
//! direct, NAT rebinding) is ours to decide, and quinn's own migration stays
//! off.

mod holds;
mod liveness;
pub mod upgrade;

pub use holds::RetryHolds;
pub use liveness::Liveness;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::collections::HashMap;
use crate::id::NodeId;

/// The first 64 bits of every virtual address: the ULA `fd6d:6163:756c:6100::/64`
/// (the bytes spell "macula"). The low 64 bits count up, so a virtual address
/// is never handed out twice by one table.
pub const VIRTUAL_PREFIX: [u16; 4] = [0xfd6d, 0x6163, 0x756c, 0x6100];

/// The port of every virtual address.
const VIRTUAL_PORT: u16 = 1;

/// Where a virtual address's packets go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RealPath {
    /// Straight to this UDP address.
    Direct(SocketAddr),
    /// Through a relay circuit: length-prefixed frames on the circuit's
    /// stream of our connection to `relay` (docs/PROTOCOL.md §11).
    Relay {
        /// The relay.
        relay: NodeId,
        /// The circuit's id at that relay.
        circuit: u64,
    },
}

impl RealPath {
    /// Whether the path is direct or relayed.
    pub fn kind(&self) -> PathKind {
        match self {
            RealPath::Direct(_) => PathKind::Direct,
            RealPath::Relay { .. } => PathKind::Relayed,
        }
    }
}

/// What kind of path a connection's packets take, as the application
/// hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Straight over UDP.
    Direct,
    /// Through a relay circuit.
    Relayed,
}

/// What went wrong with a path operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The address is not a virtual address this table handed out.
    #[error("{0} is not a live virtual address")]
    UnknownVirtual(SocketAddr),
    /// Another virtual address already uses this real path.
    #[error("{path:?} already carries {owner}")]
    PathTaken {
        /// The path asked for.
        path: RealPath,
        /// The virtual address that has it.
        owner: SocketAddr,
    },
}

/// The two-way map between virtual addresses and real paths.
#[derive(Debug, Default)]
pub struct PathTable {
    next: u64,
    by_virtual: HashMap<SocketAddr, RealPath>,
    by_real: HashMap<RealPath, SocketAddr>,
}

impl PathTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when `addr` lies in the virtual range (live or not).
    pub fn is_virtual(addr: &SocketAddr) -> bool {
        match addr {
            SocketAddr::V6(v6) => v6.ip().segments()[..4] == VIRTUAL_PREFIX,
            SocketAddr::V4(_) => false,
        }
    }

    /// The virtual address for packets arriving over `path`, allocating one
    /// the first time the path is seen.
    pub fn virtual_for(&mut self, path: RealPath) -> SocketAddr {
        if let Some(existing) = self.by_real.get(&path) {
            return *existing;
        }
        let addr = self.allocate();
        self.by_virtual.insert(addr, path);
        self.by_real.insert(path, addr);
        addr
    }

    /// The path a virtual address's packets take now.
    pub fn real(&self, addr: &SocketAddr) -> Option<RealPath> {
        self.by_virtual.get(addr).copied()
    }

    /// The virtual address whose packets use `path`, if any.
    pub fn lookup(&self, path: &RealPath) -> Option<SocketAddr> {
        self.by_real.get(path).copied()
    }

    /// Moves a virtual address onto a new real path. The old path no longer
    /// maps to it; packets arriving over the new path now do.
    pub fn switch(&mut self, addr: SocketAddr, path: RealPath) -> Result<(), PathError> {
        let old = *self
            .by_virtual
            .get(&addr)
            .ok_or(PathError::UnknownVirtual(addr))?;
        match self.by_real.get(&path) {
            Some(owner) if *owner != addr => {
                return Err(PathError::PathTaken {
                    path,
                    owner: *owner,
                });
            }
            _ => {}
        }
        self.by_real.remove(&old);
        self.by_real.insert(path, addr);
        self.by_virtual.insert(addr, path);
        Ok(())
    }

    /// Forgets a virtual address (its connection is gone).
    pub fn remove(&mut self, addr: &SocketAddr) -> Option<RealPath> {
        let path = self.by_virtual.remove(addr)?;
        self.by_real.remove(&path);
        Some(path)
    }

    /// Number of live virtual addresses.
    pub fn len(&self) -> usize {
        self.by_virtual.len()
    }

    /// True when no virtual address is live.
    pub fn is_empty(&self) -> bool {
        self.by_virtual.is_empty()
    }

    fn allocate(&mut self) -> SocketAddr {
        self.next += 1;
        let n = self.next;
        let [p0, p1, p2, p3] = VIRTUAL_PREFIX;
        let ip = Ipv6Addr::new(
            p0,
            p1,
            p2,
            p3,
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        );
        SocketAddr::V6(SocketAddrV6::new(ip, VIRTUAL_PORT, 0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(port: u16) -> RealPath {
        RealPath::Direct(SocketAddr::from(([192, 0, 2, 1], port)))
    }

    #[test]
    fn a_path_keeps_its_virtual_address_and_new_paths_get_new_ones() {
        let mut table = PathTable::new();
        let a = table.virtual_for(direct(1000));
        assert!(PathTable::is_virtual(&a));
        assert_eq!(table.virtual_for(direct(1000)), a);
        let b = table.virtual_for(direct(1001));
        assert_ne!(a, b);
        assert_eq!(table.real(&a), Some(direct(1000)));
        assert_eq!(table.lookup(&direct(1001)), Some(b));
        assert!(!PathTable::is_virtual(&SocketAddr::from((
            [127, 0, 0, 1],
            1
        ))));
    }

    #[test]
    fn switching_moves_the_mapping_both_ways() {
        let mut table = PathTable::new();
        let a = table.virtual_for(direct(1000));
        let b = table.virtual_for(direct(1001));
        table.switch(a, direct(2000)).unwrap();
        assert_eq!(table.real(&a), Some(direct(2000)));
        assert_eq!(table.lookup(&direct(2000)), Some(a));
        assert_eq!(table.lookup(&direct(1000)), None);
        assert_eq!(
            table.switch(a, direct(1001)),
            Err(PathError::PathTaken {
                path: direct(1001),
                owner: b
            })
        );
        table.switch(a, direct(2000)).unwrap();
    }

    #[test]
    fn removed_addresses_are_never_handed_out_again() {
        let mut table = PathTable::new();
        let a = table.virtual_for(direct(1000));
        assert_eq!(table.remove(&a), Some(direct(1000)));
        assert!(table.is_empty());
        assert_eq!(
            table.switch(a, direct(1)),
            Err(PathError::UnknownVirtual(a))
        );
        let again = table.virtual_for(direct(1000));
        assert_ne!(again, a);
        assert_eq!(table.len(), 1);
    }
}
