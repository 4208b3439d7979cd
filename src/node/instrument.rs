//! The node's [`Metrics`]: recorded where the node sees things happen, with
//! the `now` it was given.
//!
//! Most records are one call at the place of the event (a connection
//! ready, lost or refused, a DHT operation finished, a call started, a
//! PUBLISH frame written). Events for the application are looked at once,
//! as [`Node::settle`] ends: call results and delivered messages. Numbers
//! the children keep themselves (pool size, cache hits, pub/sub counters)
//! are copied at the same moment, so [`Node::metrics`] is always current.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use quinn_proto::{ConnectionError, ConnectionHandle};

use super::{Event, Node};
use crate::collections::HashMap;
use crate::connection::Phase;
use crate::contract::Output;
use crate::dht::DhtEvent;
use crate::metrics::{
    Cache, ConnectionDirection, ConnectionErrorKind, ConnectionPath, MessageDirection, Metrics,
    PunchResult, QueryKind, RpcOutcome,
};
use crate::nat::punch::{NatClass, PunchEvent};
use crate::path::PathKind;
use crate::pool::Direction;
use crate::pubsub::{PubSubError, PubSubEvent};
use crate::rpc::{CallId, RpcError, RpcEvent};
use crate::wire::DisconnectReason;

/// Publications whose time is kept to measure delivery latency: frames of
/// older ones (the last 4,096 are kept) are not timed.
const TIMED_PUBLICATIONS: usize = 4096;

/// The metrics and what the node keeps to measure durations.
#[derive(Debug)]
pub(super) struct Instruments {
    pub(super) metrics: Metrics,
    /// When each of our open calls started (calls are bounded by
    /// `RpcConfig::max_in_flight`, and each ends with one event).
    call_started: HashMap<CallId, Instant>,
    /// When each recent publication was made, by message id, ascending.
    published_at: VecDeque<(u64, Instant)>,
    /// When each live connection became ready.
    ready_since: HashMap<ConnectionHandle, Instant>,
    /// The path of each ready connection, as counted in
    /// `Metrics::connections_by_path`.
    paths: HashMap<ConnectionHandle, ConnectionPath>,
    /// Outputs at the front of the node's queue already looked at.
    observed: usize,
}

impl Instruments {
    pub(super) fn new() -> Self {
        Self {
            metrics: Metrics::new(),
            call_started: HashMap::default(),
            published_at: VecDeque::new(),
            ready_since: HashMap::default(),
            paths: HashMap::default(),
            observed: 0,
        }
    }

    /// `Node::call` answered `call`: an open call is timed, a refused one
    /// counted at once.
    pub(super) fn call_started(&mut self, now: Instant, call: &Result<CallId, RpcError>) {
        match call {
            Ok(id) => {
                self.call_started.insert(*id, now);
            }
            Err(error) => self.metrics.record_call(outcome(error), None),
        }
    }

    /// `Node::publish` answered `published` (a refusal is counted).
    pub(super) fn published(&mut self, now: Instant, published: &Result<u64, PubSubError>) {
        let Ok(message_id) = published else {
            self.metrics.pubsub_publish_refused += 1;
            return;
        };
        if self.published_at.len() == TIMED_PUBLICATIONS {
            self.published_at.pop_front();
        }
        self.published_at.push_back((*message_id, now));
    }

    /// QUIC took the whole PUBLISH frame of `message_id` for one subscriber.
    pub(super) fn publish_written(&mut self, now: Instant, message_id: u64) {
        let at = self
            .published_at
            .partition_point(|(id, _)| *id < message_id);
        if let Some(&(id, published)) = self.published_at.get(at)
            && id == message_id
        {
            let latency = now.saturating_duration_since(published);
            self.metrics.pubsub_delivery_latency.record(latency);
        }
    }

    /// A connection became ready (both CONNECTs through).
    pub(super) fn connection_ready(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        direction: Direction,
    ) {
        let direction = match direction {
            Direction::Inbound => ConnectionDirection::Inbound,
            Direction::Outbound => ConnectionDirection::Outbound,
        };
        self.metrics.connections.bump(direction);
        self.ready_since.insert(handle, now);
    }

    /// A connection stopped being usable; its life is recorded once, if it
    /// was ever ready.
    pub(super) fn connection_ended(&mut self, now: Instant, handle: ConnectionHandle) {
        if let Some(since) = self.ready_since.remove(&handle) {
            let lived = now.saturating_duration_since(since);
            self.metrics.connection_duration.record(lived);
        }
        if let Some(path) = self.paths.remove(&handle) {
            self.left_path(path);
        }
    }

    /// One connection fewer on `path`.
    fn left_path(&mut self, path: ConnectionPath) {
        let count = self.metrics.connections_by_path.get_mut(path);
        *count = count.saturating_sub(1);
    }

    /// A ready connection's packets go over `path` (from now on: it became
    /// ready, or it switched paths).
    pub(super) fn connection_on_path(&mut self, handle: ConnectionHandle, path: PathKind) {
        let path = ConnectionPath::from(path);
        if let Some(old) = self.paths.insert(handle, path) {
            self.left_path(old);
        }
        self.metrics.connections_by_path.bump(path);
    }

    /// A punch between our NAT (`local`) and the peer's (`remote`) ended
    /// with `event` (events that end no punch are ignored).
    pub(super) fn punch_ended(&mut self, local: NatClass, remote: NatClass, event: &PunchEvent) {
        let result = match event {
            PunchEvent::Succeeded(_) => PunchResult::Success,
            PunchEvent::Failed { .. } => PunchResult::Failure,
            PunchEvent::Skipped => PunchResult::Skipped,
            _ => return,
        };
        self.metrics
            .nat_punches
            .record_result(local, remote, result);
    }

    /// A relayed connection switched to its direct path, `elapsed` after
    /// the punch's agreed start.
    pub(super) fn upgraded(&mut self, handle: ConnectionHandle, elapsed: Duration) {
        self.metrics.nat_upgrade_time.record(elapsed);
        self.connection_on_path(handle, PathKind::Direct);
    }

    /// A connection failed or was refused.
    pub(super) fn connection_error(&mut self, now: Instant, kind: ConnectionErrorKind) {
        self.metrics.record_connection_error(now, kind);
    }

    /// A DHT operation finished.
    pub(super) fn dht_event(&mut self, event: &DhtEvent) {
        match event {
            DhtEvent::StoreConfirmed { success, .. } => self.metrics.record_store(*success),
            DhtEvent::NodesFound { stats, .. } => {
                let latency = self.metrics.dht_query_latency.get_mut(QueryKind::FindNode);
                latency.record(stats.duration);
            }
            DhtEvent::ValuesFound {
                from_cache: false,
                stats,
                ..
            } => {
                let latency = self.metrics.dht_query_latency.get_mut(QueryKind::FindValue);
                latency.record(stats.duration);
            }
            DhtEvent::ValuesFound { .. } | DhtEvent::Bootstrapped { .. } => {}
        }
    }

    /// The node handed its oldest output out.
    pub(super) fn output_taken(&mut self) {
        self.observed = self.observed.saturating_sub(1);
    }
}

/// The error a lost connection counts as, given its phase before: none for
/// closes this node started, and none for a peer's close with a normal
/// reason (shutdown, idle, a duplicate connection given up).
pub(super) fn lost_error(phase: Phase, reason: &ConnectionError) -> Option<ConnectionErrorKind> {
    match (phase, reason) {
        (_, ConnectionError::LocallyClosed) => None,
        (_, ConnectionError::ApplicationClosed(close)) => {
            let reason = u8::try_from(close.error_code.into_inner())
                .map(DisconnectReason::from_code)
                .unwrap_or(DisconnectReason::ProtocolError);
            peer_close_error(phase, reason)
        }
        (Phase::Closing, _) => None,
        (Phase::Handshaking | Phase::AwaitingConnect, _) => Some(ConnectionErrorKind::Handshake),
        (Phase::Ready, ConnectionError::TimedOut) => Some(ConnectionErrorKind::Timeout),
        (Phase::Ready, _) => Some(ConnectionErrorKind::Transport),
    }
}

/// The error a peer's close for `reason` (its DISCONNECT, or its QUIC close
/// code) counts as, given the connection's phase before: none for a normal
/// reason (shutdown, idle, a duplicate connection given up) or a connection
/// this node was already closing.
pub(super) fn peer_close_error(
    phase: Phase,
    reason: DisconnectReason,
) -> Option<ConnectionErrorKind> {
    let normal = matches!(
        reason,
        DisconnectReason::Normal | DisconnectReason::Shutdown | DisconnectReason::Idle
    );
    match phase {
        _ if normal => None,
        Phase::Closing => None,
        Phase::Handshaking | Phase::AwaitingConnect => Some(ConnectionErrorKind::Handshake),
        Phase::Ready => Some(ConnectionErrorKind::ClosedByPeer),
    }
}

/// The outcome label of a call that ended with `error`.
fn outcome(error: &RpcError) -> RpcOutcome {
    match error {
        RpcError::NoProvider { .. } => RpcOutcome::NoProvider,
        RpcError::Timeout { .. } => RpcOutcome::Timeout,
        RpcError::Remote { .. } => RpcOutcome::RemoteError,
        RpcError::Refused { .. } | RpcError::Unauthorized { .. } => RpcOutcome::Refused,
        RpcError::Lost { .. } => RpcOutcome::Lost,
        RpcError::TooLarge { .. } => RpcOutcome::TooLarge,
        RpcError::Overloaded { .. } => RpcOutcome::Overloaded,
        RpcError::Cancelled => RpcOutcome::Cancelled,
        RpcError::BadName(_) | RpcError::UnknownCall(_) | RpcError::AlreadyRegistered(_) => {
            RpcOutcome::Rejected
        }
    }
}

impl Node {
    /// The node's metrics, current as of the last input or command.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.instruments.metrics
    }

    /// Looks at the events queued since the last time and copies the
    /// children's numbers (the end of every [`Node::settle`]).
    pub(super) fn observe(&mut self, now: Instant) {
        let relay_counters = self.relay_counters();
        let reach_stats = self.reach.stats();
        let instruments = &mut self.instruments;
        for output in self.out.iter().skip(instruments.observed) {
            match output {
                Output::Event(Event::Rpc(RpcEvent::Completed { call, result })) => {
                    let started = instruments.call_started.remove(call);
                    let latency = started.map(|at| now.saturating_duration_since(at));
                    let outcome = match result {
                        Ok(_) => RpcOutcome::Ok,
                        Err(error) => outcome(error),
                    };
                    instruments.metrics.record_call(outcome, latency);
                }
                Output::Event(Event::PubSub(PubSubEvent::Message { .. })) => {
                    let delivered = &mut instruments.metrics.pubsub_messages;
                    delivered.bump(MessageDirection::Delivered);
                }
                _ => {}
            }
        }
        instruments.observed = self.out.len();
        let metrics = &mut instruments.metrics;
        for (direction, pooled) in [
            (ConnectionDirection::Inbound, Direction::Inbound),
            (ConnectionDirection::Outbound, Direction::Outbound),
        ] {
            *metrics.pool_size.get_mut(direction) = self.pool.len(pooled) as u64;
        }
        let dht = self.dht.metrics();
        metrics.copy_dht_counters(dht);
        let caches = &mut metrics.caches;
        caches.get_mut(Cache::DhtRecords).hits = dht.cache_hits;
        caches.get_mut(Cache::DhtRecords).misses = dht.cache_misses;
        *caches.get_mut(Cache::RpcProviders) = self.messaging.rpc().provider_cache();
        *caches.get_mut(Cache::PubsubSubscribers) = self.messaging.pubsub().subscriber_cache();
        let pubsub = self.messaging.pubsub().stats();
        let messages = &mut metrics.pubsub_messages;
        *messages.get_mut(MessageDirection::Published) = pubsub.published;
        *messages.get_mut(MessageDirection::Sent) = pubsub.sent;
        *messages.get_mut(MessageDirection::Resent) = pubsub.resent;
        *messages.get_mut(MessageDirection::Dropped) = pubsub
            .dropped_slow
            .saturating_add(pubsub.dropped_disconnected);
        let refusals = self.messaging.rpc().stats().refusals;
        metrics.copy_messaging_counters(&refusals, &pubsub);
        metrics.copy_relay_counters(&relay_counters);
        let admission = &self.admission;
        let (handshakes, awaiting) = (admission.handshakes(), admission.awaiting_connect());
        (metrics.admission).copy(admission.counters(), handshakes, awaiting);
        metrics.admission.protocol_errors = self.counters.protocol_errors;
        metrics.copy_nat_refusals(&reach_stats, self.upgrades.counters());
        metrics.relay_circuits_active = self.relay_server.circuit_count() as u64;
        if let Some(stats) = self.portmap.as_ref().map(|portmap| portmap.stats()) {
            metrics.copy_port_mapping(&stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quinn_proto::{ApplicationClose, VarInt};

    fn closed_with(reason: DisconnectReason) -> ConnectionError {
        ConnectionError::ApplicationClosed(ApplicationClose {
            error_code: VarInt::from_u32(u32::from(reason.code())),
            reason: Bytes::new(),
        })
    }

    #[test]
    fn lost_connections_count_by_phase_and_reason() {
        use ConnectionErrorKind::*;
        let cases = [
            (Phase::Ready, ConnectionError::TimedOut, Some(Timeout)),
            (Phase::Ready, ConnectionError::Reset, Some(Transport)),
            (
                Phase::Ready,
                closed_with(DisconnectReason::ProtocolError),
                Some(ClosedByPeer),
            ),
            (Phase::Ready, closed_with(DisconnectReason::Shutdown), None),
            (Phase::Ready, ConnectionError::LocallyClosed, None),
            (
                Phase::Handshaking,
                ConnectionError::TimedOut,
                Some(Handshake),
            ),
            (
                Phase::AwaitingConnect,
                closed_with(DisconnectReason::RealmMismatch),
                Some(Handshake),
            ),
            (
                Phase::AwaitingConnect,
                closed_with(DisconnectReason::Normal),
                None,
            ),
            (Phase::Closing, ConnectionError::TimedOut, None),
        ];
        for (phase, reason, expected) in cases {
            assert_eq!(lost_error(phase, &reason), expected, "{phase:?} {reason:?}");
        }
    }

    #[test]
    fn publish_latency_is_timed_from_the_publication_while_it_is_remembered() {
        let start = crate::test_epoch();
        let mut instruments = Instruments::new();
        for id in 0..(TIMED_PUBLICATIONS as u64 + 1) {
            instruments.published(start, &Ok(id));
        }
        let later = start + std::time::Duration::from_millis(30);
        instruments.publish_written(later, 0); // forgotten: the oldest
        instruments.publish_written(later, 7);
        instruments.publish_written(later, TIMED_PUBLICATIONS as u64);
        instruments.publish_written(later, u64::MAX); // never published
        let latency = &instruments.metrics.pubsub_delivery_latency;
        assert_eq!(latency.count(), 2);
        assert_eq!(latency.sum(), std::time::Duration::from_millis(60));
    }

    #[test]
    fn refused_calls_count_without_a_latency() {
        let mut instruments = Instruments::new();
        let refused = Err(RpcError::TooLarge { size: 2, max: 1 });
        instruments.call_started(crate::test_epoch(), &refused);
        let metrics = &instruments.metrics;
        assert_eq!(*metrics.rpc_calls.get(RpcOutcome::TooLarge), 1);
        assert_eq!(
            metrics
                .rpc_call_latency
                .iter()
                .map(|(_, h)| h.count())
                .sum::<u64>(),
            0
        );
    }
}
