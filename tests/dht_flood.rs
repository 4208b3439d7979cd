//! Issue 13, DHT key lockout, as a whole-node simulation: 64 fresh
//! identities STORE 16 KiB records under one RPC key. With ttl `u32::MAX`
//! every one is refused (TTL cap); within the cap the key fills, yet
//! FIND_VALUE still answers in one frame (cut, saying how much it left
//! out), the real provider can still announce, and a caller reaches it.
#![cfg(feature = "sim")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::epoch;
use macula::dht::{DhtEvent, Mode};
use macula::id::{NodeId, RecordKey, RecordKind};
use macula::node::Event;
use macula::rpc::RegisterOptions;
use macula::sim::{HostId, Link, Mesh, PORT, UNIX_MS, echo, realm};

/// Honest public servers (198.51.100.1..=6).
const HONEST: usize = 6;

/// A mesh of honest servers, one of which serves `procedure` once the
/// flood is over; 64 attackers in 203.0.113.0/24 each store a 16 KiB
/// record with a TTL of `ttl_secs` under the procedure's key first.
fn flooded(seed: u64, procedure: &str, ttl_secs: u32) -> (Mesh, RecordKey) {
    let link = Link::with_latency(Duration::from_millis(5));
    let mut mesh = Mesh::public(HONEST, seed, epoch(), link, |_, _| {});
    assert!(mesh.bootstrap_all(), "bootstrap");
    let key = RecordKey::new(&realm(), RecordKind::Rpc, procedure);
    let attackers: Vec<HostId> = (1..=64u8)
        .map(|i| {
            mesh.add_public(SocketAddr::from(([203, 0, 113, i], PORT)), |config| {
                config.dht.record_ttl = Duration::from_secs(u64::from(ttl_secs));
                // Clients: the honest servers stay the closest to the key.
                config.dht.mode = Mode::Client;
                config.reach.auto_discover = false;
            })
        })
        .collect();
    assert!(
        mesh.bootstrap(mesh.hosts[0], &attackers),
        "attackers bootstrap"
    );
    for &attacker in &attackers {
        let value = Bytes::from(vec![0xee; 16 << 10]);
        let timeout = Duration::from_secs(10);
        let stored =
            (mesh.world).with_machine(attacker, |node, now| node.store(now, key, value, timeout));
        stored.expect("a 16 KiB value is within the limit");
    }
    mesh.settle(Duration::from_secs(15));
    (mesh, key)
}

/// The honest servers holding a live record of `provider` under `key`.
fn holders(mesh: &Mesh, key: &RecordKey, provider: NodeId) -> usize {
    (mesh.hosts[..HONEST].iter())
        .filter(|&&h| {
            let held = mesh.node(h).dht().records().get(key, UNIX_MS);
            held.iter().any(|r| r.provider() == provider)
        })
        .count()
}

/// The provider at host 1 registers `procedure`; host 5 calls it and must
/// get the provider's answer.
fn provider_announces_and_is_reached(mesh: &mut Mesh, key: &RecordKey, procedure: &str) {
    let provider = mesh.hosts[1];
    mesh.register(provider, procedure, RegisterOptions::default());
    mesh.settle(Duration::from_secs(5));
    assert!(
        holders(mesh, key, mesh.id(provider)) > HONEST / 2,
        "announced"
    );
    let call = mesh.call(mesh.hosts[HONEST - 1], procedure, &b"hi"[..]);
    let result = mesh.await_call(call, |world, host, event| {
        echo(world, host, event).expect("answer");
    });
    assert_eq!(result, Ok(Bytes::from_static(b"echo:hi")));
}

#[test]
fn records_with_an_endless_ttl_are_refused_and_the_provider_is_reached() {
    let procedure = "victim.echo";
    let (mut mesh, key) = flooded(131, procedure, u32::MAX);
    for &h in &mesh.hosts[..HONEST] {
        assert!(mesh.node(h).dht().records().get(&key, UNIX_MS).is_empty());
    }
    let refused: u64 = (mesh.hosts[..HONEST].iter())
        .map(|&h| mesh.node(h).dht().metrics().records_bad_time)
        .sum();
    assert!(refused >= 64, "{refused}");
    provider_announces_and_is_reached(&mut mesh, &key, procedure);
}

#[test]
fn a_key_full_of_large_records_still_answers_in_one_frame_and_takes_the_provider() {
    let procedure = "victim.other";
    let (mut mesh, key) = flooded(132, procedure, 3600);
    let full = (mesh.hosts[..HONEST].iter())
        .filter(|&&h| mesh.node(h).dht().records().get(&key, UNIX_MS).len() == 64)
        .count();
    assert!(full > 0, "the flood filled the key somewhere");
    // A FIND_VALUE of all 64 is more than a frame: answered, cut, counted.
    let asker = mesh.hosts[HONEST - 1];
    (mesh.world).with_machine(asker, |node, now| {
        node.query(now, key, Duration::from_secs(10))
    });
    let mut found = None;
    let done = mesh.drive(Duration::from_secs(15), |_, host, event| match event {
        Event::Dht(DhtEvent::ValuesFound { records, stats, .. }) if host == asker => {
            found = Some((records.len(), stats));
            true
        }
        _ => false,
    });
    assert!(done, "the query finished");
    let (records, stats) = found.expect("values");
    assert!(
        records > 0 && stats.answered > 0 && !stats.timed_out,
        "{records} {stats:?}"
    );
    let left_out: u64 = (mesh.hosts[..HONEST].iter())
        .map(|&h| mesh.node(h).dht().metrics().records_left_out)
        .sum();
    assert!(left_out > 0, "replies were cut to fit");
    // The honest provider, from another network, evicts one of the crowd.
    let provider = mesh.hosts[1];
    mesh.register(provider, procedure, RegisterOptions::default());
    mesh.settle(Duration::from_secs(5));
    assert!(
        holders(&mesh, &key, mesh.id(provider)) > HONEST / 2,
        "announced"
    );
    let evicted: u64 = (mesh.hosts[..HONEST].iter())
        .map(|&h| mesh.node(h).dht().metrics().records_evicted)
        .sum();
    assert!(evicted > 0);
}
