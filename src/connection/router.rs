//! The frame router: one table from message type to the child that owns it
//! and the stream it may arrive on.
//!
//! A frame on the control stream is the connection's own business (CONNECT,
//! DISCONNECT, PING, PONG) or a session frame of reachability or hole
//! punching. A frame on any other stream is either a request, on a stream
//! the peer opened, routed by its type, or an answer, on a stream we opened
//! for a request, which belongs to whoever opened it. Anything else (a
//! request on the control stream, an answer on a stream the peer opened, a
//! control frame on a request stream) is a protocol error. The phase rule
//! ([`super::phase`]) runs first: nothing reaches the router before the
//! connection is ready, except CONNECT and DISCONNECT.

use crate::wire::MessageType;

/// Who handles a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The connection itself: CONNECT, DISCONNECT, PING, PONG.
    Connection,
    /// Reachability: dial-back and capability updates.
    Reach,
    /// Hole punching and the relay → direct upgrade.
    Punch,
    /// The relay server: reservations and circuits of others.
    RelayServer,
    /// The relay client: circuits that reach us through a relay.
    RelayClient,
    /// RPC: calls to serve and their cancellations.
    Rpc,
    /// Pub/sub: publications and subscriptions.
    PubSub,
    /// The DHT: requests to serve.
    Dht,
    /// An answer: it belongs to whoever opened the stream for a request.
    Opener,
    /// Consumed by the stream's payload assembler (streamed CALL and
    /// REPLY); never dispatched on its own.
    Assembler,
}

/// Which stream a frame may arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The control stream.
    Control,
    /// A stream the peer opened for a request (or for publications).
    PeerStream,
    /// A stream we opened for a request of ours (its answer).
    OurStream,
}

/// Where a message type goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Who handles it.
    pub owner: Owner,
    /// The stream it must arrive on.
    pub lane: Lane,
}

/// The route of every message type: the one table.
pub const fn route(message_type: MessageType) -> Route {
    use Lane::{Control, OurStream, PeerStream};
    use MessageType as T;
    let (owner, lane) = match message_type {
        T::Connect | T::Disconnect | T::Ping | T::Pong => (Owner::Connection, Control),
        T::DialBack | T::DialBackResult | T::DialBackProbe | T::CapabilitiesUpdate => {
            (Owner::Reach, Control)
        }
        T::PunchOffer | T::PunchAnswer | T::PunchSync | T::PunchResult => (Owner::Punch, Control),
        T::Publish | T::PublishBatch | T::Subscribe | T::Unsubscribe => (Owner::PubSub, PeerStream),
        T::Call | T::Cancel => (Owner::Rpc, PeerStream),
        T::FindNode | T::FindValue | T::Store | T::StoreBatch => (Owner::Dht, PeerStream),
        T::RelayReserve | T::RelayRelease | T::CircuitOpen => (Owner::RelayServer, PeerStream),
        T::CircuitIncoming => (Owner::RelayClient, PeerStream),
        T::CircuitPeer => (Owner::RelayClient, Control),
        T::Reply
        | T::ErrorReply
        | T::FindNodeReply
        | T::FindValueReply
        | T::StoreAck
        | T::StoreBatchAck
        | T::RelayReserveStatus
        | T::CircuitStatus => (Owner::Opener, OurStream),
        T::PayloadSize | T::PayloadChunk => (Owner::Assembler, PeerStream),
    };
    Route { owner, lane }
}

/// The lane a frame on a request stream arrived on: who opened the stream.
pub fn stream_lane(opened_by_us: bool) -> Lane {
    if opened_by_us {
        Lane::OurStream
    } else {
        Lane::PeerStream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table, pinned: every type's owner and lane.
    #[test]
    fn the_route_table_matches_its_snapshot() {
        let table: String = MessageType::ALL
            .iter()
            .map(|t| {
                let r = route(*t);
                format!("{} -> {:?} on {:?}\n", t.name(), r.owner, r.lane)
            })
            .collect();
        let pinned = include_str!("route_table.txt");
        assert_eq!(
            table, pinned,
            "the route table changed; new table:\n{table}"
        );
    }

    #[test]
    fn requests_arrive_on_streams_the_peer_opened_and_answers_on_ours() {
        assert_eq!(route(MessageType::FindNode).lane, Lane::PeerStream);
        assert_eq!(route(MessageType::FindNodeReply).lane, Lane::OurStream);
        assert_eq!(stream_lane(true), Lane::OurStream);
        assert_eq!(stream_lane(false), Lane::PeerStream);
    }
}
