//! The peers file: a node's routing table saved as text, so a restarted
//! node bootstraps from the peers it knew instead of only its seeds.
//!
//! One peer per line: the node id in hex, then its addresses separated by
//! spaces. Blank lines and lines starting with `#` are ignored. The core only
//! turns contacts into text and back; the driver reads and writes the file.

use std::net::SocketAddr;

use crate::dht::Contact;
use crate::id::NodeId;

/// A line of a peers file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersFileError {
    /// The first word is not a node id.
    #[error("line {line}: {word:?} is not a node id (64 hex digits)")]
    BadNodeId {
        /// The line number, from 1.
        line: usize,
        /// The word.
        word: String,
    },
    /// An address does not parse.
    #[error(
        "line {line}: {word:?} is not a socket address (like 198.51.100.1:4433 or [2001:db8::1]:4433)"
    )]
    BadAddress {
        /// The line number, from 1.
        line: usize,
        /// The word.
        word: String,
    },
    /// A peer with no address cannot be dialed.
    #[error("line {line}: peer {node} has no address")]
    NoAddress {
        /// The line number, from 1.
        line: usize,
        /// The peer.
        node: NodeId,
    },
}

/// The text of a peers file for `contacts`.
pub fn save_peers<'a>(contacts: impl IntoIterator<Item = &'a Contact>) -> String {
    let mut text = String::from("# macula peers: node id, then addresses\n");
    for contact in contacts {
        text.push_str(&contact.id.to_string());
        for addr in &contact.addrs {
            text.push(' ');
            text.push_str(&addr.to_string());
        }
        text.push('\n');
    }
    text
}

/// The contacts in a peers file's text.
pub fn load_peers(text: &str) -> Result<Vec<Contact>, PeersFileError> {
    let mut contacts = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut words = raw.split_whitespace();
        let first = words.next().unwrap_or_default();
        let id: NodeId = first.parse().map_err(|_| PeersFileError::BadNodeId {
            line,
            word: first.into(),
        })?;
        let addrs = words
            .map(|word| {
                word.parse::<SocketAddr>()
                    .map_err(|_| PeersFileError::BadAddress {
                        line,
                        word: word.into(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let contact = Contact { id, addrs };
        if contact.addrs.is_empty() {
            return Err(PeersFileError::NoAddress { line, node: id });
        }
        contacts.push(contact);
    }
    Ok(contacts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(seed: u8, addrs: &[&str]) -> Contact {
        Contact {
            id: NodeId::from_bytes([seed; 32]),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_saved_table_loads_back() {
        let contacts = vec![
            contact(1, &["198.51.100.1:4433"]),
            contact(2, &["[2001:db8::2]:4433", "10.0.0.2:1"]),
        ];
        assert_eq!(load_peers(&save_peers(&contacts)), Ok(contacts));
    }

    #[test]
    fn bad_lines_are_named_with_their_number() {
        let id = NodeId::from_bytes([3; 32]);
        assert_eq!(
            load_peers("# comment\n\nnot-an-id 1.2.3.4:5"),
            Err(PeersFileError::BadNodeId {
                line: 3,
                word: "not-an-id".into()
            })
        );
        assert_eq!(
            load_peers(&format!("{id} 1.2.3.4")),
            Err(PeersFileError::BadAddress {
                line: 1,
                word: "1.2.3.4".into()
            })
        );
        assert_eq!(
            load_peers(&format!("{id}")),
            Err(PeersFileError::NoAddress { line: 1, node: id })
        );
    }
}
