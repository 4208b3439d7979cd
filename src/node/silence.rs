//! Relays that die or drop circuit traffic, noticed from QUIC's own loss
//! signals: a connection the relay client relies on (a reservation or
//! circuit ends of ours on it), or an end-to-end connection running over a
//! circuit of ours, whose data stays unacknowledged for the silence limit
//! (src/connection/silence.rs, [`RelayConfig::silence`]) is dead.
//!
//! A silent relay connection is closed: our reservation there is lost (the
//! reachability side reserves elsewhere and republishes the peer record),
//! our circuits through it close, and so do the connections over them,
//! failing their calls in flight; the relay is avoided, so the next call
//! takes another of the peer's relays. A silent connection over a circuit
//! (the relay answers, the traffic does not get through) ends the circuit
//! and the connection, and strikes the relay ([`RelayClient`] docs).
//!
//! [`RelayConfig::silence`]: crate::relay::RelayConfig::silence

use std::time::Instant;

use quinn_proto::ConnectionHandle;

use super::{CloseCause, Node};
use crate::connection::{Conn, Phase, SilenceLimit, Wait};
use crate::id::NodeId;
use crate::path::{PathTable, RealPath};
use crate::relay::{CircuitLoss, RelayClient, RelayServer};
use crate::wire::DisconnectReason;

/// Which relay part a watched connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Watched {
    /// Our connection to this relay.
    Relay(NodeId),
    /// An end-to-end connection over our circuit `circuit` through `relay`.
    Circuit {
        /// The relay.
        relay: NodeId,
        /// The circuit's id at the relay.
        circuit: u64,
    },
}

/// What decides how a connection waits on its peer.
pub(super) struct Parts<'a> {
    pub(super) paths: &'a PathTable,
    pub(super) client: &'a RelayClient,
    pub(super) server: &'a RelayServer,
    pub(super) limit: SilenceLimit,
}

impl Parts<'_> {
    /// How `conn` waits on its peer, if it is watched: judged as relay
    /// part ([`watched`]), or, as the relay of circuits it carries, only
    /// probing the circuit's end while data waits on it (the data of both
    /// ends of the circuit does).
    pub(super) fn wait(&self, conn: &Conn) -> Option<Wait> {
        if let Some(watched) = watched(self.paths, self.client, conn) {
            return Some(watched.wait(self.limit, conn));
        }
        let end = conn
            .pool_id
            .is_some_and(|id| self.server.carries_circuits(id));
        end.then(|| self.limit.probing_wait(conn.quinn.rtt()).unjudged())
    }
}

impl Watched {
    /// How long `conn`, watched so, may stay silent under `limit`: a relay
    /// connection probes the relay meanwhile (`connection/probe.rs`); a
    /// connection over a circuit waits up to the circuit ceiling.
    pub(super) fn wait(self, limit: SilenceLimit, conn: &Conn) -> Wait {
        let rtt = conn.quinn.rtt();
        match self {
            Watched::Relay(_) => limit.probing_wait(rtt),
            Watched::Circuit { .. } => limit.circuit().wait(rtt),
        }
    }
}

/// Whether `conn` is watched for silence, and as what.
pub(super) fn watched(paths: &PathTable, client: &RelayClient, conn: &Conn) -> Option<Watched> {
    if matches!(conn.phase, Phase::Handshaking | Phase::Closing) {
        return None;
    }
    if let Some(RealPath::Relay { relay, circuit }) = paths.real(&conn.virtual_addr) {
        return Some(Watched::Circuit { relay, circuit });
    }
    let (id, peer) = (conn.pool_id?, conn.peer?);
    client.relies_on(id, &peer).then_some(Watched::Relay(peer))
}

impl Node {
    /// Of the connections whose deadline came (`due`), those watched and
    /// silent for their limit are dead: a relay connection is closed and
    /// the relay avoided, a circuit is ended with its connection. Each is
    /// looked at as the ones before left it (closing a relay connection
    /// closes the connections over its circuits).
    pub(super) fn expire_silent(&mut self, now: Instant, due: &[ConnectionHandle]) {
        let limit = self.config.relay.silence;
        for &handle in due {
            let Some(conn) = self.conns.get(&handle) else {
                continue;
            };
            let Some(watched) = watched(&self.paths, &self.relay_client, conn) else {
                continue;
            };
            let wait = watched.wait(limit, conn);
            if !conn.silence.reached(now, wait) {
                continue;
            }
            let detail = format!("no acknowledgement for {:?}", wait.limit);
            match watched {
                Watched::Relay(relay) => {
                    self.relay_client.handle_relay_silent(now, relay);
                    let cause = CloseCause::Transport(format!("relay silent: {detail}"));
                    self.close_connection(now, handle, DisconnectReason::Normal, detail, cause);
                }
                Watched::Circuit { relay, circuit } => {
                    self.relay_client.handle_circuit_silent(now, relay, circuit);
                    self.drive_relay(now);
                    // Closed with its circuit; else (the circuit was gone
                    // already) here.
                    let loss = CircuitLoss::TimedOut;
                    let cause = CloseCause::CircuitClosed { relay, loss };
                    self.close_connection(now, handle, DisconnectReason::Normal, detail, cause);
                }
            }
            self.drive_relay(now);
        }
    }
}
