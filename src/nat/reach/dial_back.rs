//! Dial-back, all three sides (docs/PROTOCOL.md §12): asking a DHT server
//! for one, serving one as that server (choosing helpers among its peers),
//! and sending the probe as a helper.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{
    MAX_HELPERS, MAX_PROBE_ADDRS, PROBE_COPIES, PeerConn, ProbeRefusal, Reach, ReachOutput,
};
use crate::collections::HashSet;
use crate::contract::Transmit;
use crate::id::NodeId;
use crate::nat::discovery::ProbeOrigin;
use crate::nat::stun::{self, Class, TransactionId};
use crate::pool::ConnId;
use crate::wire::{DialBack, DialBackProbe, DialBackResult, DialBackStatus, Message, ProbeSource};

impl Reach {
    /// Asks for a dial-back through the Node (which picks the server).
    pub(super) fn ask_dial_back(
        &mut self,
        source: ProbeSource,
        nonce: [u8; 12],
        mut addrs: Vec<SocketAddr>,
    ) {
        addrs.truncate(self.setup.limits.max_addrs.min(MAX_PROBE_ADDRS));
        let request_id = self.next_request;
        self.next_request += 1;
        self.asked.insert(request_id, nonce);
        self.out.push(ReachOutput::AskDialBack(DialBack {
            request_id,
            nonce,
            source,
            addrs,
        }));
    }

    /// The DIAL_BACK `request_id` found no connected DHT server to go to.
    pub fn handle_no_helper(&mut self, now: Instant, request_id: u64) {
        self.touch(now);
        if let Some(nonce) = self.asked.remove(&request_id) {
            let status = DialBackStatus::NoHelper;
            self.discovery
                .handle_dial_back_result(now, nonce, status, &[]);
        }
    }

    /// A server's answer to one of our DIAL_BACKs.
    pub fn handle_dial_back_result(&mut self, now: Instant, result: DialBackResult) {
        self.touch(now);
        let Some(nonce) = self.asked.remove(&result.request_id) else {
            return;
        };
        let helpers: Vec<ProbeOrigin> = (result.helpers.iter())
            .map(|h| self.origin(now, *h))
            .collect();
        self.discovery
            .handle_dial_back_result(now, nonce, result.status, &helpers);
    }

    /// X's side: a DIAL_BACK from `asker` (on connection `from`, its
    /// packets coming from `remote`), forwarded to helpers among `peers`
    /// (the node's ready connections, in its order) that fit its source.
    pub fn handle_dial_back(
        &mut self,
        now: Instant,
        from: ConnId,
        asker: Option<NodeId>,
        remote: SocketAddr,
        ask: DialBack,
        peers: &[PeerConn],
    ) {
        self.touch(now);
        let asker_ip = remote.ip().to_canonical();
        let addrs: Vec<SocketAddr> = (ask.addrs.iter().copied())
            .filter(|a| a.ip().to_canonical() == asker_ip)
            .take(MAX_PROBE_ADDRS)
            .collect();
        let allowed = self.dial_back_limit.allow(now, asker_ip).is_ok();
        let listen = &self.setup.listen_addrs;
        let own_ips: Vec<IpAddr> = listen.iter().map(|a| a.ip().to_canonical()).collect();
        // Helpers are untranslated nodes only (DHT servers, or peers whose
        // packets come from an address they listen on): a helper behind NAT
        // probes the asker's NAT from its own NAT mapping and plants an
        // unreplied conntrack entry there (Linux), which breaks a later punch
        // between the two on those ports. Likely strangers to the asker
        // first: its lookups have talked to DHT servers, so untranslated
        // nodes that are not servers, on IPs where no server is, come first.
        let server_ips: HashSet<IpAddr> = (peers.iter())
            .filter(|p| p.server)
            .map(|p| p.remote.ip().to_canonical())
            .collect();
        let mut helpers: Vec<(bool, bool, ConnId, SocketAddr)> = (peers.iter())
            .filter(|p| {
                let ip = p.remote.ip().to_canonical();
                let fits = match ask.source {
                    ProbeSource::OtherIp => !own_ips.contains(&ip),
                    ProbeSource::OtherPort => own_ips.contains(&ip) && !listen.contains(&p.remote),
                    ProbeSource::Unknown(_) => false,
                };
                let eligible = p.server || p.untranslated;
                p.conn != from && p.peer != asker && ip != asker_ip && fits && eligible
            })
            .map(|p| {
                let shared_ip = server_ips.contains(&p.remote.ip().to_canonical());
                (p.server, shared_ip, p.conn, p.remote)
            })
            .collect();
        // Stable: ties keep the Node's order.
        helpers.sort_by_key(|(server, shared_ip, _, _)| (*server, *shared_ip));
        helpers.truncate(MAX_HELPERS);
        let status = if !allowed || addrs.is_empty() {
            DialBackStatus::Refused
        } else if helpers.is_empty() {
            DialBackStatus::NoHelper
        } else {
            DialBackStatus::Forwarded
        };
        let mut forwarded = Vec::new();
        if status == DialBackStatus::Forwarded {
            let probe = Message::from(DialBackProbe {
                nonce: ask.nonce,
                addrs,
            });
            for (_, _, conn, remote) in helpers {
                let frame = probe.clone();
                self.out.push(ReachOutput::Send { conn, frame });
                forwarded.push(remote);
            }
            self.stats.dial_backs_forwarded += 1;
        } else {
            self.stats.dial_backs_declined += 1;
        }
        let frame = Message::from(DialBackResult {
            request_id: ask.request_id,
            status,
            helpers: forwarded,
        });
        self.out.push(ReachOutput::Send { conn: from, frame });
    }

    /// Y's side: send the probe from `sender`'s DIAL_BACK_PROBE (module docs:
    /// only toward the sender's own IP, or from a dial-back server; targets
    /// within the address policy and the per-target limit). Returns how many
    /// targets were probed.
    pub fn handle_probe_request(
        &mut self,
        now: Instant,
        sender: &PeerConn,
        probe: DialBackProbe,
    ) -> Result<usize, ProbeRefusal> {
        self.touch(now);
        let sender_ip = sender.remote.ip().to_canonical();
        if self.probe_request_limit.allow(now, sender_ip).is_err() {
            self.stats.probe_requests_refused += 1;
            return Err(ProbeRefusal::RateLimited);
        }
        let helper = sender.server && sender.untranslated;
        let request = stun::Message::binding(Class::Request, TransactionId(probe.nonce));
        let Ok(payload) = request.encode() else {
            return Err(ProbeRefusal::NoTarget);
        };
        let mut probed = 0;
        for addr in probe.addrs.into_iter().take(MAX_PROBE_ADDRS) {
            let own = addr.ip().to_canonical() == sender_ip;
            if !self.policy.permits(&addr) || !(own || helper) {
                self.stats.probe_targets_refused += 1;
                continue;
            }
            if self.probe_limit.allow(now, addr.ip()).is_err() {
                self.stats.probes_rate_limited += 1;
                continue;
            }
            probed += 1;
            for _ in 0..PROBE_COPIES {
                self.stats.probes_sent += 1;
                self.out.push(ReachOutput::Transmit(Transmit {
                    source: None,
                    destination: addr,
                    payload: payload.clone(),
                    segment_size: None,
                    ttl: None,
                }));
            }
        }
        if probed == 0 {
            self.stats.probe_requests_refused += 1;
            return Err(ProbeRefusal::NoTarget);
        }
        Ok(probed)
    }
}
