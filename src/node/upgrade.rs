//! The Node's side of the relay → direct upgrade ([`crate::path::upgrade`]):
//! the entry points the datagram split, the frame dispatch and the
//! connection lifecycle call, the public methods, and the executor of the
//! machine's outputs (the Node owns the path table and quinn's connections).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_proto::ConnectionHandle;

use super::{CloseCause, Event, Node, silence};
use crate::connection::Phase;
use crate::contract::{Child, Datagram, Output};
use crate::id::NodeId;
use crate::nat::punch::{Candidate, NatClass};
use crate::path::upgrade::{PunchLink, UpgradeCounters, UpgradeOutput};
use crate::path::{PathKind, RealPath};
use crate::pool::{ConnId, Direction};
use crate::wire::{DisconnectReason, Message};

impl Node {
    /// Sets this node's own punch candidates (LAN, reflexive, predicted) and NAT class, as
    /// NAT discovery found them; punches offered or answered from now on use them.
    pub fn set_punch_candidates(&mut self, candidates: Vec<Candidate>, nat: NatClass) {
        self.upgrades.handle_local_candidates(candidates, nat);
    }

    /// Starts a punch on the relayed connection to `peer` (we are the opener); false when
    /// there is no ready relayed connection to it or a punch is already under way.
    pub fn upgrade(&mut self, now: Instant, peer: NodeId) -> bool {
        self.enter(now);
        let handle = self.conns.iter().find_map(|(h, c)| {
            let relayed = self.path_kind(&c.virtual_addr) == PathKind::Relayed;
            (c.peer == Some(peer) && c.phase == Phase::Ready && relayed).then_some(*h)
        });
        let link = handle.and_then(|handle| self.punch_link(handle));
        let started = link.is_some_and(|link| self.upgrades.handle_upgrade(now, link));
        self.settle(now);
        started
    }

    /// What the upgrades did.
    pub fn upgrade_counters(&self) -> &UpgradeCounters {
        self.upgrades.counters()
    }

    /// Live connections whose packets go (direct, through a relay).
    pub fn connection_kinds(&self) -> (usize, usize) {
        let relayed = (self.conns.values())
            .filter(|c| self.path_kind(&c.virtual_addr) == PathKind::Relayed)
            .count();
        (self.conns.len() - relayed, relayed)
    }

    /// `handle`'s connection as the upgrade machine knows it: ready enough
    /// to carry punch frames.
    fn punch_link(&self, handle: ConnectionHandle) -> Option<PunchLink> {
        let conn = self.conns.get(&handle)?;
        conn.control?;
        let path = self.paths.real(&conn.virtual_addr)?;
        let vouched = match path {
            RealPath::Relay { relay, circuit } => self.relay_client.vouched(&relay, circuit),
            RealPath::Direct(_) => None,
        };
        Some(PunchLink {
            conn: conn.pool_id?,
            peer: conn.peer?,
            path,
            rtt: conn.quinn.rtt(),
            vouched: vouched.map(|a| a.ip()),
        })
    }

    /// A connection became ready: the dialer of a relayed one offers a punch.
    pub(super) fn upgrade_on_ready(&mut self, now: Instant, handle: ConnectionHandle) {
        let outbound =
            (self.conns.get(&handle)).is_some_and(|c| c.direction == Direction::Outbound);
        if let Some(link) = self.punch_link(handle) {
            self.upgrades.handle_ready(now, link, outbound);
        }
    }

    /// A punch frame on `handle`'s control stream.
    pub(super) fn on_punch_frame(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        message: Message,
    ) {
        if let Some(link) = self.punch_link(handle) {
            self.upgrades.handle_frame(now, link, message);
        }
    }

    /// Offers a STUN datagram to the upgrades; true when one of them took it.
    pub(super) fn upgrade_stun(&mut self, now: Instant, datagram: &Datagram) -> bool {
        (self.upgrades).handle_datagram(now, datagram)
    }

    /// An authentic packet of `handle`'s peer came out of the relay circuit while the
    /// connection runs on its direct path: when that path is in doubt the peer has fallen
    /// back, and this side follows at once, before quinn answers (its acknowledgements
    /// then reach the peer over the circuit, not over the dead path). A path no punch
    /// watches (dialed straight) is followed onto the circuit at once: the peer's own
    /// silence watch found it dead, and this side's acknowledgements of what comes over
    /// the circuit would otherwise keep its own watch from finding the same.
    pub(super) fn peer_spoke_relayed(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get(&handle) else {
            return;
        };
        let Some(id) = conn.pool_id else {
            return;
        };
        if silence::unwatched_direct(&self.paths, &self.upgrades, &conn.virtual_addr) {
            let grace = self.config.relay.silence.wait(conn.quinn.rtt()).limit;
            self.peer_falls_back(now, handle, grace);
        } else if self.upgrades.handle_heard_relayed(now, id) {
            self.drive_upgrades(now);
        }
    }

    /// Runs the upgrades' timers.
    pub(super) fn upgrade_timeout(&mut self, now: Instant) {
        self.upgrades.handle_timeout(now);
    }

    /// A connection is gone: its upgrade too.
    pub(super) fn upgrade_forget(&mut self, conn: Option<ConnId>) {
        if let Some(conn) = conn {
            self.upgrades.handle_closed(conn);
        }
    }

    /// Carries out the upgrades' outputs; true when there were any.
    pub(super) fn drive_upgrades(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(output) = self.upgrades.poll_output() {
            busy = true;
            self.execute_upgrade(now, output);
        }
        busy
    }

    fn execute_upgrade(&mut self, now: Instant, output: UpgradeOutput) {
        match output {
            UpgradeOutput::Transmit(t) => self.out.push_back(Output::Transmit(t)),
            UpgradeOutput::Sockets(request) => self.out.push_back(Output::Sockets(request)),
            UpgradeOutput::KeepAlive { conn } => {
                let handle = self.by_pool_id.get(&conn).copied();
                if let Some(conn) = handle.and_then(|h| self.conns.get_mut(&h)) {
                    conn.quinn.ping();
                }
            }
            UpgradeOutput::Send { conn, frame } => {
                if let Some(&handle) = self.by_pool_id.get(&conn) {
                    self.send_control(handle, &frame);
                }
            }
            UpgradeOutput::SwitchDirect {
                conn,
                remote,
                rtt,
                elapsed,
                local,
            } => {
                if self.switch_direct(now, conn, remote, local, elapsed) {
                    self.upgrades
                        .handle_switched(now, conn, remote, rtt, elapsed);
                }
            }
            UpgradeOutput::PeerMoved { conn, remote } => {
                if let Some(&handle) = self.by_pool_id.get(&conn) {
                    self.move_direct_path(now, handle, remote);
                }
            }
            UpgradeOutput::FallBack { conn, path, grace } => {
                self.instruments.metrics.nat_fallbacks += 1;
                // Our NAT may have rebooted or remapped: learn our address
                // again before the opener punches anew.
                if self.config.reach.auto_discover {
                    self.reach.handle_discover(now);
                }
                if let Some(&handle) = self.by_pool_id.get(&conn) {
                    self.fall_back_onto(now, handle, path, grace);
                }
            }
            UpgradeOutput::PathChanged { peer, path, reason } => {
                let event = Event::PathChanged { peer, path, reason };
                self.out.push_back(Output::Event(event));
            }
            UpgradeOutput::PunchStarted { local, remote } => {
                (self.instruments.metrics.nat_punches).record_attempt(local, remote);
            }
            UpgradeOutput::PunchEnded {
                local,
                remote,
                event,
            } => self.instruments.punch_ended(local, remote, &event),
        }
    }

    /// Moves connection `handle` off its direct path onto the relay circuit
    /// `path`, or, should that have closed meanwhile, onto another circuit
    /// behind the connection or a spare ([`Node::fallback_path`]); true when
    /// it moved onto a circuit. Its silence is excused until `grace` from
    /// `now`: the peer may not have noticed yet, and its packets still go to
    /// the dead path for up to its own watch's window.
    pub(super) fn fall_back_onto(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        path: RealPath,
        grace: Duration,
    ) -> bool {
        let path = self.fallback_path(handle, path);
        if !matches!(path, RealPath::Relay { .. }) {
            return false;
        }
        let Some(conn) = self.conns.get_mut(&handle) else {
            return false;
        };
        self.direct_sockets.remove(&conn.virtual_addr);
        if self.paths.switch(conn.virtual_addr, path).is_err() {
            return false;
        }
        conn.path_changed(now);
        conn.silence
            .excuse_until(now.checked_add(grace).unwrap_or(now));
        (self.instruments).connection_on_path(handle, PathKind::Relayed);
        true
    }

    /// Moves `conn` onto the direct path `remote` at once, its packets leaving from the
    /// extra socket `local` if given; false when the path table refused.
    fn switch_direct(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        elapsed: Duration,
    ) -> bool {
        let Some(&handle) = self.by_pool_id.get(&conn) else {
            return false;
        };
        let Some(virtual_addr) = self.conns.get(&handle).map(|c| c.virtual_addr) else {
            return false;
        };
        let direct = RealPath::Direct(remote);
        if let Some(owner) = self.paths.lookup(&direct)
            && owner != virtual_addr
        {
            self.free_direct_path(now, handle, owner);
        }
        if self.paths.switch(virtual_addr, direct).is_err() {
            return false;
        }
        match local {
            Some(local) => self.direct_sockets.insert(virtual_addr, local),
            None => self.direct_sockets.remove(&virtual_addr),
        };
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.path_changed(now);
        }
        self.instruments.upgraded(handle, elapsed);
        true
    }

    /// Frees the direct path that `owner` holds for `handle`'s punch, where it may: a
    /// virtual address without a connection (packets of the peer that came direct before
    /// our switch were given one of their own) is dropped; an older connection to the same
    /// peer is closed, for it belongs to a dead incarnation of the peer (killed and
    /// started again on its address): the peer punched to us from that address on its new
    /// connection, which a live holder of the older one never does (its pool keeps one
    /// connection to us and closes the loser of a tie-break before it punches). Kept, the
    /// stale one would leave the peer direct and us relayed, and the circuit would die of
    /// silence at every punch until the stale connection timed out.
    fn free_direct_path(&mut self, now: Instant, handle: ConnectionHandle, owner: SocketAddr) {
        let peer = self.conns.get(&handle).and_then(|c| c.peer);
        let holder = self.conns.iter().find(|(_, c)| c.virtual_addr == owner);
        match holder.map(|(h, c)| (*h, c.peer)) {
            None => {
                self.paths.remove(&owner);
            }
            Some((stale, holder_peer)) if holder_peer.is_some() && holder_peer == peer => {
                self.paths.remove(&owner);
                self.counters.superseded += 1;
                let detail = "superseded by the peer's new connection".to_string();
                let cause = CloseCause::Local(detail.clone());
                self.close_connection(now, stale, DisconnectReason::Normal, detail, cause);
            }
            Some(_) => {}
        }
    }
}
