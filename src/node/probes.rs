//! Signed probes between a node and its relays (`connection/probe.rs`): the
//! node sends those a silent relay connection owes, answers its peers' and
//! takes an answer as a sign of life of the relay and of the circuits that
//! run through it.

use std::net::IpAddr;
use std::time::Instant;

use quinn_proto::ConnectionHandle;

use super::Node;
use crate::connection::probe::{Heard, is_probe, probe_key};
use crate::contract::{Datagram, Output, Transmit};
use crate::nat::stun::{Class, peek_class};
use crate::path::RealPath;

impl Node {
    /// Sends the probes of the connections whose deadline came (`due`).
    pub(super) fn send_probes(&mut self, now: Instant, due: &[ConnectionHandle]) {
        let mut probes: Vec<(Transmit, Option<IpAddr>)> = Vec::new();
        for handle in due {
            let Some(conn) = self.conns.get_mut(handle) else {
                continue;
            };
            conn.probing.handle_timeout(now);
            let local_ip = conn.quinn.local_ip();
            probes
                .extend(std::iter::from_fn(|| conn.probing.poll_transmit()).map(|t| (t, local_ip)));
        }
        for (mut probe, local_ip) in probes {
            probe.source = self.local_addrs.source(local_ip, probe.destination);
            self.counters.probes_sent += 1;
            self.out.push_back(Output::Transmit(probe));
        }
    }

    /// A probe of a peer's, or the answer to one of ours (`connection/probe.rs`),
    /// taken or dropped; false when `datagram` is neither. Each is the
    /// connection's whose path is the address it came from.
    pub(super) fn handle_probe(&mut self, now: Instant, datagram: &Datagram) -> bool {
        if !is_probe(&datagram.payload) {
            return false;
        }
        let path = RealPath::Direct(datagram.remote);
        let conn = (self.paths.lookup(&path)).and_then(|virtual_addr| {
            (self.conns.iter())
                .find(|(_, c)| c.virtual_addr == virtual_addr)
                .map(|(handle, _)| *handle)
        });
        let class = peek_class(&datagram.payload);
        let taken = conn
            .zip(class)
            .is_some_and(|(handle, class)| self.take_probe(now, handle, class, datagram));
        if !taken {
            self.counters.probes_dropped += 1;
        }
        true
    }

    /// A probe of the peer of connection `handle` (a request: answered, if it
    /// is signed for the connection and within its budget) or the answer to
    /// one of ours; true when it was either. Both are signs of life: the
    /// peer reaches us, whatever becomes of what we send.
    fn take_probe(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        class: Class,
        datagram: &Datagram,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return false;
        };
        let payload = &datagram.payload;
        let taken = match class {
            Class::Request => {
                let key = || probe_key(conn.quinn.crypto_session());
                let answer = conn.probing.answer(now, key, payload);
                answer.is_ok_and(|answer| {
                    let source = (!datagram.local.ip().is_unspecified()).then_some(datagram.local);
                    let transmit = Transmit::single(source, datagram.remote, answer);
                    self.out.push_back(Output::Transmit(transmit));
                    self.counters.probes_answered += 1;
                    true
                })
            }
            Class::Success => {
                let heard = conn.probing.handle_answer(now, datagram.remote, payload);
                let answer = matches!(heard, Heard::Answer(_));
                self.counters.probe_answers += u64::from(answer);
                answer
            }
            _ => false,
        };
        if taken {
            self.peer_lives(now, handle);
        }
        taken
    }

    /// The peer of connection `handle` lives at `now`: the silence of the
    /// connection runs from now, and so does that of the connections over
    /// circuits through it when the peer is a relay, but only within a few
    /// limits of its start (`Silence::relay_heard`): the relay living says
    /// nothing of a circuit's far end.
    fn peer_lives(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        conn.silence.heard(now);
        let relay = conn.peer;
        let over_it: Vec<ConnectionHandle> = (self.conns.iter())
            .filter(|(_, c)| {
                matches!(self.paths.real(&c.virtual_addr),
                    Some(RealPath::Relay { relay: r, .. }) if Some(r) == relay)
            })
            .map(|(handle, _)| *handle)
            .collect();
        for handle in over_it {
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.silence.relay_heard(now);
            }
        }
    }
}
