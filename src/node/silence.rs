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
//! A connection on a direct path that no punch watches (dialed or accepted
//! straight; a punched path has the upgrade's liveness watch) is judged the
//! same way as a relay connection, probing its peer meanwhile: silent for
//! its limit, it falls back onto a relay circuit behind it (a spare, or one
//! the peer also dialed over), as a punched path would, or without one is
//! closed and its calls in flight end `Lost`. Before, a peer that died was
//! found only at QUIC's 60 s idle timeout, the calls in flight waited out
//! their own timeouts, and a circuit behind the connection was never used.
//!
//! As a relay, a connection that carries circuits relayed here is judged the
//! same way (probing the peer meanwhile): silent for its limit, it is
//! closed, with its reservation and its circuits, whose other ends hear of
//! it at once. Why (issue 17, the 100-node cluster): a node cut off by a
//! partition gave up its relay connection, and at the heal, before it
//! reserved again, a circuit to it was announced on the old connection the
//! relay still held; the dialer waited out its 10 s handshake over it.
//!
//! [`RelayConfig::silence`]: crate::relay::RelayConfig::silence

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_proto::ConnectionHandle;

use super::{CloseCause, Event, Node, PathChange, Upgrades};
use crate::connection::{Conn, Phase, SilenceLimit, Wait};
use crate::contract::Output;
use crate::id::NodeId;
use crate::path::{PathKind, PathTable, RealPath};
use crate::relay::{CircuitLoss, RelayClient, RelayServer};
use crate::wire::DisconnectReason;

/// Which relay part a watched connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Watched {
    /// Our connection to this relay, while we hold a reservation on
    /// another relay too.
    Relay(NodeId),
    /// Our connection to this relay, the only one we hold a reservation on
    /// (or none): there is nowhere to move its circuits, so closing it gains
    /// nothing, and a silence of our one relay is as often a burst of loss
    /// on our own access link (the ladder's very bad cellular rung closed it
    /// with the relay alive, and every call over its circuits was lost). It
    /// waits longer ([`SilenceLimit::patient`]).
    LoneRelay(NodeId),
    /// An end-to-end connection over our circuit `circuit` through `relay`.
    Circuit {
        /// The relay.
        relay: NodeId,
        /// The circuit's id at the relay.
        circuit: u64,
    },
    /// A connection that carries an end of circuits we relay.
    CircuitEnd,
    /// A connection on a direct path that no punch watches (dialed or
    /// accepted straight): a peer that died, or whose path broke, is found
    /// within the silence limit rather than QUIC's idle timeout.
    Peer,
}

/// What decides how a connection waits on its peer.
pub(super) struct Parts<'a> {
    pub(super) paths: &'a PathTable,
    pub(super) client: &'a RelayClient,
    pub(super) server: &'a RelayServer,
    pub(super) upgrades: &'a Upgrades,
    pub(super) limit: SilenceLimit,
}

impl Parts<'_> {
    /// How `conn` waits on its peer, if it is watched ([`Parts::watched`]).
    pub(super) fn wait(&self, conn: &Conn) -> Option<Wait> {
        let watched = self.watched(conn)?;
        Some(watched.wait(self.limit, conn))
    }

    /// Whether `conn` is watched for silence, and as what: as a relay part
    /// of ours, as the relay of circuits it carries, or as a direct path no
    /// punch watches.
    pub(super) fn watched(&self, conn: &Conn) -> Option<Watched> {
        if matches!(conn.phase, Phase::Handshaking | Phase::Closing) {
            return None;
        }
        if let Some(RealPath::Relay { relay, circuit }) = self.paths.real(&conn.virtual_addr) {
            return Some(Watched::Circuit { relay, circuit });
        }
        let id = conn.pool_id?;
        if let Some(relay) = conn.peer.filter(|peer| self.client.relies_on(id, peer)) {
            return Some(match self.client.reserved_elsewhere(&relay) {
                true => Watched::Relay(relay),
                false => Watched::LoneRelay(relay),
            });
        }
        if self.server.carries_circuits(id) {
            return Some(Watched::CircuitEnd);
        }
        unwatched_direct(self.paths, self.upgrades, &conn.virtual_addr).then_some(Watched::Peer)
    }
}

/// Whether the connection at `virtual_addr` runs on a direct path that no
/// punch's liveness watch judges (it was dialed or accepted straight).
pub(super) fn unwatched_direct(
    paths: &PathTable,
    upgrades: &Upgrades,
    virtual_addr: &SocketAddr,
) -> bool {
    matches!(paths.real(virtual_addr), Some(RealPath::Direct(remote)) if !upgrades.watches(remote))
}

impl Watched {
    /// How long `conn`, watched so, may stay silent under `limit`: a
    /// connection to a relay, or to a circuit's end, probes its peer
    /// meanwhile (`connection/probe.rs`); one with nowhere to move (to our
    /// only relay, over a circuit, carrying circuit ends) is patient
    /// ([`SilenceLimit::patient`]).
    pub(super) fn wait(self, limit: SilenceLimit, conn: &Conn) -> Wait {
        let rtt = conn.quinn.rtt();
        match self {
            Watched::Relay(_) => limit.probing_wait(rtt),
            Watched::LoneRelay(_) | Watched::CircuitEnd => limit.patient().probing_wait(rtt),
            Watched::Peer => limit.peer_wait(rtt),
            Watched::Circuit { .. } => limit.patient().wait(rtt),
        }
    }
}

impl Node {
    /// A direct connection no punch watches went silent: with a relay
    /// circuit behind it (a spare, or one the peer also dialed over), it
    /// falls back onto that circuit, as a punched path would, and the peer
    /// hears the path change; without one it is left to close. True when
    /// it fell back. `grace` is the silence limit just reached, the time the
    /// peer's own watch may take to find the same.
    pub(super) fn peer_falls_back(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        grace: Duration,
    ) -> bool {
        let Some(conn) = self.conns.get(&handle) else {
            return false;
        };
        let (virtual_addr, peer) = (conn.virtual_addr, conn.peer);
        let Some(direct) = self.paths.real(&virtual_addr) else {
            return false;
        };
        if !self.fall_back_onto(now, handle, direct, grace) {
            return false;
        }
        self.instruments.metrics.nat_fallbacks += 1;
        if let Some(peer) = peer {
            let path = PathKind::Relayed;
            let reason = PathChange::DirectPathDead;
            let event = Event::PathChanged { peer, path, reason };
            self.out.push_back(Output::Event(event));
        }
        true
    }

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
            let parts = Parts {
                paths: &self.paths,
                client: &self.relay_client,
                server: &self.relay_server,
                upgrades: &self.upgrades,
                limit,
            };
            let Some(watched) = parts.watched(conn) else {
                continue;
            };
            let wait = watched.wait(limit, conn);
            if !conn.silence.reached(now, wait) {
                continue;
            }
            let detail = format!("no acknowledgement for {:?}", wait.limit);
            match watched {
                Watched::CircuitEnd => {
                    if let Some(id) = conn.pool_id {
                        self.relay_server.handle_end_silent(now, id);
                    }
                    let cause = CloseCause::Transport(format!("circuit end silent: {detail}"));
                    self.close_connection(now, handle, DisconnectReason::Normal, detail, cause);
                }
                Watched::Peer => {
                    self.counters.silent_peers += 1;
                    if !self.peer_falls_back(now, handle, wait.limit) {
                        let cause = CloseCause::Transport(format!("peer silent: {detail}"));
                        self.close_connection(now, handle, DisconnectReason::Normal, detail, cause);
                    }
                }
                Watched::Relay(relay) | Watched::LoneRelay(relay) => {
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
