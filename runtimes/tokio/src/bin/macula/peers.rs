//! The peers file of `macula node`: the live peers the node knew, saved so
//! that a restart joins through them as well as through its seeds. The
//! format is the core's ([`macula::node::save_peers`]).

use std::path::Path;

use macula::dht::Contact;
use macula::node::{load_peers, save_peers};
use macula_tokio::MaculaNode;

use crate::failure::Failure;

/// The contacts in the peers file at `path`; none if it does not exist yet.
pub fn load(path: &Path) -> Result<Vec<Contact>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_peers(&text)
            .map_err(|e| Failure::settings(format!("peers file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Failure::settings(format!(
            "cannot read peers file {}: {e}",
            path.display()
        ))),
    }
}

/// Saves the peers closest to `node` that answer a lookup now (at most k)
/// to `path`, replacing the file whole. Returns how many were saved.
pub async fn save(node: &MaculaNode, path: &Path) -> Result<usize, Failure> {
    let found = node.find_node(node.node_id()).await?;
    let peers: Vec<&Contact> = found
        .closest
        .iter()
        .filter(|c| c.id != node.node_id())
        .collect();
    let fail = |e: std::io::Error| {
        Failure::settings(format!("cannot write peers file {}: {e}", path.display()))
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, save_peers(peers.iter().copied())).map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)?;
    Ok(peers.len())
}
