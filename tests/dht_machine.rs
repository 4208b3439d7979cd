//! The DHT machine through its public API: operations over a small
//! in-memory network, and every kind of bad input.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use macula::Child;
use macula::dht::{
    Contact, Dht, DhtConfig, DhtEvent, DhtOutput, ErrorCode, Failure, Inbound, Mode, RejectReason,
    Request, RequestId, Response, StoreStatus,
};
use macula::id::{Identity, NodeId, Realm, RecordKey, RecordKind};
use macula::record::SignedRecord;

const UNIX: u64 = 1_800_000_000_000;

#[allow(clippy::disallowed_methods)] // Tests need some instant to add to.
fn epoch() -> Instant {
    Instant::now()
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 4433))
}

fn identity(i: usize) -> Identity {
    Identity::from_seed([i as u8 + 1; 32])
}

fn contact(i: usize) -> Contact {
    Contact::new(identity(i).node_id(), addr(i))
}

/// An inbound request's sender: `contact`, a server when `server`, seen at
/// its first address.
fn inbound(contact: &Contact, server: bool) -> Inbound {
    Inbound {
        id: contact.id,
        server,
        claimed: contact.addrs.to_vec(),
        source: contact.addrs.first().copied(),
        proven: Vec::new(),
    }
}

fn key(name: &str) -> RecordKey {
    RecordKey::new(&Realm::new("io.macula").unwrap(), RecordKind::Rpc, name)
}

fn dht(i: usize, config: DhtConfig) -> Dht {
    Dht::new(config, identity(i), i as u64)
}

fn drain(d: &mut Dht) -> Vec<DhtOutput> {
    std::iter::from_fn(|| d.poll_output()).collect()
}

fn requests(outputs: &[DhtOutput]) -> Vec<(RequestId, Contact, Request)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            DhtOutput::Request {
                request_id,
                peer,
                request,
            } => Some((*request_id, peer.clone(), request.clone())),
            _ => None,
        })
        .collect()
}

fn events(outputs: &[DhtOutput]) -> Vec<DhtEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            DhtOutput::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn reply_of(outputs: &[DhtOutput]) -> Option<Response> {
    outputs.iter().find_map(|o| match o {
        DhtOutput::Reply { response, .. } => Some(response.clone()),
        _ => None,
    })
}

/// Servers that deliver every message at once, in order.
struct Net {
    nodes: Vec<Dht>,
    now: Instant,
    unix: u64,
    events: Vec<(usize, DhtEvent)>,
}

impl Net {
    fn new(n: usize, config: DhtConfig) -> Self {
        let mut net = Self {
            nodes: (0..n).map(|i| dht(i, config.clone())).collect(),
            now: epoch(),
            unix: UNIX,
            events: Vec::new(),
        };
        // Everyone joins through node 0, one after the other.
        for i in 1..n {
            let now = net.now;
            net.nodes[i].bootstrap(now, vec![contact(0)]);
            net.run();
        }
        net.events.clear();
        net
    }

    fn index(&self, id: &NodeId) -> usize {
        self.nodes.iter().position(|d| d.local_id() == *id).unwrap()
    }

    /// Node `i` stores `value` under `k` (5 s to confirm), and the network
    /// runs until quiet.
    fn store(&mut self, i: usize, k: RecordKey, value: &'static [u8]) {
        let (now, unix) = (self.now, self.unix);
        let timeout = Duration::from_secs(5);
        let value = Bytes::from_static(value);
        self.nodes[i]
            .store_with_confirmation(now, unix, k, value, timeout)
            .unwrap();
        self.run();
    }

    fn run(&mut self) {
        let mut queue: VecDeque<(usize, DhtOutput)> = VecDeque::new();
        loop {
            for (i, d) in self.nodes.iter_mut().enumerate() {
                queue.extend(drain(d).into_iter().map(|o| (i, o)));
            }
            let Some((from, output)) = queue.pop_front() else {
                return;
            };
            let (now, unix) = (self.now, self.unix);
            match output {
                DhtOutput::Request {
                    request_id,
                    peer,
                    request,
                } => {
                    let to = self.index(&peer.id);
                    self.nodes[to].handle_request(
                        now,
                        unix,
                        &inbound(&contact(from), true),
                        request_id,
                        request,
                    );
                }
                DhtOutput::Reply {
                    request_id,
                    peer,
                    response,
                } => {
                    let to = self.index(&peer);
                    let from_id = self.nodes[from].local_id();
                    self.nodes[to].handle_response(now, unix, &from_id, request_id, response);
                }
                DhtOutput::Event(e) => self.events.push((from, e)),
            }
        }
    }
}

#[test]
fn find_node_finds_the_closest_nodes_over_one_or_disjoint_paths() {
    for paths in [1, 3] {
        let config = DhtConfig {
            disjoint_paths: paths,
            ..DhtConfig::default()
        };
        let mut net = Net::new(30, config);
        let target = identity(17).node_id();
        let now = net.now;
        net.nodes[3].find_node(now, target);
        net.run();
        let [(3, DhtEvent::NodesFound { closest, stats, .. })] = &net.events[..] else {
            panic!("{:?}", net.events);
        };
        let mut truth: Vec<NodeId> = (0..30)
            .filter(|&i| i != 3)
            .map(|i| identity(i).node_id())
            .collect();
        truth.sort_by_key(|n| target.distance(n));
        let got: Vec<NodeId> = closest.iter().map(|c| c.id).collect();
        assert_eq!(got, truth[..20], "{paths} paths");
        assert_eq!(got[0], target);
        assert!(stats.requests >= 20 && !stats.timed_out);
    }
}

#[test]
fn a_confirmed_store_is_found_by_a_query_then_cached() {
    let mut net = Net::new(30, DhtConfig::default());
    let (now, k) = (net.now, key("echo"));
    net.nodes[5]
        .store_with_confirmation(
            now,
            UNIX,
            k,
            Bytes::from_static(b"v1"),
            Duration::from_secs(5),
        )
        .unwrap();
    net.run();
    let [
        (
            5,
            DhtEvent::StoreConfirmed {
                acked,
                quorum,
                success,
                republish,
                ..
            },
        ),
    ] = &net.events[..]
    else {
        panic!("{:?}", net.events);
    };
    assert_eq!(
        (acked.len(), *quorum, *success, *republish),
        (20, 11, true, false)
    );
    assert_eq!(net.nodes[5].metrics().store_acks, 20);
    assert_eq!(net.nodes[5].metrics().store_success_rate(), Some(1.0));
    assert_eq!(net.nodes[5].running_operations(), 0);
    assert_eq!(net.nodes[5].outstanding_requests(), 0);
    net.events.clear();

    net.nodes[9].query_with_response(now, UNIX, k, Duration::from_secs(5));
    net.run();
    let [
        (
            9,
            DhtEvent::ValuesFound {
                records,
                answered,
                from_cache: false,
                ..
            },
        ),
    ] = &net.events[..]
    else {
        panic!("{:?}", net.events);
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, Bytes::from_static(b"v1"));
    assert_eq!(records[0].provider(), identity(5).node_id());
    assert!(answered.len() >= 20);
    net.events.clear();

    net.nodes[9].query_with_response(
        now + Duration::from_secs(59),
        UNIX,
        k,
        Duration::from_secs(5),
    );
    let out = drain(&mut net.nodes[9]);
    assert!(requests(&out).is_empty(), "served from the cache");
    assert!(
        matches!(&events(&out)[..], [DhtEvent::ValuesFound { from_cache: true, records, .. }] if records.len() == 1)
    );
    assert_eq!(net.nodes[9].metrics().cache_hits, 1);
    assert_eq!(net.nodes[9].metrics().cache_misses, 1);
    // Once uncached, a query asks the network even inside the TTL (issue 17).
    net.nodes[9].uncache(&k);
    net.nodes[9].query_with_response(
        now + Duration::from_secs(59),
        UNIX,
        k,
        Duration::from_secs(5),
    );
    assert!(
        !requests(&drain(&mut net.nodes[9])).is_empty(),
        "asks the network"
    );
    assert_eq!(net.nodes[9].metrics().cache_hits, 1);
    // After the cache TTL the query goes to the network again.
    net.nodes[9].query_with_response(
        now + Duration::from_secs(61),
        UNIX,
        k,
        Duration::from_secs(5),
    );
    assert!(!requests(&drain(&mut net.nodes[9])).is_empty());
}

#[test]
fn records_are_republished_and_expire() {
    let config = DhtConfig::default();
    let mut net = Net::new(25, config.clone());
    let (start, k) = (net.now, key("a"));
    net.store(2, k, b"x");
    let holders = |net: &Net, unix: u64| {
        net.nodes
            .iter()
            .filter(|d| !d.records().get(&k, unix).is_empty())
            .count()
    };
    assert_eq!(holders(&net, UNIX), 20);
    net.events.clear();
    // At 240 s the owner signs a fresh copy and stores it again.
    net.now = start + config.republish_interval;
    net.unix = UNIX + config.republish_interval.as_millis() as u64;
    net.nodes[2].handle_timeout(net.now, net.unix);
    net.run();
    assert!(matches!(
        net.events[..],
        [(
            2,
            DhtEvent::StoreConfirmed {
                republish: true,
                success: true,
                ..
            }
        )]
    ));
    let ttl_ms = config.record_ttl.as_millis() as u64;
    assert_eq!(
        holders(&net, UNIX + ttl_ms),
        20,
        "the fresh copy outlives the first TTL"
    );
    // Without republishing, records are hidden then swept after their TTL.
    net.nodes[2].unpublish(&k);
    let late = net.unix + ttl_ms;
    assert_eq!(holders(&net, late), 0);
    for d in &mut net.nodes {
        d.handle_timeout(start + Duration::from_secs(1000), late);
    }
    assert!(net.nodes.iter().all(|d| d.records().is_empty()));
}

#[test]
fn a_store_made_with_a_small_table_is_made_again_once_the_table_has_grown() {
    // Issue 17: records stored while the network was forming (3 nodes in the
    // table) were held by nodes that later died or fell out of the k
    // closest, and waited 240 s for their republish.
    let config = DhtConfig::default();
    let mut net = Net::new(5, config.clone());
    let (start, k) = (net.now, key("early"));
    let at = |second: u64| start + Duration::from_secs(second);
    net.store(3, k, b"x");
    net.events.clear();
    let republished = |net: &mut Net, second: u64| {
        net.now = at(second);
        net.unix = UNIX + second * 1000;
        let (now, unix) = (net.now, net.unix);
        net.nodes[3].handle_timeout(now, unix);
        net.run();
        let stores: Vec<usize> = (net.events.drain(..))
            .filter_map(|(from, event)| match event {
                DhtEvent::StoreConfirmed {
                    republish: true,
                    acked,
                    ..
                } if from == 3 => Some(acked.len()),
                _ => None,
            })
            .collect();
        stores
    };
    // A small network whose tables stay as they are: the republish interval.
    for second in (10..=230).step_by(10) {
        assert_eq!(
            republished(&mut net, second),
            [] as [usize; 0],
            "at {second} s"
        );
    }
    // Twenty-five more nodes join; node 3's table grows past twice its size.
    for i in 5..30 {
        net.nodes.push(dht(i, config.clone()));
        let now = net.now;
        net.nodes[i].bootstrap(now, vec![contact(0)]);
        net.run();
        net.nodes[3].find_node(now, contact(i).id);
        net.run();
    }
    net.events.clear();
    assert!(net.nodes[3].table().len() >= 8);
    // Stored again within the sweep, before the republish interval, on the
    // k closest of the network it now sees.
    assert_eq!(republished(&mut net, 235), [20]);
    assert_eq!(republished(&mut net, 236), [] as [usize; 0], "once");
}

/// A node whose table holds `peers` (they sent it requests as servers).
fn node_knowing(config: DhtConfig, peers: &[usize]) -> (Dht, Instant) {
    let t0 = epoch();
    let mut d = dht(0, config);
    for &p in peers {
        d.handle_request(
            t0,
            UNIX,
            &inbound(&contact(p), true),
            RequestId(p as u64),
            Request::Ping,
        );
    }
    drain(&mut d);
    assert_eq!(d.table().len(), peers.len());
    (d, t0)
}

#[test]
fn replies_that_match_nothing_are_counted_and_dropped() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1, 2]);
    d.find_node(t0, identity(50).node_id());
    let sent = requests(&drain(&mut d));
    assert_eq!(sent.len(), 2);
    let (id1, peer1, _) = sent[0].clone();
    let (id2, peer2, _) = sent[1].clone();
    let empty = || Response::Nodes { closer: vec![] };
    // Never issued.
    d.handle_response(t0, UNIX, &peer1.id, RequestId(9_999), empty());
    assert_eq!(d.metrics().unknown_replies, 1);
    // From someone we did not ask.
    d.handle_response(t0, UNIX, &identity(7).node_id(), id1, empty());
    assert_eq!(d.metrics().wrong_peer_replies, 1);
    // The right one, then a duplicate.
    d.handle_response(t0, UNIX, &peer1.id, id1, empty());
    d.handle_response(t0, UNIX, &peer1.id, id1, empty());
    assert_eq!(d.metrics().late_replies, 1);
    // After its deadline (unknown RTT: the 5 s cap), a reply is late.
    let late = t0 + Duration::from_secs(5);
    d.handle_timeout(late, UNIX);
    assert_eq!(d.metrics().request_timeouts, 1);
    d.handle_response(late, UNIX, &peer2.id, id2, empty());
    assert_eq!(d.metrics().late_replies, 2);
    let out = drain(&mut d);
    assert!(
        matches!(&events(&out)[..], [DhtEvent::NodesFound { closest, .. }] if closest.len() == 1)
    );
    assert!(
        d.table().is_stale(&peer2.id),
        "the silent peer is no longer handed out"
    );
    assert!(!d.table().is_stale(&peer1.id));
    assert_eq!((d.running_operations(), d.outstanding_requests()), (0, 0));
}

#[test]
fn malformed_replies_count_as_failures() {
    let config = DhtConfig {
        k: 2,
        ..DhtConfig::default()
    };
    let (mut d, t0) = node_knowing(config, &[1, 2]);
    d.find_node(t0, identity(50).node_id());
    let sent = requests(&drain(&mut d));
    // Too many contacts for k = 2.
    let oversized = Response::Nodes {
        closer: (10..13).map(contact).collect(),
    };
    d.handle_response(t0, UNIX, &sent[0].1.id, sent[0].0, oversized);
    // The wrong kind of reply.
    d.handle_response(t0, UNIX, &sent[1].1.id, sent[1].0, Response::Pong);
    assert_eq!(d.metrics().malformed_replies, 2);
    let out = drain(&mut d);
    assert!(
        matches!(&events(&out)[..], [DhtEvent::NodesFound { closest, stats, .. }] if closest.is_empty() && stats.failed == 2)
    );
    // More records than a key can hold: each would cost a signature check.
    let config = DhtConfig {
        store_limits: macula::dht::StoreLimits {
            max_records_per_key: 2,
            ..Default::default()
        },
        ..DhtConfig::default()
    };
    let (mut d, t0) = node_knowing(config, &[1]);
    d.query_with_response(t0, UNIX, key("k"), Duration::from_secs(5));
    let sent = requests(&drain(&mut d));
    let records = (1..4).map(|i| signed(i, key("k"), b"v", UNIX)).collect();
    let flood = Response::Value {
        records,
        omitted: 0,
        closer: vec![],
    };
    d.handle_response(t0, UNIX, &sent[0].1.id, sent[0].0, flood);
    assert_eq!(d.metrics().malformed_replies, 1);
    let out = drain(&mut d);
    assert!(
        matches!(&events(&out)[..], [DhtEvent::ValuesFound { records, .. }] if records.is_empty())
    );
    // A STORE reply with the wrong number of statuses.
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let value = Bytes::from_static(b"v");
    d.store_with_confirmation(t0, UNIX, key("k"), value, Duration::from_secs(9))
        .unwrap();
    let sent = requests(&drain(&mut d));
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(t0, UNIX, &sent[0].1.id, sent[0].0, empty);
    let store = requests(&drain(&mut d));
    let short = Response::Stored { statuses: vec![] };
    d.handle_response(t0, UNIX, &store[0].1.id, store[0].0, short);
    assert_eq!(d.metrics().malformed_replies, 1);
    let out = drain(&mut d);
    assert!(
        matches!(&events(&out)[..], [DhtEvent::StoreConfirmed { success: false, acked, .. }] if acked.is_empty())
    );
}

#[test]
fn our_own_id_is_never_trusted_or_contacted() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let me = Contact::new(d.local_id(), addr(0));
    d.handle_request(t0, UNIX, &inbound(&me, true), RequestId(1), Request::Ping);
    assert!(
        drain(&mut d).is_empty(),
        "no reply to a node claiming our id"
    );
    assert_eq!(d.metrics().self_id_claims, 1);
    assert!(!d.table().contains(&me.id));
    // A reply naming us among closer contacts: we never ask ourselves.
    d.find_node(t0, identity(50).node_id());
    let sent = requests(&drain(&mut d));
    let reply = Response::Nodes {
        closer: vec![me.clone(), contact(3)],
    };
    d.handle_response(t0, UNIX, &sent[0].1.id, sent[0].0, reply);
    let next = requests(&drain(&mut d));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.id, contact(3).id);
}

#[test]
fn a_peer_that_left_is_no_longer_handed_out_until_it_answers_again() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1, 2]);
    d.handle_peer_left(&contact(1).id);
    assert!(d.table().is_stale(&contact(1).id));
    let find = Request::FindNode {
        target: identity(1).node_id(),
    };
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(3), false),
        RequestId(7),
        find.clone(),
    );
    let Some(Response::Nodes { closer }) = reply_of(&drain(&mut d)) else {
        panic!("no reply")
    };
    assert_eq!(
        closer,
        vec![contact(2)],
        "the node that left is not handed out"
    );

    // Back again: its request revives it.
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(1), true),
        RequestId(8),
        Request::Ping,
    );
    drain(&mut d);
    assert!(!d.table().is_stale(&contact(1).id));
    d.handle_request(t0, UNIX, &inbound(&contact(3), false), RequestId(9), find);
    let Some(Response::Nodes { closer }) = reply_of(&drain(&mut d)) else {
        panic!("no reply")
    };
    assert!(closer.contains(&contact(1)), "{closer:?}");
}

#[test]
fn clients_are_served_but_never_handed_out_and_client_nodes_do_not_serve() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let find = Request::FindNode {
        target: identity(2).node_id(),
    };
    d.handle_request(t0, UNIX, &inbound(&contact(2), false), RequestId(1), find);
    let Some(Response::Nodes { closer }) = reply_of(&drain(&mut d)) else {
        panic!("no reply")
    };
    assert_eq!(closer, vec![contact(1)]);
    assert!(!d.table().contains(&contact(2).id));
    // A server we could not dial back is not handed out either.
    let nowhere = Contact {
        addrs: Default::default(),
        ..contact(3)
    };
    d.handle_request(
        t0,
        UNIX,
        &inbound(&nowhere, true),
        RequestId(2),
        Request::Ping,
    );
    assert_eq!(reply_of(&drain(&mut d)), Some(Response::Pong));
    assert!(!d.table().contains(&nowhere.id));

    let client_config = DhtConfig {
        mode: Mode::Client,
        ..DhtConfig::default()
    };
    let mut client = dht(5, client_config);
    client.handle_request(
        t0,
        UNIX,
        &inbound(&contact(1), true),
        RequestId(1),
        Request::Ping,
    );
    assert_eq!(
        reply_of(&drain(&mut client)),
        Some(Response::Error(ErrorCode::Refused))
    );
    assert!(client.table().is_empty());
}

#[test]
fn inbound_requests_are_bounded_per_peer() {
    let config = DhtConfig {
        inbound_burst: 3,
        inbound_per_sec: 1,
        ..DhtConfig::default()
    };
    let (mut d, t0) = node_knowing(config, &[]);
    let replies: Vec<Option<Response>> = (0..5)
        .map(|i| {
            d.handle_request(
                t0,
                UNIX,
                &inbound(&contact(1), true),
                RequestId(i),
                Request::Ping,
            );
            reply_of(&drain(&mut d))
        })
        .collect();
    let pongs = replies
        .iter()
        .filter(|r| **r == Some(Response::Pong))
        .count();
    assert_eq!(pongs, 3);
    assert_eq!(replies[4], Some(Response::Error(ErrorCode::Overloaded)));
    assert_eq!(d.metrics().inbound_overloaded, 2);
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(2), true),
        RequestId(9),
        Request::Ping,
    );
    assert_eq!(reply_of(&drain(&mut d)), Some(Response::Pong), "per peer");
}

fn signed(i: usize, k: RecordKey, value: &'static [u8], at: u64) -> SignedRecord {
    SignedRecord::sign(&identity(i), k, Bytes::from_static(value), at, 300)
}

#[test]
fn stores_verify_every_record_and_bound_the_batch() {
    let config = DhtConfig {
        max_store_batch: 3,
        ..DhtConfig::default()
    };
    let (mut d, t0) = node_knowing(config, &[]);
    let k = key("k");
    let good = signed(1, k, b"a", UNIX);
    let mut forged = signed(2, k, b"b", UNIX);
    forged.value = Bytes::from_static(b"c");
    let mut unsigned = signed(3, k, b"d", UNIX);
    unsigned.signature = [0; 64];
    let expired = signed(4, k, b"e", UNIX - 301_000);
    let records = vec![good, forged, unsigned];
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(1), true),
        RequestId(1),
        Request::Store { records },
    );
    let statuses = vec![
        StoreStatus::Stored,
        StoreStatus::Rejected(RejectReason::BadSignature),
        StoreStatus::Rejected(RejectReason::BadSignature),
    ];
    assert_eq!(
        reply_of(&drain(&mut d)),
        Some(Response::Stored { statuses })
    );
    let records = vec![expired];
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(1), true),
        RequestId(2),
        Request::Store { records },
    );
    let statuses = vec![StoreStatus::Rejected(RejectReason::Expired)];
    assert_eq!(
        reply_of(&drain(&mut d)),
        Some(Response::Stored { statuses })
    );
    assert_eq!(d.metrics().rejected_records, 3);
    let records = (0..4).map(|i| signed(i, k, b"x", UNIX)).collect();
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(1), true),
        RequestId(3),
        Request::Store { records },
    );
    assert_eq!(
        reply_of(&drain(&mut d)),
        Some(Response::Error(ErrorCode::TooLarge))
    );
    assert_eq!(d.records().len(), 1);
}

#[test]
fn forged_and_misplaced_records_in_replies_are_rejected() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let k = key("k");
    d.query_with_response(t0, UNIX, k, Duration::from_secs(5));
    let sent = requests(&drain(&mut d));
    assert!(matches!(sent[0].2, Request::FindValue { key } if key == k));
    let mut forged = signed(2, k, b"b", UNIX);
    forged.issued_at_ms += 1;
    let records = vec![
        signed(1, k, b"old", UNIX - 1),
        signed(1, k, b"new", UNIX),
        forged,
        signed(3, key("other"), b"c", UNIX),
        signed(4, k, b"gone", UNIX - 400_000),
    ];
    let reply = Response::Value {
        records,
        omitted: 0,
        closer: vec![],
    };
    d.handle_response(t0, UNIX, &sent[0].1.id, sent[0].0, reply);
    let out = drain(&mut d);
    let [
        DhtEvent::ValuesFound {
            records, answered, ..
        },
    ] = &events(&out)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].value,
        Bytes::from_static(b"new"),
        "newest per provider"
    );
    assert_eq!(answered, &vec![contact(1).id]);
    assert_eq!(d.metrics().rejected_records, 3);
}

#[test]
fn a_store_is_retried_with_backoff_after_connection_failures_at_most_three_times() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let value = Bytes::from_static(b"v");
    d.store_with_confirmation(t0, UNIX, key("k"), value, Duration::from_secs(60))
        .unwrap();
    let sent = requests(&drain(&mut d));
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(t0, UNIX, &sent[0].1.id, sent[0].0, empty);
    let mut now = t0;
    let mut store = requests(&drain(&mut d));
    let mut delays = Vec::new();
    for _ in 0..3 {
        assert!(matches!(store[..], [(_, _, Request::Store { .. })]));
        d.handle_failure(now, store[0].0, Failure::Connection);
        assert!(drain(&mut d).is_empty(), "not resent at once");
        let at = d.poll_timeout().unwrap();
        delays.push(at - now);
        now = at;
        d.handle_timeout(now, UNIX);
        store = requests(&drain(&mut d));
    }
    // base 250 ms doubling, jitter in [0.5, 1.5).
    let ms = Duration::from_millis;
    for (d, nominal) in delays.iter().zip([ms(250), ms(500), ms(1000)]) {
        assert!(*d >= nominal / 2 && *d < nominal * 3 / 2, "{delays:?}");
    }
    d.handle_failure(now, store[0].0, Failure::Connection);
    let out = drain(&mut d);
    assert!(
        matches!(&events(&out)[..], [DhtEvent::StoreConfirmed { success: false, acked, .. }] if acked.is_empty())
    );
    assert_eq!(d.metrics().store_retries, 3);
}

#[test]
fn a_peer_that_keeps_failing_trips_its_breaker() {
    let (mut d, mut now) = node_knowing(DhtConfig::default(), &[1]);
    for _ in 0..5 {
        d.find_node(now, identity(50).node_id());
        let sent = requests(&drain(&mut d));
        d.handle_failure(now, sent[0].0, Failure::Refused);
        drain(&mut d);
        now += Duration::from_millis(10);
        // The failed peer is stale now; its next request revives it.
        d.handle_request(
            now,
            UNIX,
            &inbound(&contact(1), true),
            RequestId(0),
            Request::Ping,
        );
        drain(&mut d);
    }
    d.find_node(now, identity(50).node_id());
    assert!(requests(&drain(&mut d)).is_empty(), "the breaker is open");
    assert_eq!(d.metrics().breaker_rejections, 1);
    // After the cool-down one probe goes through.
    now += DhtConfig::default().breaker_cool_down;
    d.find_node(now, identity(50).node_id());
    assert_eq!(requests(&drain(&mut d)).len(), 1);
}

#[test]
fn stores_for_one_peer_in_one_tick_go_out_as_one_batch() {
    // Peer 1 answers; peer 2 is silent, so both lookups end together when
    // its requests time out, and both records leave for peer 1 in one batch.
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1, 2]);
    for name in ["a", "b"] {
        let value = Bytes::from_static(b"v");
        d.store_with_confirmation(t0, UNIX, key(name), value, Duration::from_secs(60))
            .unwrap();
    }
    let sent = requests(&drain(&mut d));
    assert_eq!(sent.len(), 4);
    for (id, peer, _) in sent.iter().filter(|(_, p, _)| p.id == contact(1).id) {
        let empty = Response::Nodes { closer: vec![] };
        d.handle_response(t0, UNIX, &peer.id, *id, empty);
    }
    assert!(requests(&drain(&mut d)).is_empty());
    d.handle_timeout(t0 + Duration::from_secs(5), UNIX);
    let stores = requests(&drain(&mut d));
    let [(_, peer, Request::Store { records })] = &stores[..] else {
        panic!("{stores:?}")
    };
    assert_eq!(peer.id, contact(1).id);
    assert_eq!(records.len(), 2);
}

#[test]
fn request_deadlines_follow_the_connection_rtt() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1, 2]);
    let ms = Duration::from_millis;
    d.handle_rtt(contact(1).id, ms(40));
    d.find_node(t0, identity(50).node_id());
    let sent = requests(&drain(&mut d));
    let id_of = |n: usize| {
        sent.iter()
            .find(|(_, c, _)| c.id == contact(n).id)
            .unwrap()
            .0
    };
    // Peer 1's request goes out on its connection at once.
    d.handle_sent(t0, id_of(1), ms(40));
    // Soft (lookup) deadlines first: one exchange plus two RTTs of slack,
    // 3 x 40 ms for the measured peer; the other has no connection yet and
    // gets the same for its handshake at the typical RTT (40 ms).
    assert_eq!(d.poll_timeout(), Some(t0 + ms(120)));
    // Its connection comes up at 50 ms with a 60 ms RTT and the request goes
    // out: the wait restarts (3 x 60 ms), and its hard deadline moves from
    // the 5 s cap to 6 x 60 ms.
    d.handle_rtt(contact(2).id, ms(60));
    d.handle_sent(t0 + ms(50), id_of(2), ms(60));
    d.handle_timeout(t0 + ms(120), UNIX);
    assert_eq!(d.poll_timeout(), Some(t0 + ms(230)));
    d.handle_timeout(t0 + ms(230), UNIX);
    // Both peers are overdue, and nobody else can answer: the lookup awaits
    // their late answers until their requests fail for good.
    assert!(events(&drain(&mut d)).is_empty());
    // Hard deadlines: 6 x 40 ms for the measured peer, 50 + 6 x 60 ms for
    // the other.
    assert_eq!(d.poll_timeout(), Some(t0 + ms(240)));
    d.handle_timeout(t0 + ms(240), UNIX);
    assert_eq!(d.metrics().request_timeouts, 1);
    assert!(events(&drain(&mut d)).is_empty());
    assert_eq!(d.poll_timeout(), Some(t0 + ms(410)));
    d.handle_timeout(t0 + ms(410), UNIX);
    assert!(
        matches!(&events(&drain(&mut d))[..], [DhtEvent::NodesFound { closest, .. }] if closest.is_empty())
    );
}

/// A node that knows only peer 1, at `rtt`, and started `lookups` lookups,
/// each asking peer 1: the node, the start and the requests.
fn asking_one_peer(rtt: Duration, lookups: usize) -> (Dht, Instant, Vec<RequestId>) {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    d.handle_rtt(contact(1).id, rtt);
    for target in 50..50 + lookups {
        d.find_node(t0, identity(target).node_id());
    }
    let sent: Vec<RequestId> = requests(&drain(&mut d)).iter().map(|r| r.0).collect();
    assert_eq!(sent.len(), lookups);
    (d, t0, sent)
}

#[test]
fn a_request_waiting_for_its_connection_has_until_the_cap() {
    // The peer's RTT is known (a connection of its own to us, which ours
    // does not ride), but our request waits for our own handshake, which
    // lost a packet: it does not fail a few RTTs after it was made.
    let ms = Duration::from_millis;
    let (mut d, t0, sent) = asking_one_peer(ms(40), 1);
    let id = &sent[0];
    d.handle_timeout(t0 + ms(1000), UNIX);
    assert_eq!(d.metrics().request_timeouts, 0);
    // It goes out at 1 s: 6 x 40 ms from then.
    d.handle_sent(t0 + ms(1000), *id, ms(40));
    d.handle_timeout(t0 + ms(1239), UNIX);
    assert_eq!(d.metrics().request_timeouts, 0);
    d.handle_timeout(t0 + ms(1240), UNIX);
    assert_eq!(d.metrics().request_timeouts, 1);
    // Never sent: it fails at the cap.
    d.find_node(t0 + ms(2000), identity(51).node_id());
    drain(&mut d);
    d.handle_timeout(t0 + ms(6999), UNIX);
    assert_eq!(d.metrics().request_timeouts, 1);
    d.handle_timeout(t0 + ms(7000), UNIX);
    assert_eq!(d.metrics().request_timeouts, 2);
    drain(&mut d);
    // A report for a request that is no longer outstanding changes nothing.
    d.handle_sent(t0 + ms(7000), *id, ms(40));
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.outstanding_requests(), 0);
}

#[test]
fn an_answer_gives_the_other_requests_on_its_connection_more_time() {
    // Two lookups ask peer 1 at once; one loss holds up both answers on the
    // shared connection, the first comes at 200 ms: the second is only
    // queued behind it, and gets 6 RTTs from then.
    let ms = Duration::from_millis;
    let (mut d, t0, sent) = asking_one_peer(ms(40), 2);
    let [a, b] = &sent[..] else {
        panic!("{sent:?}")
    };
    d.handle_sent(t0, *a, ms(40));
    d.handle_sent(t0, *b, ms(40));
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(t0 + ms(200), UNIX, &contact(1).id, *a, empty.clone());
    d.handle_timeout(t0 + ms(439), UNIX);
    assert_eq!(d.metrics().request_timeouts, 0, "moved from 240 to 440 ms");
    d.handle_response(t0 + ms(439), UNIX, &contact(1).id, *b, empty);
    assert_eq!(d.metrics().late_replies, 0);
    let found = events(&drain(&mut d));
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn answers_never_give_a_request_more_than_the_cap() {
    // A peer that answers one request now and then keeps the others alive
    // at most until the cap from when they were made.
    let ms = Duration::from_millis;
    let (mut d, t0, sent) = asking_one_peer(ms(600), 3); // 6 x 600 ms: 3.6 s
    for id in &sent {
        d.handle_sent(t0, *id, ms(600));
    }
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(t0 + ms(3000), UNIX, &contact(1).id, sent[0], empty.clone());
    d.handle_response(t0 + ms(4500), UNIX, &contact(1).id, sent[1], empty);
    // 4.5 s + 3.6 s is past the 5 s cap: the last fails at the cap.
    d.handle_timeout(t0 + ms(4999), UNIX);
    assert_eq!(d.metrics().request_timeouts, 0);
    d.handle_timeout(t0 + ms(5000), UNIX);
    assert_eq!(d.metrics().request_timeouts, 1);
}

/// A request the test node sent: its id, the peer and the request.
type Asked = (RequestId, Contact, Request);

/// A lookup for two closest nodes (k = 2) that asked peers 1 and 2, with a
/// typical RTT of 40 ms learned elsewhere: the node, and the closer and the
/// farther request.
fn two_asked() -> (Dht, Asked, Asked) {
    let config = DhtConfig {
        k: 2,
        ..DhtConfig::default()
    };
    let (mut d, t0) = node_knowing(config, &[1, 2]);
    let target = identity(50).node_id();
    d.handle_rtt(contact(4).id, Duration::from_millis(40));
    d.find_node(t0, target);
    let mut sent = requests(&drain(&mut d));
    assert_eq!(sent.len(), 2, "both asked");
    sent.sort_by_key(|(_, c, _)| target.distance(&c.id));
    let far = sent.pop().expect("two");
    let near = sent.pop().expect("two");
    (d, near, far)
}

/// [`two_asked`], where the farther peer answered at 40 ms with peer 3 and
/// peer 3 was asked: the node, the closer request and peer 3's.
fn third_asked() -> (Dht, Asked, Asked) {
    let (mut d, near, far) = two_asked();
    let closer = Response::Nodes {
        closer: vec![contact(3)],
    };
    let t = epoch() + Duration::from_millis(40);
    d.handle_response(t, UNIX, &far.1.id, far.0, closer);
    let mut third = requests(&drain(&mut d));
    assert_eq!(third.len(), 1, "peer 3 asked");
    (d, near, third.pop().expect("one"))
}

/// [`third_asked`], where peer 3 answered at 90 ms and the closer peer's
/// wait ran out while its request was out on a connection (`connected`) or
/// waited for one. Returns the lookup's event, if it ended, and the closer
/// peer with its request.
fn closer_peer_late(connected: bool) -> (Dht, Vec<DhtEvent>, Contact, RequestId) {
    let (mut d, near, third) = third_asked();
    let ms = Duration::from_millis;
    if connected {
        d.handle_sent(epoch(), near.0, ms(40));
    }
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(epoch() + ms(90), UNIX, &contact(3).id, third.0, empty);
    d.handle_timeout(epoch() + ms(130), UNIX);
    let ended = events(&drain(&mut d));
    (d, ended, near.1, near.0)
}

#[test]
fn a_lookup_awaits_a_late_closer_peer_whose_connection_is_up() {
    // The closest node's answer was only late (a lost packet): the lookup
    // waited for it rather than ending on a farther one (dht_scale's
    // closest-found rate fell with near candidates asked at once).
    let (mut d, ended, near, id) = closer_peer_late(true);
    assert!(ended.is_empty(), "the overdue closer peer holds the end");
    let t = epoch() + Duration::from_millis(200);
    d.handle_response(t, UNIX, &near.id, id, Response::Nodes { closer: vec![] });
    let found = events(&drain(&mut d));
    assert!(
        matches!(&found[..], [DhtEvent::NodesFound { closest, .. }] if closest.first().map(|c| c.id) == Some(near.id)),
        "{found:?}"
    );
}

#[test]
fn a_lookup_does_not_wait_for_a_peer_it_never_reached() {
    let (mut d, ended, near, id) = closer_peer_late(false);
    assert!(
        matches!(&ended[..], [DhtEvent::NodesFound { closest, .. }] if closest.len() == 2 && closest.iter().all(|c| c.id != near.id)),
        "{ended:?}"
    );
    // Had its request gone out later, it would be awaited again; the lookup
    // is over, so nothing changes.
    let t = epoch() + Duration::from_millis(150);
    d.handle_sent(t, id, Duration::from_millis(40));
    assert!(events(&drain(&mut d)).is_empty());
}

#[test]
fn a_peer_given_up_on_before_its_request_went_out_is_awaited_again() {
    // The closer peer has no connection yet: its wait runs out at 120 ms
    // (3 x the typical 40 ms) while peer 3 has not answered yet.
    let (mut d, near, third) = third_asked();
    let ms = Duration::from_millis;
    d.handle_timeout(epoch() + ms(120), UNIX);
    // Its connection comes up and the request goes out: it is alive.
    d.handle_sent(epoch() + ms(125), near.0, ms(40));
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(
        epoch() + ms(130),
        UNIX,
        &contact(3).id,
        third.0,
        empty.clone(),
    );
    assert!(
        events(&drain(&mut d)).is_empty(),
        "the closer peer holds the end"
    );
    d.handle_response(epoch() + ms(200), UNIX, &near.1.id, near.0, empty);
    let found = events(&drain(&mut d));
    assert!(
        matches!(&found[..], [DhtEvent::NodesFound { closest, .. }] if closest.first().map(|c| c.id) == Some(near.1.id)),
        "{found:?}"
    );
}

#[test]
fn a_full_bucket_pings_its_oldest_entry_before_replacing_it() {
    let config = DhtConfig {
        k: 1,
        ..DhtConfig::default()
    };
    let t0 = epoch();
    let mut d = dht(0, config);
    let me = d.local_id();
    let mut far = (1..200).filter(|&i| me.bucket_index(&contact(i).id) == Some(255));
    let (a, b) = (far.next().unwrap(), far.next().unwrap());
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(a), true),
        RequestId(1),
        Request::Ping,
    );
    drain(&mut d);
    d.handle_request(
        t0,
        UNIX,
        &inbound(&contact(b), true),
        RequestId(2),
        Request::Ping,
    );
    let pings = requests(&drain(&mut d));
    assert!(matches!(&pings[..], [(_, p, Request::Ping)] if p.id == contact(a).id));
    assert!(d.table().contains(&contact(a).id) && !d.table().contains(&contact(b).id));
    d.handle_failure(t0, pings[0].0, Failure::Connection);
    assert!(d.table().contains(&contact(b).id) && !d.table().contains(&contact(a).id));
}

#[test]
fn a_bootstrap_that_found_too_few_peers_is_retried_with_backoff() {
    let t0 = epoch();
    let mut d = dht(0, DhtConfig::default());
    let q = d.bootstrap(t0, vec![contact(1)]);
    let mut now = t0;
    for attempt in 0..4u32 {
        let sent = requests(&drain(&mut d));
        let [(id, peer, Request::FindNode { target })] = &sent[..] else {
            panic!("attempt {attempt}: {sent:?}")
        };
        assert_eq!((peer.id, *target), (contact(1).id, d.local_id()));
        // The seed knows nobody yet.
        let empty = Response::Nodes { closer: vec![] };
        d.handle_response(now, UNIX, &peer.id, *id, empty);
        let out = drain(&mut d);
        if attempt == 0 {
            let expected = DhtEvent::Bootstrapped {
                query: q,
                table_size: 1,
            };
            assert_eq!(events(&out), vec![expected]);
        } else {
            assert!(events(&out).is_empty(), "retries are silent");
        }
        if attempt == 3 {
            // Three retries at most: next is the periodic bucket refresh.
            let refresh = now + DhtConfig::default().refresh_interval;
            assert_eq!(d.poll_timeout(), Some(refresh));
            break;
        }
        let at = d.poll_timeout().unwrap();
        assert_eq!(at - now, Duration::from_secs(1 << attempt));
        now = at;
        d.handle_timeout(now, UNIX);
    }
}

#[test]
fn buckets_beyond_the_nearest_neighbour_are_refreshed_after_bootstrap_and_periodically() {
    let t0 = epoch();
    let mut d = dht(0, DhtConfig::default());
    let me = d.local_id();
    // A seed a bit closer than half the id space: buckets above its own
    // are empty and get refreshed.
    let (seed, bucket) = (1..500)
        .map(|i| (i, me.bucket_index(&contact(i).id).unwrap()))
        .find(|(_, b)| *b <= 252)
        .unwrap();
    let answer_all = |d: &mut Dht, now: Instant| {
        let sent = requests(&drain(d));
        for (id, peer, _) in &sent {
            let empty = Response::Nodes { closer: vec![] };
            d.handle_response(now, UNIX, &peer.id, *id, empty);
        }
        sent
    };
    d.bootstrap(t0, vec![contact(seed)]);
    answer_all(&mut d, t0);
    let refreshes = answer_all(&mut d, t0);
    let targets: Vec<usize> = refreshes
        .iter()
        .map(|(_, _, r)| match r {
            Request::FindNode { target } => me.bucket_index(target).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(targets, (bucket + 1..256).collect::<Vec<_>>());
    // Ten minutes later, again (with the self-lookup retry, as the table is
    // still short).
    let later = t0 + DhtConfig::default().refresh_interval;
    d.handle_timeout(later, UNIX);
    let again = answer_all(&mut d, later);
    let refreshed = again
        .iter()
        .filter(|(_, _, r)| matches!(r, Request::FindNode { target } if *target != me))
        .count();
    assert_eq!(refreshed, 256 - bucket - 1);
}

#[test]
fn queries_include_the_records_this_node_holds_and_publishes() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[]);
    let k = key("k");
    let theirs = signed(1, k, b"theirs", UNIX);
    let request = Request::Store {
        records: vec![theirs.clone()],
    };
    d.handle_request(t0, UNIX, &inbound(&contact(1), true), RequestId(1), request);
    let timeout = Duration::from_secs(5);
    d.store_with_confirmation(t0, UNIX, k, Bytes::from_static(b"ours"), timeout)
        .unwrap();
    drain(&mut d);
    let query = d.query_with_response(t0, UNIX + 1, k, timeout);
    // The only peer known does not answer: what is found is held here.
    let mut outputs = drain(&mut d);
    for (request_id, _, _) in requests(&outputs) {
        d.handle_failure(t0, request_id, Failure::Refused);
        outputs.extend(drain(&mut d));
    }
    let found = events(&outputs).into_iter().find_map(|e| match e {
        DhtEvent::ValuesFound {
            query: q, records, ..
        } if q == query => Some(records),
        _ => None,
    });
    let mut values: Vec<_> = found
        .expect("the query ended")
        .iter()
        .map(|r| (r.provider(), r.value.clone()))
        .collect();
    values.sort();
    let mut expected = vec![
        (theirs.provider(), Bytes::from_static(b"theirs")),
        (d.local_id(), Bytes::from_static(b"ours")),
    ];
    expected.sort();
    assert_eq!(values, expected);
}

#[test]
fn an_overloaded_answer_or_a_lost_relay_path_leaves_the_peer_live() {
    for overloaded in [true, false] {
        let (mut d, now) = node_knowing(DhtConfig::default(), &[1]);
        d.find_node(now, identity(50).node_id());
        let sent = requests(&drain(&mut d));
        let peer = sent[0].1.id;
        if overloaded {
            let busy = Response::Error(ErrorCode::Overloaded);
            d.handle_response(now, UNIX, &peer, sent[0].0, busy);
        } else {
            d.handle_failure(now, sent[0].0, Failure::Path);
        }
        drain(&mut d);
        assert!(!d.table().is_stale(&peer), "overloaded: {overloaded}");
        assert_eq!(d.table().closest(&peer, 1, None).len(), 1);
    }
    // A refusal or a lost connection does make it stale.
    let (mut d, now) = node_knowing(DhtConfig::default(), &[1]);
    d.find_node(now, identity(50).node_id());
    let sent = requests(&drain(&mut d));
    d.handle_failure(now, sent[0].0, Failure::Connection);
    assert!(d.table().is_stale(&sent[0].1.id));
}

/// Issue 13, contact poisoning: a server's claimed listen addresses are
/// handed out only when they are where its packets come from.
#[test]
fn claimed_addresses_are_handed_out_only_when_seen_as_the_source() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let poisoned: Vec<SocketAddr> = [
        "127.0.0.1:6499",
        "0.0.0.0:1",
        "224.0.0.1:1",
        "[fd6d:6163:756c:6100::9]:1",
        "192.0.2.77:4433",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let liar = Inbound {
        id: identity(2).node_id(),
        server: true,
        claimed: poisoned.clone(),
        source: Some("198.51.100.2:50000".parse().unwrap()),
        // A check proved an address it does not claim: that proves nothing.
        proven: vec!["198.51.100.2:4433".parse().unwrap()],
    };
    d.handle_request(t0, UNIX, &liar, RequestId(1), Request::Ping);
    assert_eq!(reply_of(&drain(&mut d)), Some(Response::Pong));
    assert!(!d.table().contains(&liar.id));
    assert_eq!(d.metrics().unverified_claims, 1);

    // A server whose claim matches its source enters at that address only,
    // and one claiming nothing at its source.
    let source: SocketAddr = "198.51.100.3:4433".parse().unwrap();
    let honest = Inbound {
        id: identity(3).node_id(),
        server: true,
        claimed: vec!["[2001:db8::3]:4433".parse().unwrap(), source],
        source: Some(source),
        proven: Vec::new(),
    };
    d.handle_request(t0, UNIX, &honest, RequestId(2), Request::Ping);
    let quiet = Inbound {
        id: identity(4).node_id(),
        server: true,
        claimed: vec![],
        source: Some("198.51.100.4:4433".parse().unwrap()),
        proven: Vec::new(),
    };
    d.handle_request(t0, UNIX, &quiet, RequestId(3), Request::Ping);
    // A server whose claim differs from its source enters once the claim
    // answered a check, at the checked address only.
    let checked: SocketAddr = "198.51.100.6:4433".parse().unwrap();
    let mut behind = Inbound {
        id: identity(6).node_id(),
        server: true,
        claimed: vec![checked, "192.0.2.66:4433".parse().unwrap()],
        source: Some("198.51.100.60:4433".parse().unwrap()),
        proven: Vec::new(),
    };
    d.handle_request(t0, UNIX, &behind, RequestId(5), Request::Ping);
    assert!(!d.table().contains(&behind.id));
    behind.proven = vec![checked];
    d.handle_claims_verified(t0, &behind);
    assert_eq!(
        d.table().get(&behind.id).map(|c| c.addrs.to_vec()),
        Some(vec![checked])
    );
    drain(&mut d);
    let find = Request::FindNode {
        target: identity(9).node_id(),
    };
    d.handle_request(t0, UNIX, &inbound(&contact(5), false), RequestId(4), find);
    let Some(Response::Nodes { closer }) = reply_of(&drain(&mut d)) else {
        panic!("no reply")
    };
    let handed: Vec<SocketAddr> = closer.iter().flat_map(|c| c.addrs.clone()).collect();
    assert_eq!(closer.len(), 4, "{closer:?}");
    for a in &poisoned {
        assert!(!handed.contains(a), "{a} handed out");
    }
    assert!(handed.contains(&source) && handed.contains(&"198.51.100.4:4433".parse().unwrap()));
    assert!(!handed.contains(&"[2001:db8::3]:4433".parse().unwrap()));
}

/// Contacts in lookup replies pass the address policy before they are asked
/// or kept: no unspecified, multicast, virtual, or (for a node not on
/// loopback) loopback address is ever dialed.
#[test]
fn lookup_contacts_with_forbidden_addresses_are_dropped() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    d.find_node(t0, identity(50).node_id());
    let sent = requests(&drain(&mut d));
    let bad = |i: usize, a: &str| Contact::new(identity(i).node_id(), a.parse().unwrap());
    let closer = vec![
        bad(10, "0.0.0.0:4433"),
        bad(11, "224.0.0.1:1"),
        bad(12, "[fd6d:6163:756c:6100::1]:1"),
        bad(13, "127.0.0.1:6499"),
        bad(14, "192.0.2.1:0"),
        contact(15),
    ];
    d.handle_response(
        t0,
        UNIX,
        &sent[0].1.id,
        sent[0].0,
        Response::Nodes { closer },
    );
    let asked = requests(&drain(&mut d));
    let peers: Vec<NodeId> = asked.iter().map(|(_, p, _)| p.id).collect();
    assert_eq!(peers, vec![contact(15).id]);
    assert_eq!(d.metrics().addresses_refused, 5);
}

/// Issue 13, DHT key lockout: 64 identities fill a key with 16 KiB records.
/// Their TTL is capped, the reply still fits one frame (saying how much it
/// left out), and a lone honest provider still gets in and is answered.
#[test]
fn a_flooded_key_stays_readable_and_writable() {
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let k = key("victim.procedure");
    let flood = |ttl: u32| -> Vec<SignedRecord> {
        (100..164)
            .map(|i| {
                let value = Bytes::from(vec![0xee; 16 << 10]);
                SignedRecord::sign(&identity(i), k, value, UNIX, ttl)
            })
            .collect()
    };
    let attacker = |i: usize| Inbound {
        id: identity(i).node_id(),
        server: false,
        claimed: vec![],
        source: Some(SocketAddr::from(([203, 0, 113, i as u8], 4433))),
        proven: Vec::new(),
    };
    // ttl u32::MAX: every record refused with a typed status.
    for (n, chunk) in flood(u32::MAX).chunks(16).enumerate() {
        let store = Request::Store {
            records: chunk.to_vec(),
        };
        d.handle_request(t0, UNIX, &attacker(100 + n), RequestId(n as u64), store);
        let Some(Response::Stored { statuses }) = reply_of(&drain(&mut d)) else {
            panic!("no ack")
        };
        assert!(
            statuses
                .iter()
                .all(|s| *s == StoreStatus::Rejected(RejectReason::TtlTooLong))
        );
    }
    assert_eq!(d.metrics().records_bad_time, 64);
    assert!(d.records().is_empty());
    // The same within the cap: the key fills up.
    for (n, chunk) in flood(3600).chunks(16).enumerate() {
        let store = Request::Store {
            records: chunk.to_vec(),
        };
        d.handle_request(
            t0,
            UNIX,
            &attacker(100 + n),
            RequestId(10 + n as u64),
            store,
        );
        drain(&mut d);
    }
    assert_eq!(d.records().get(&k, UNIX).len(), 64);
    // 64 x 16.5 KiB is more than a frame, and far more than the 64 KiB a
    // reply may take: FIND_VALUE is cut to fit.
    let (records, omitted) = find_value(&mut d, t0, k, 31);
    assert!(omitted > 0);
    assert_eq!(records.len() + omitted, 64);
    assert_eq!(d.metrics().records_left_out, omitted as u64);
    // The honest provider, from another network, still gets in.
    let honest = SignedRecord::sign(&identity(7), k, Bytes::from_static(b"here"), UNIX, 300);
    let from = Inbound {
        source: Some("198.51.100.7:4433".parse().unwrap()),
        ..inbound(&contact(7), true)
    };
    let store = Request::Store {
        records: vec![honest.clone()],
    };
    d.handle_request(t0, UNIX, &from, RequestId(30), store);
    assert_eq!(
        reply_of(&drain(&mut d)),
        Some(Response::Stored {
            statuses: vec![StoreStatus::Stored]
        })
    );
    assert_eq!(d.metrics().records_evicted, 1);
    // FIND_VALUE answers in one frame, with the honest record in it.
    let (records, _) = find_value(&mut d, t0, k, 32);
    assert_eq!(records[0], honest);
}

/// Asks `d` for the records under `k`; checks the reply fits one frame.
fn find_value(d: &mut Dht, t0: Instant, k: RecordKey, id: u64) -> (Vec<SignedRecord>, usize) {
    let find = Request::FindValue { key: k };
    d.handle_request(t0, UNIX, &inbound(&contact(8), false), RequestId(id), find);
    let Some(Response::Value {
        records,
        omitted,
        closer,
    }) = reply_of(&drain(d))
    else {
        panic!("no reply")
    };
    let body = 14
        + closer
            .iter()
            .map(macula::dht::fit::contact_len)
            .sum::<usize>()
        + records
            .iter()
            .map(macula::dht::fit::record_len)
            .sum::<usize>();
    assert!(body <= 64 << 10, "{body}");
    (records, omitted)
}

#[test]
fn a_lookup_asks_stale_contacts_when_no_live_one_is_left() {
    // Issue 17: a private node cut off by a partition saw every request fail, so every
    // routing-table entry went stale. Stale entries are never handed out and only an
    // answer revives one, so after the heal each lookup started with nobody to ask and
    // ended empty at once (`NoProvider { tried: 0 }` on every call, for good).
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1, 2]);
    let target = identity(9).node_id();
    d.find_node(t0, target);
    for (id, _, _) in requests(&drain(&mut d)) {
        d.handle_failure(t0, id, Failure::Connection);
    }
    drain(&mut d);
    assert!(d.table().is_stale(&contact(1).id) && d.table().is_stale(&contact(2).id));

    // The partition heals: the next lookup asks the stale entries, and an answer
    // revives the one that gave it.
    d.find_node(t0, target);
    let sent = requests(&drain(&mut d));
    let mut asked: Vec<Contact> = sent.iter().map(|(_, c, _)| c.clone()).collect();
    asked.sort_by_key(|c| c.id);
    let mut expected = vec![contact(1), contact(2)];
    expected.sort_by_key(|c| c.id);
    assert_eq!(asked, expected, "both stale entries are asked");
    let (id, peer, _) = &sent[0];
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(t0, UNIX, &peer.id, *id, empty);
    assert!(!d.table().is_stale(&peer.id), "its answer revives it");
}

#[test]
fn stale_contacts_asked_after_an_outage_get_their_breaker_probe_at_once() {
    // Issue 17: the outage that made every entry stale also opened every breaker (five
    // failed requests each), so the lookups that asked the stale entries had each
    // request refused unsent, until the 30 s cool-down ended.
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let target = identity(9).node_id();
    for _ in 0..DhtConfig::default().breaker_threshold {
        d.find_node(t0, target);
        for (id, _, _) in requests(&drain(&mut d)) {
            d.handle_failure(t0, id, Failure::Connection);
        }
        drain(&mut d);
    }
    assert!(d.table().is_stale(&contact(1).id));
    let later = t0 + Duration::from_secs(1);
    d.find_node(later, target);
    let sent = requests(&drain(&mut d));
    assert_eq!(
        sent.len(),
        1,
        "the stale entry is asked despite its breaker"
    );
    assert_eq!(d.metrics().breaker_rejections, 0);
    // One probe: until it is settled, a second lookup is refused.
    d.find_node(later, target);
    assert!(requests(&drain(&mut d)).is_empty(), "one probe at a time");
    assert_eq!(d.metrics().breaker_rejections, 1);
    let empty = Response::Nodes { closer: vec![] };
    d.handle_response(later, UNIX, &contact(1).id, sent[0].0, empty);
    drain(&mut d);
    d.find_node(later, target);
    assert_eq!(requests(&drain(&mut d)).len(), 1, "its answer closed it");
}

#[test]
fn a_value_lookup_no_node_answered_is_not_cached() {
    // Issue 17: a lookup that ran during a partition found nothing because nobody
    // answered; kept in the 60 s value cache, its empty answer hid the records for a
    // minute after the heal.
    let (mut d, t0) = node_knowing(DhtConfig::default(), &[1]);
    let k = key("svc");
    d.query_with_response(t0, UNIX, k, Duration::from_secs(5));
    for (id, _, _) in requests(&drain(&mut d)) {
        d.handle_failure(t0, id, Failure::Connection);
    }
    drain(&mut d);
    d.query_with_response(t0, UNIX, k, Duration::from_secs(5));
    let out = drain(&mut d);
    assert_eq!(requests(&out).len(), 1, "asked the network again");
    assert!(events(&out).is_empty(), "no cached answer");
    let (id, peer, _) = requests(&out)[0].clone();
    let empty = Response::Value {
        records: vec![],
        omitted: 0,
        closer: vec![],
    };
    d.handle_response(t0, UNIX, &peer.id, id, empty);
    drain(&mut d);
    d.query_with_response(t0, UNIX, k, Duration::from_secs(5));
    let out = drain(&mut d);
    assert!(requests(&out).is_empty(), "an answered lookup is cached");
    let [DhtEvent::ValuesFound { from_cache, .. }] = &events(&out)[..] else {
        panic!("{:?}", events(&out));
    };
    assert!(from_cache);
}
