//! Contacts as one word, the form seeds are given in and a node prints:
//! `NODEID@HOST:PORT`, the node id in hex (64 digits), then where to dial
//! it. HOST may be an IP address (`[...]` for IPv6) or a name resolved once
//! at start. A node id is needed because every connection verifies that the
//! peer is the node that was dialed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use macula::dht::Contact;
use macula::id::NodeId;

/// A seed: the node to bootstrap from and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed(pub Contact);

/// Why a seed does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// There is no `@` between node id and address.
    #[error("{0:?} is not NODEID@HOST:PORT (the node id is printed by `macula node`)")]
    Form(String),
    /// The node id is not 64 hex digits.
    #[error("{text:?}: {id:?} is not a node id (64 hex digits)")]
    NodeId {
        /// The whole seed.
        text: String,
        /// The part before `@`.
        id: String,
    },
    /// The address neither parses nor resolves.
    #[error("{text:?}: cannot resolve {addr:?}: {problem}")]
    Address {
        /// The whole seed.
        text: String,
        /// The part after `@`.
        addr: String,
        /// What the resolver said.
        problem: String,
    },
}

impl FromStr for Seed {
    type Err = SeedError;

    fn from_str(text: &str) -> Result<Self, SeedError> {
        let (id, addr) = text
            .trim()
            .split_once('@')
            .ok_or_else(|| SeedError::Form(text.into()))?;
        let id: NodeId = id.parse().map_err(|_| SeedError::NodeId {
            text: text.into(),
            id: id.into(),
        })?;
        let addrs = resolve(addr).map_err(|problem| SeedError::Address {
            text: text.into(),
            addr: addr.into(),
            problem,
        })?;
        Ok(Self(Contact {
            id,
            addrs: addrs.into_iter().collect(),
        }))
    }
}

/// The addresses of `addr`: itself if it is an IP address and port,
/// else what the system resolver says (at most two, as a contact holds).
fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = addr.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let found: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .take(2)
        .collect();
    if found.is_empty() {
        return Err("no address found".into());
    }
    Ok(found)
}

/// A contact in the seed form, one word per address:
/// `NODEID@ADDR` (joined by spaces when it has several addresses).
pub struct SeedLine<'a>(pub &'a Contact);

impl fmt::Display for SeedLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}@{addr}", self.0.id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn a_printed_seed_parses_back() {
        let contact = Contact::new(
            NodeId::from_bytes([1; 32]),
            "127.0.0.1:4433".parse().unwrap(),
        );
        let line = SeedLine(&contact).to_string();
        assert_eq!(line, format!("{ID}@127.0.0.1:4433"));
        assert_eq!(line.parse::<Seed>(), Ok(Seed(contact)));
        let v6: Seed = format!("{ID}@[::1]:9").parse().unwrap();
        assert_eq!(v6.0.addrs[0], "[::1]:9".parse().unwrap());
    }

    #[test]
    fn bad_seeds_say_what_is_wrong() {
        assert!(matches!(
            "127.0.0.1:4433".parse::<Seed>(),
            Err(SeedError::Form(_))
        ));
        assert!(matches!(
            "abc@127.0.0.1:4433".parse::<Seed>(),
            Err(SeedError::NodeId { .. })
        ));
        let no_port = format!("{ID}@127.0.0.1").parse::<Seed>();
        assert!(
            matches!(no_port, Err(SeedError::Address { .. })),
            "{no_port:?}"
        );
    }
}
