//! The node's settings, with every default in one place.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::connection::Bounds;
use crate::connection::admission::AdmissionConfig;
use crate::dht::DhtConfig;
use crate::id::{NodeId, Realm};
use crate::nat::portmap::PortMapConfig;
use crate::pool::PoolConfig;
use crate::pubsub::PubSubConfig;
use crate::quic::TransportSettings;
use crate::relay::RelayConfig;
use crate::rpc::RpcConfig;
use crate::tls::PeerVerification;
use crate::wire::{self, Limits};

use super::{ReachConfig, UpgradeConfig};

/// The default [`NodeConfig::connect_timeout`]: a few round trips of a slow
/// relayed path, far below QUIC's idle timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default [`NodeConfig::handshake_timeout`]: room for a slow relayed
/// path's handshake with retransmissions, far below QUIC's 60 s idle
/// timeout (which alone would bound a handshake nobody answers).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a [`Node`](super::Node) can be told at start.
///
/// | setting | default |
/// | --- | --- |
/// | transport | [`TransportSettings::default`]: keep-alive 15 s, idle timeout 60 s, 100 streams |
/// | pool | [`PoolConfig::new`]: 100 outbound, 1000 inbound, idle TTL 5 min |
/// | dht | [`DhtConfig::default`]: k = 20, α = 3, record TTL 300 s, republish 240 s |
/// | rpc | [`RpcConfig::new`]: 16 MiB payloads, attempt window = call timeout / 3, 1024 calls open, 256 handled (128 per caller), every caller allowed (`callers`) |
/// | pubsub | [`PubSubConfig::new`]: 1024 messages queued per subscriber, window 64, reorder window 256, every publisher allowed (`publishers`) |
/// | relay | [`RelayConfig::default`]: relaying only while public (not while found private), 256 circuits, 8 reservations and 32 circuits per IP, 1 MiB/s per node |
/// | upgrade | [`UpgradeConfig::default`]: the dialer of a relayed connection punches; the opener PINGs an idle direct path every 15 s; liveness probes (every ≥ 100 ms, dead after 4 missed) only while an ack-eliciting packet waits; retry after 60 s (30 min when the NAT classes rule a punch out) |
/// | limits | [`Limits::default`]: 1 MiB frames |
/// | verification | [`PeerVerification::Identity`] |
/// | certificate_chain | `None`: a self-signed certificate of the identity |
/// | request_timeout | 10 s (a stream whose answer never comes is reset) |
/// | handshake_timeout | 10 s (a QUIC handshake not done by then is given up) |
/// | connect_timeout | 5 s, up to 15 s on a slow path (a connection whose CONNECT never comes is closed) |
/// | max_waiting_requests | 4096 requests queued for a connection or a stream |
/// | max_buffered_per_connection | 2 MiB of partial frames and unread answers per connection |
/// | reach | [`ReachConfig::default`]: STUN responder on, discovery after bootstrap and every 10 min |
/// | port_mapping | `None`: off; [`PortMapConfig::new`] with the gateway's address turns PCP / NAT-PMP on |
/// | admission | `AdmissionConfig::default`: Retry past 64 handshakes, at most 512; 32 connections per IPv4 address or IPv6 /64; 512 awaiting CONNECT; 8 per node id; 20 PINGs/s answered; 256 MiB buffered over all connections |
/// | (streamed payloads) | CALLs and REPLYs over one frame stream in chunks of half a frame; per connection, payloads of up to max(`rpc.max_payload`, `max_buffered_per_connection`) declared bytes are reassembled at once |
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The realm this node belongs to; peers of other realms are refused.
    pub realm: Realm,
    /// How peer certificates are checked.
    pub verification: PeerVerification,
    /// The certificate chain this node presents (end-entity first), for
    /// its identity's key: e.g. one a CA issued, for peers that verify with
    /// [`PeerVerification::CertificateAuthority`]. `None` presents a
    /// self-signed certificate of the identity.
    pub certificate_chain: Option<Vec<CertificateDer<'static>>>,
    /// QUIC timers and windows.
    pub transport: TransportSettings,
    /// The connection pool. Its `local` and `seed` are set by the node.
    pub pool: PoolConfig,
    /// The DHT.
    pub dht: DhtConfig,
    /// RPC. Its `seed` is set by the node.
    pub rpc: RpcConfig,
    /// Pub/sub. Its `local_id` and `first_epoch` (the start time in Unix
    /// microseconds) are set by the node.
    pub pubsub: PubSubConfig,
    /// What this node does as a relay, and its limits.
    pub relay: RelayConfig,
    /// Relay → direct upgrades (hole punching) of relayed connections.
    pub upgrade: UpgradeConfig,
    /// Frame and field size limits.
    pub limits: Limits,
    /// Addresses announced to peers in CONNECT (where others can dial us).
    pub listen_addrs: Vec<SocketAddr>,
    /// How long a request stream may wait for its answer before it is reset
    /// and its connection lease returned.
    pub request_timeout: Duration,
    /// How long after the QUIC handshake the peer's CONNECT may take before
    /// the connection is closed with DISCONNECT `protocol error`
    /// (docs/PROTOCOL.md §2); until then the connection's other streams are
    /// left unread. A slow lossy path stretches it
    /// ([`NodeConfig::connect_wait`]).
    pub connect_timeout: Duration,
    /// How long a connection's QUIC handshake may take, ours or a peer's:
    /// one not done by then is closed (a dial fails, and the pool may dial
    /// the peer again, at a newer address). Without it, a dial toward an
    /// address nobody answers from (a dead circuit, a node that was
    /// killed) waits for QUIC's idle timeout, and every errand for that
    /// peer waits on it.
    pub handshake_timeout: Duration,
    /// Requests that may wait for a connection or a free stream at once;
    /// past it a request fails at once.
    pub max_waiting_requests: usize,
    /// Bytes one connection may hold in the node's own buffers (partial
    /// frames, answers the peer has not read) before the node stops reading
    /// its streams; QUIC flow control then stops the peer. Never below one
    /// maximum frame.
    pub max_buffered_per_connection: usize,
    /// STUN, NAT discovery, dial-backs and the peer record.
    pub reach: ReachConfig,
    /// What strangers may start, and how much: handshakes, connections per
    /// network and per node id, PINGs answered, the node-wide memory budget.
    pub admission: AdmissionConfig,
    /// Port mapping on the gateway ([`crate::nat::portmap`]): off unless
    /// the gateway's address is given (the core cannot read routing
    /// tables). The socket named in requests is the first specified listen
    /// address of the gateway's family (or the address of the next
    /// `Input::LocalAddressChanged`); the mapped address becomes a punch
    /// candidate and goes into the peer record, and [`Node::shutdown`]
    /// deletes it.
    ///
    /// [`Node::shutdown`]: super::Node::shutdown
    pub port_mapping: Option<PortMapConfig>,
}

impl NodeConfig {
    /// Defaults for a node of `realm`.
    pub fn new(realm: Realm) -> Self {
        Self {
            realm: realm.clone(),
            verification: PeerVerification::Identity,
            certificate_chain: None,
            transport: TransportSettings::default(),
            pool: PoolConfig::new(NodeId::from_bytes([0; 32])),
            dht: DhtConfig::default(),
            rpc: RpcConfig::new(realm.clone(), 0),
            pubsub: PubSubConfig::new(realm, NodeId::from_bytes([0; 32]), 0),
            relay: RelayConfig::default(),
            upgrade: UpgradeConfig::default(),
            limits: Limits::default(),
            listen_addrs: Vec::new(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_waiting_requests: 4096,
            max_buffered_per_connection: 2 << 20,
            reach: ReachConfig::default(),
            admission: AdmissionConfig::default(),
            port_mapping: None,
        }
    }

    /// How long a connection whose handshake measured the smoothed round
    /// trip `rtt` waits for the peer's CONNECT: [`connect_timeout`], or
    /// on a slow path seven of quinn's probe timeouts (the CONNECT and three
    /// retransmissions, backed off), at most three `connect_timeout`s. On
    /// the link ladder's very bad cellular rung (450 ms, 8 % loss in
    /// bursts) a CONNECT to the relay lost to a burst took longer than 5 s,
    /// and the relay connection, with its reservation, was closed.
    ///
    /// [`connect_timeout`]: NodeConfig::connect_timeout
    pub fn connect_wait(&self, rtt: Duration) -> Duration {
        crate::connection::answer_wait(self.connect_timeout, rtt)
    }

    /// The per-connection buffer budget in force: the setting, raised to
    /// one whole frame so a frame can always complete.
    pub fn connection_buffer_budget(&self) -> usize {
        let frame = usize::try_from(self.limits.max_frame_len).unwrap_or(usize::MAX);
        self.max_buffered_per_connection
            .max(frame.saturating_add(wire::HEADER_LEN))
    }

    /// The bounds of each connection's buffers: the budget above, and room
    /// for streamed payloads being reassembled — the larger of
    /// `max_buffered_per_connection` and `rpc.max_payload`, so one payload
    /// of the largest size can always be accepted (`src/connection/conn.rs`
    /// explains how the two interact).
    pub(super) fn buffer_bounds(&self) -> Bounds {
        let max_payload = self.rpc.max_payload as u64;
        Bounds {
            limits: self.limits,
            budget: self.connection_buffer_budget(),
            max_payload,
            payload_room: max_payload.max(self.max_buffered_per_connection as u64),
            frames_per_second: self.admission.frames_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_wait_stretches_with_a_slow_path_within_its_bound() {
        let config = NodeConfig::new(Realm::new("test.example").expect("a valid realm"));
        let ms = Duration::from_millis;
        assert_eq!(config.connect_wait(ms(20)), ms(5_000), "a fast path");
        // 7 × (3 × 300 + 25) ms.
        assert_eq!(config.connect_wait(ms(300)), ms(6_475));
        assert_eq!(
            config.connect_wait(ms(2_000)),
            ms(15_000),
            "at most 3 × 5 s"
        );
        let strict = NodeConfig {
            connect_timeout: ms(100),
            ..config
        };
        // 7 × (3 × 4 + 25) ms: a few probe timeouts, however short the setting.
        assert_eq!(strict.connect_wait(ms(4)), ms(259));
    }
}
