//! Embedding macula-mio in an event loop the application owns.
//!
//! One `mio::Poll` serves three sources: two macula nodes (each a
//! [`Driver`] registered under the application's own token) and a
//! `mio::Waker` through which another thread, the "application", sends
//! commands over a channel. The loop answers that thread over a second
//! channel when the nodes report what it waits for: the nodes join the
//! DHT, node B stores a record on node A and reads it back from there, and
//! the program exits.
//!
//! Run: `cargo run -p macula-mio --example embed`

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use macula::dht::DhtEvent;
use macula::id::{Realm, RecordKey, RecordKind};
use macula::node::{Event, Node, NodeConfig};
use macula_mio::{Driver, clock, random};
use mio::{Events, Poll, Token, Waker};

const NODE_A: Token = Token(0);
const NODE_B: Token = Token(1);
const COMMANDS: Token = Token(2);

/// The longest the example runs before it gives up.
const LIMIT: Duration = Duration::from_secs(10);

/// What the application thread asks the loop to do.
enum Command {
    /// Node B joins through node A.
    Join,
    /// Node B publishes a record.
    Store(Bytes),
    /// Node B looks the record up: the DHT answers from node A, where the
    /// store put it.
    Query,
    /// Leave the loop.
    Quit,
}

/// What the loop tells the application thread.
#[derive(Debug)]
enum Report {
    Joined,
    Stored { acked: usize },
    Found(Vec<Bytes>),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let realm = Realm::new("io.macula.embed")?;
    let key = RecordKey::new(&realm, RecordKind::Rpc, "clock");
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let bind = |i: u8, token| -> Result<Driver<Node>, Box<dyn std::error::Error>> {
        let identity = random::identity()?;
        let config = NodeConfig::new(realm.clone());
        let mut node = Driver::bind_node("127.0.0.1:0".parse()?, config, identity)?;
        node.register(poll.registry(), token)?;
        println!(
            "node {i} {} on {}",
            node.machine().node_id(),
            node.local_addr()
        );
        Ok(node)
    };
    let mut nodes = [bind(0, NODE_A)?, bind(1, NODE_B)?];
    let waker = Arc::new(Waker::new(poll.registry(), COMMANDS)?);
    let (commands, command_rx) = mpsc::channel();
    let (report_tx, reports) = mpsc::channel();
    let app = thread::spawn({
        let waker = Arc::clone(&waker);
        move || application(&commands, &reports, &waker)
    });

    let limit = clock::now() + LIMIT;
    'run: loop {
        let now = clock::now();
        if now >= limit {
            return Err("the example did not finish in time".into());
        }
        // The poll waits for the first of both nodes' deadlines and ours.
        let wait = nodes
            .iter()
            .filter_map(Driver::timeout)
            .fold(limit - now, Duration::min);
        poll.poll(&mut events, Some(wait))?;
        for node in &mut nodes {
            node.handle_events(&events);
        }
        // The waker's token is ours: take every command that came.
        if events.iter().any(|e| e.token() == COMMANDS) {
            for command in command_rx.try_iter() {
                let [a, b] = &mut nodes;
                match command {
                    Command::Join => {
                        let seeds = vec![a.machine().contact()];
                        b.command(|node, now| node.bootstrap(now, seeds));
                    }
                    Command::Store(value) => {
                        b.command(|node, now| node.store(now, key, value, Duration::from_secs(5)))?;
                    }
                    Command::Query => {
                        b.command(|node, now| node.query(now, key, Duration::from_secs(5)));
                    }
                    Command::Quit => break 'run,
                }
            }
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            while let Some(event) = node.pop_event() {
                if let Some(report) = report_for(i, event) {
                    report_tx.send(report)?;
                }
            }
        }
    }
    app.join()
        .map_err(|_| "the application thread panicked")??;
    for (i, node) in nodes.iter().enumerate() {
        println!("node {i}: {:?}", node.counters());
    }
    Ok(())
}

/// Prints what node `i` reported and picks what the application waits for.
fn report_for(i: usize, event: Event) -> Option<Report> {
    match event {
        Event::Connected {
            peer, direction, ..
        } => {
            println!("node {i}: connected to {peer} ({direction:?})");
            None
        }
        Event::Disconnected { peer, cause, .. } => {
            println!("node {i}: disconnected from {peer:?}: {cause:?}");
            None
        }
        Event::Dht(DhtEvent::Bootstrapped { table_size, .. }) => {
            println!("node {i}: bootstrapped, {table_size} in the table");
            Some(Report::Joined)
        }
        Event::Dht(DhtEvent::StoreConfirmed { acked, success, .. }) => {
            println!(
                "node {i}: stored on {} node(s), success {success}",
                acked.len()
            );
            Some(Report::Stored { acked: acked.len() })
        }
        Event::Dht(DhtEvent::ValuesFound {
            records, answered, ..
        }) => {
            let values: Vec<Bytes> = records.into_iter().map(|r| r.value).collect();
            println!("node {i}: found {values:?}, answered by {answered:?}");
            Some(Report::Found(values))
        }
        Event::Dht(other) => {
            println!("node {i}: {other:?}");
            None
        }
        other @ (Event::Rpc(_)
        | Event::PubSub(_)
        | Event::Relay(_)
        | Event::Nat(_)
        | Event::PortMapping(_)
        | Event::PeerRecord { .. }
        | Event::PathChanged { .. }) => {
            println!("node {i}: {other:?}");
            None
        }
    }
}

/// The application thread: one command at a time, each after the report
/// of the one before.
fn application(
    commands: &Sender<Command>,
    reports: &Receiver<Report>,
    waker: &Waker,
) -> Result<(), String> {
    let send = |command| -> Result<(), String> {
        commands.send(command).map_err(|e| e.to_string())?;
        waker.wake().map_err(|e| e.to_string())
    };
    let script = script(&send, reports);
    // Whatever happened, let the loop go.
    send(Command::Quit)?;
    script
}

/// The commands, in order, each checked against its report.
fn script(
    send: &impl Fn(Command) -> Result<(), String>,
    reports: &Receiver<Report>,
) -> Result<(), String> {
    let next = || reports.recv_timeout(LIMIT).map_err(|e| e.to_string());
    send(Command::Join)?;
    let joined = next()?;
    println!("application: {joined:?}");
    send(Command::Store(Bytes::from_static(b"12:00 UTC")))?;
    match next()? {
        Report::Stored { acked } if acked > 0 => println!("application: stored on {acked}"),
        other => return Err(format!("expected a store confirmation, got {other:?}")),
    }
    send(Command::Query)?;
    match next()? {
        Report::Found(values) if values == [Bytes::from_static(b"12:00 UTC")] => {
            println!("application: node B read its record back from node A");
        }
        other => return Err(format!("expected the record, got {other:?}")),
    }
    Ok(())
}
