//! quinn-proto configuration: one place that turns macula's settings into
//! the endpoint, server, client and transport configs, with every source of
//! randomness seeded.
//!
//! quinn-proto draws randomness in a few places; each is pinned here to a
//! key derived from the node's 256-bit [`Secret`]: the endpoint RNG
//! (`rng_seed`), connection ids ([`SeededCidGenerator`]), the
//! stateless-reset key and the handshake-token key; address-validation
//! tokens (turned off: `sent(0)`, so the token
//! code that reads the OS RNG never runs). The congestion controller stays
//! Cubic (BBR seeds itself from the OS), wrapped so that a path switch does
//! not leave the connection blocked on bytes stranded on the old path
//! (`connection::congestion`). QUIC bit greasing is off so the
//! first-byte demultiplexing of the one UDP socket stays exact, and
//! connection migration is off: the path layer owns paths.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, IdleTimeout, VarInt};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::connection::congestion::SwitchAwareFactory;
use crate::id::NodeId;
use crate::secret::Secret;
use crate::tls::{NodeTls, WallClock};

/// Length of the connection ids this node issues.
pub const CID_LEN: usize = 8;

/// The transport timers and bounds of every node connection. Their defaults
/// are chosen to agree with each other (see `docs/ARCHITECTURE.md`,
/// "Timers"): keep-alives fire well inside the shortest NAT binding lifetime
/// seen in practice (30 s for unreplied Linux conntrack UDP entries), and the
/// idle timeout is several keep-alives long so one or two lost keep-alives do
/// not kill a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportSettings {
    /// QUIC PING interval on idle connections we dialed (default 15 s). A
    /// connection we accepted pings only after [`Self::acceptor_keep_alive`]
    /// without a packet from the dialer: quinn restarts the keep-alive timer on
    /// every packet received, so the dialer's PINGs keep both ends (and the
    /// NATs between them) alive and an idle connection costs one PING and one
    /// ACK per interval, not two of each.
    pub keep_alive: Duration,
    /// How long after the peer's data stops arriving a node that knows it
    /// is behind a NAT PINGs the connection once (default 1 s), so a NAT
    /// mapping lost under a node that only receives is opened again
    /// (`connection/quiet.rs`).
    pub quiet_ping: Duration,
    /// Silence after which a connection is dead (default 60 s, four
    /// keep-alive intervals). Must exceed `keep_alive`.
    pub idle_timeout: Duration,
    /// Concurrent bidirectional streams a peer may open (default 100).
    pub max_concurrent_bidi_streams: u32,
    /// Concurrent unidirectional streams a peer may open (default 0: the
    /// protocol uses bidirectional streams only).
    pub max_concurrent_uni_streams: u32,
    /// Bytes a peer may have unread on one stream (default 1.25 MiB, so a
    /// whole frame of the default 1 MiB maximum fits).
    pub stream_receive_window: u32,
    /// Bytes a peer may have unread across a connection (default 10 MiB).
    pub connection_receive_window: u32,
    /// Bytes we buffer unacknowledged per connection (default 10 MiB).
    pub send_window: u64,
    /// Datagrams a connection may write in one go (default 10): they leave
    /// as one [`crate::Transmit`] with a segment size, which a driver hands
    /// to the OS in one GSO send (or splits for a socket that takes fewer).
    /// 0 reads as 1.
    pub max_segments: usize,
    /// Ask peers to acknowledge every ack-eliciting packet at once (default
    /// false), through QUIC's ACK frequency extension (draft-ietf-quic-ack-frequency,
    /// used only when the peer supports it). Without it a peer holds the ACK of a
    /// lone packet such as a keep-alive PING for its `max_ack_delay` (25 ms),
    /// which is also what our probe timeout waits beyond the round trip, less one
    /// millisecond of slack: on a path of a millisecond or less (loopback, a LAN)
    /// a peer whose timer fires a little late draws a spurious probe timeout, two
    /// probe packets and two more ACKs. On loopback, 200 idle connections cost
    /// 16.5 datagrams a second without, 13.3 with (README, "Idle cost"; since
    /// the relayed ones PING at one beat, 7.2 without and 6.9 with).
    ///
    /// Off by default because of what it costs elsewhere. In the NAT lab's
    /// `node-reboot-new-*` (a public caller, a server behind a NAT that
    /// reboots) the caller then no longer follows the server to its new
    /// address: the server sends nothing from it before the caller finds the
    /// direct path dead and falls back to the relay (no call lost, but gaps of
    /// 526–864 ms and a new punch, against 27 ms). It turns on the server's
    /// acknowledgements: with only the server asking (the caller acknowledges
    /// at once, the server delays) the caller follows; with only the caller
    /// asking (the server acknowledges at once) it does not. So the server's
    /// first packet from its new address, 27 ms after the reboot, is its
    /// delayed ACK of the caller's last request; acknowledged at once, that
    /// ACK left before the reboot. Why the server's last response is not
    /// retransmitted from there first is not established. A relay forwarded 0.25 of
    /// plain UDP's rate per core with it, 0.70 without (one run each), and a
    /// receiver of a one-way flow acknowledges each packet its driver hands in
    /// alone rather than every second one.
    pub immediate_acks: bool,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
            quiet_ping: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_bidi_streams: 100,
            max_concurrent_uni_streams: 0,
            stream_receive_window: (5 << 20) / 4,
            connection_receive_window: 10 << 20,
            send_window: 10 << 20,
            max_segments: 10,
            immediate_acks: false,
        }
    }
}

/// A setting quinn-proto cannot take, or that breaks the timer rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicConfigError {
    /// The keep-alive must be shorter than the idle timeout.
    #[error("keep-alive {keep_alive:?} must be shorter than the idle timeout {idle_timeout:?}")]
    KeepAliveNotBelowIdleTimeout {
        /// The keep-alive interval.
        keep_alive: Duration,
        /// The idle timeout.
        idle_timeout: Duration,
    },
    /// The idle timeout does not fit QUIC's varint milliseconds.
    #[error("idle timeout {0:?} is too large for QUIC")]
    IdleTimeoutTooLarge(Duration),
    /// rustls configuration was not usable for QUIC.
    #[error("TLS configuration not usable for QUIC: {0}")]
    Crypto(String),
}

impl TransportSettings {
    /// The keep-alive of connections we accepted: twice
    /// [`keep_alive`](Self::keep_alive), but no later than halfway from it to
    /// the idle timeout (30 s by default): the acceptor's backstop, should the
    /// dialer's PINGs stop arriving.
    pub fn acceptor_keep_alive(&self) -> Duration {
        self.backstop(self.keep_alive)
    }

    /// The keep-alive of connections we accepted over a relay circuit: the
    /// backstop of the circuit dialer's [`acceptor_keep_alive`](Self::acceptor_keep_alive)
    /// (45 s by default), so the dialer's PINGs alone keep the connection
    /// up. With equal timers both ends would ping, each end's PING drawing
    /// the other's ACK, and every packet of either costs a relay-connection
    /// packet and its acknowledgement on top.
    pub fn circuit_acceptor_keep_alive(&self) -> Duration {
        self.backstop(self.acceptor_keep_alive())
    }

    /// A keep-alive later than `keep_alive`, to stand in should PINGs at
    /// `keep_alive` stop arriving: twice it, but no later than halfway from it
    /// to the idle timeout.
    fn backstop(&self, keep_alive: Duration) -> Duration {
        let halfway = keep_alive + self.idle_timeout.saturating_sub(keep_alive) / 2;
        keep_alive.saturating_mul(2).min(halfway)
    }

    /// The quinn-proto transport config of connections we dial, their
    /// congestion controllers built by `congestion`.
    pub fn transport_config(
        &self,
        congestion: &Arc<SwitchAwareFactory>,
    ) -> Result<Arc<quinn_proto::TransportConfig>, QuicConfigError> {
        self.config_with(self.keep_alive, congestion)
    }

    /// The quinn-proto transport config of connections we accept: as
    /// [`transport_config`](Self::transport_config) but with the
    /// [`acceptor_keep_alive`](Self::acceptor_keep_alive).
    pub fn acceptor_transport_config(
        &self,
        congestion: &Arc<SwitchAwareFactory>,
    ) -> Result<Arc<quinn_proto::TransportConfig>, QuicConfigError> {
        self.config_with(self.acceptor_keep_alive(), congestion)
    }

    fn config_with(
        &self,
        keep_alive: Duration,
        congestion: &Arc<SwitchAwareFactory>,
    ) -> Result<Arc<quinn_proto::TransportConfig>, QuicConfigError> {
        if self.keep_alive >= self.idle_timeout {
            return Err(QuicConfigError::KeepAliveNotBelowIdleTimeout {
                keep_alive: self.keep_alive,
                idle_timeout: self.idle_timeout,
            });
        }
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| QuicConfigError::IdleTimeoutTooLarge(self.idle_timeout))?;
        let mut config = quinn_proto::TransportConfig::default();
        if self.immediate_acks {
            let mut ack_frequency = quinn_proto::AckFrequencyConfig::default();
            ack_frequency.ack_eliciting_threshold(VarInt::from_u32(0));
            config.ack_frequency_config(Some(ack_frequency));
        }
        config
            .keep_alive_interval(Some(keep_alive))
            .max_idle_timeout(Some(idle))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.connection_receive_window))
            .send_window(self.send_window)
            .allow_spin(false)
            .datagram_receive_buffer_size(None)
            .congestion_controller_factory(congestion.clone());
        Ok(Arc::new(config))
    }
}

/// Connection ids from a seeded ChaCha20 stream: unpredictable to peers,
/// reproducible for the node that holds the seed.
pub struct SeededCidGenerator {
    rng: ChaCha20Rng,
}

impl SeededCidGenerator {
    /// A generator drawing from `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(seed),
        }
    }
}

impl ConnectionIdGenerator for SeededCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut bytes);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Wall-clock time for quinn's token code, read from the node's [`WallClock`].
struct WallClockSource(WallClock);

impl quinn_proto::TimeSource for WallClockSource {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.get().unwrap_or(0))
    }
}

/// Everything needed to build the node's quinn-proto endpoint.
pub struct QuicConfigs {
    /// The endpoint config (seeded ids and reset key, no greasing).
    pub endpoint: Arc<quinn_proto::EndpointConfig>,
    /// The server config (client certificates required, migration off).
    pub server: Arc<quinn_proto::ServerConfig>,
    /// The server config of handshakes that came over a relay circuit: as
    /// [`server`](Self::server), with the
    /// [`TransportSettings::circuit_acceptor_keep_alive`].
    pub circuit_server: Arc<quinn_proto::ServerConfig>,
    /// The seed for the endpoint's own RNG.
    pub rng_seed: [u8; 32],
    transport: Arc<quinn_proto::TransportConfig>,
    /// For connections dialed over a relay circuit: the relay connection keeps the NAT
    /// bindings open, the end-to-end one only has to beat the idle timeout.
    circuit_transport: Arc<quinn_proto::TransportConfig>,
    tls: NodeTls,
    /// The congestion controllers of every connection of the node.
    pub congestion: Arc<SwitchAwareFactory>,
}

impl QuicConfigs {
    /// Builds the configs for a node with this TLS material, transport
    /// settings and secret. `stable` keys the stateless resets: a secret the
    /// node has again after a restart (a node derives it from its identity), so
    /// a peer still holding a connection to the previous incarnation gets a
    /// reset it accepts (RFC 9000 §10.3) and drops that connection at once,
    /// instead of writing into it until its idle timeout.
    pub fn new(
        tls: NodeTls,
        settings: &TransportSettings,
        secret: &Secret,
        stable: &Secret,
    ) -> Result<Self, QuicConfigError> {
        let congestion = Arc::new(SwitchAwareFactory::default());
        let transport = settings.transport_config(&congestion)?;
        let reset_key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &stable.derive("quic-reset-key"));
        let mut endpoint = quinn_proto::EndpointConfig::new(Arc::new(reset_key));
        let cid_seed = secret.derive("quic-connection-ids");
        endpoint
            .cid_generator(move || Box::new(SeededCidGenerator::new(cid_seed)))
            .grease_quic_bit(false);

        let crypto = QuicServerConfig::try_from(tls.server_config())
            .map_err(|e| QuicConfigError::Crypto(e.to_string()))?;
        let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[])
            .extract(&secret.derive("quic-token-key"));
        let mut server = quinn_proto::ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
        let slow = settings.acceptor_transport_config(&congestion)?;
        let mut validation = quinn_proto::ValidationTokenConfig::default();
        validation.sent(0);
        server
            .transport_config(slow.clone())
            .migration(false)
            .validation_token_config(validation)
            .time_source(Arc::new(WallClockSource(tls.clock().clone())));
        let mut circuit_server = server.clone();
        circuit_server.transport_config(
            settings.config_with(settings.circuit_acceptor_keep_alive(), &congestion)?,
        );
        Ok(Self {
            endpoint: Arc::new(endpoint),
            server: Arc::new(server),
            circuit_server: Arc::new(circuit_server),
            rng_seed: secret.derive("quic-endpoint-rng"),
            transport,
            circuit_transport: slow,
            tls,
            congestion,
        })
    }

    /// The client config for dialing `peer`: its node id is what the server
    /// certificate must prove. A dial `over_circuit` (through a relay) keeps
    /// alive at the [`TransportSettings::acceptor_keep_alive`]: the relay
    /// connection keeps our NAT bindings open (should the connection go
    /// direct, the punch's opener keeps that path alive:
    /// [`crate::path::upgrade::UpgradeConfig::direct_keep_alive`]). The node
    /// PINGs such connections at its own beat, every one at once (quinn's
    /// keep-alive stays the backstop: `connection/beat.rs`).
    pub fn client_config(
        &self,
        peer: NodeId,
        over_circuit: bool,
    ) -> Result<quinn_proto::ClientConfig, QuicConfigError> {
        let crypto = QuicClientConfig::try_from(self.tls.client_config(peer))
            .map_err(|e| QuicConfigError::Crypto(e.to_string()))?;
        let mut config = quinn_proto::ClientConfig::new(Arc::new(crypto));
        let transport = if over_circuit {
            &self.circuit_transport
        } else {
            &self.transport
        };
        config.transport_config(transport.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_that_disagree_are_refused() {
        let settings = TransportSettings {
            keep_alive: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(
            settings.transport_config(&Arc::default()).err(),
            Some(QuicConfigError::KeepAliveNotBelowIdleTimeout {
                keep_alive: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(60),
            })
        );
        TransportSettings::default()
            .transport_config(&Arc::default())
            .unwrap();
    }

    #[test]
    fn an_acceptor_pings_later_than_the_dialer_and_before_the_idle_timeout() {
        let s = |keep_alive, idle_timeout| TransportSettings {
            keep_alive: Duration::from_secs(keep_alive),
            idle_timeout: Duration::from_secs(idle_timeout),
            ..Default::default()
        };
        assert_eq!(s(15, 60).acceptor_keep_alive(), Duration::from_secs(30));
        // Over a circuit the dialer pings at 30 s: the acceptor halfway to the idle timeout.
        assert_eq!(
            s(15, 60).circuit_acceptor_keep_alive(),
            Duration::from_secs(45)
        );
        // Twice 40 s would pass the idle timeout: halfway to it instead.
        assert_eq!(s(40, 60).acceptor_keep_alive(), Duration::from_secs(50));
        s(40, 60)
            .acceptor_transport_config(&Arc::default())
            .unwrap();
        assert!(
            s(60, 60)
                .acceptor_transport_config(&Arc::default())
                .is_err()
        );
    }

    #[test]
    fn connection_ids_follow_the_seed() {
        let ids = |seed| {
            let mut generator = SeededCidGenerator::new(seed);
            (0..4).map(|_| generator.generate_cid()).collect::<Vec<_>>()
        };
        assert_eq!(ids([1; 32]), ids([1; 32]));
        assert_ne!(ids([1; 32]), ids([2; 32]));
        assert_eq!(ids([1; 32])[0].len(), CID_LEN);
    }
}
