//! The demo's pub/sub part: nodes 1 to 4 subscribe with an exact pattern,
//! `*` and `#`; node 0 publishes five topics; every subscriber must get
//! exactly the publications its pattern matches, once.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use macula::id::{Realm, RecordKey, RecordKind};
use macula::pubsub::Pattern;
use macula_tokio::{MaculaNode, Subscription};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use super::{Problems, REALM, SEED, name};
use crate::announced;
use crate::failure::Failure;
use crate::latency::{Latencies, Ms};
use crate::progress::Step;
use crate::settings::DEFAULT_TIMEOUT;

/// Who subscribes to what: (node, pattern).
const SUBSCRIPTIONS: [(usize, &str); 4] = [
    (1, "sensors.kitchen.temp"),
    (2, "sensors.*.temp"),
    (3, "sensors.#"),
    (4, "*.kitchen.#"),
];

/// What node 0 publishes, and the nodes whose subscription must receive it.
const PUBLICATIONS: [(&str, &[usize]); 5] = [
    ("sensors.kitchen.temp", &[1, 2, 3, 4]),
    ("sensors.hall.temp", &[2, 3]),
    ("sensors.kitchen.humidity", &[3, 4]),
    ("alerts.kitchen.smoke", &[4]),
    // `#` matches zero segments too.
    ("sensors", &[3]),
];

/// After the last expected delivery, how long to watch for unexpected ones.
const GRACE: Duration = Duration::from_millis(300);

/// One delivery: the subscribing node, the publication's index, when.
struct Delivery {
    node: usize,
    publication: usize,
    at: Instant,
}

/// Subscribes, publishes, checks and prints the deliveries.
pub async fn run(nodes: &[MaculaNode]) -> Result<Problems, Failure> {
    println!("\npub/sub: {} publishes; subscribers:", name(SEED, nodes));
    for (node, pattern) in SUBSCRIPTIONS {
        println!("  {:<16} {pattern}", name(node, nodes));
    }
    let (deliveries, mut received) = mpsc::unbounded_channel();
    let mut listeners = Vec::new();
    let step = Step::start(
        "subscribing and announcing the subscriptions",
        SUBSCRIPTIONS.len(),
    );
    for (done, (node, pattern)) in SUBSCRIPTIONS.into_iter().enumerate() {
        let subscription = subscribe(nodes, node, pattern).await?;
        listeners.push(tokio::spawn(listen(node, subscription, deliveries.clone())));
        step.advance(done + 1);
    }
    step.finish(&format!("all visible from node {SEED}"));
    drop(deliveries);

    let step = Step::start("publishing", PUBLICATIONS.len());
    let mut sent_at = Vec::new();
    for (index, (topic, _)) in PUBLICATIONS.into_iter().enumerate() {
        sent_at.push(Instant::now());
        nodes[SEED]
            .publish(topic, Bytes::from(index.to_string()))
            .await
            .map_err(|e| Failure::other(format!("cannot publish on {topic}: {e}")))?;
        step.advance(index + 1);
    }
    step.finish("taken by node 0");

    let expected: usize = PUBLICATIONS.iter().map(|(_, to)| to.len()).sum();
    let step = Step::start("waiting for the deliveries", expected);
    let deadline = Instant::now() + DEFAULT_TIMEOUT;
    let mut got: BTreeMap<(usize, usize), Vec<Instant>> = BTreeMap::new();
    let mut extra_deadline = None;
    loop {
        let until = extra_deadline.unwrap_or(deadline);
        let Ok(Some(delivery)) = timeout_at(until, received.recv()).await else {
            break;
        };
        got.entry((delivery.publication, delivery.node))
            .or_default()
            .push(delivery.at);
        let expected_got = count_expected(&got);
        step.advance(expected_got);
        if expected_got == expected && extra_deadline.is_none() {
            extra_deadline = Some(Instant::now() + GRACE);
        }
    }
    step.finish(&format!("{} of {expected} expected", count_expected(&got)));
    for listener in listeners {
        listener.abort();
    }
    Ok(report(nodes, &got, &sent_at))
}

/// Subscribes `node` to `pattern` and waits until the subscription is
/// visible from the seed.
async fn subscribe(
    nodes: &[MaculaNode],
    node: usize,
    pattern: &str,
) -> Result<Subscription, Failure> {
    let subscription = nodes[node]
        .subscribe(pattern)
        .await
        .map_err(|e| Failure::other(format!("cannot subscribe to {pattern}: {e}")))?;
    let parsed = Pattern::new(pattern).map_err(|e| Failure::other(e.to_string()))?;
    let realm = Realm::new(REALM).map_err(|e| Failure::other(e.to_string()))?;
    let key = RecordKey::new(&realm, RecordKind::Topic, parsed.literal_prefix());
    let what = format!("the subscription of node {node} to {pattern}");
    announced::wait_for(
        &nodes[SEED],
        key,
        nodes[node].node_id(),
        DEFAULT_TIMEOUT,
        &what,
    )
    .await?;
    Ok(subscription)
}

/// Forwards what `subscription` receives until the demo stops listening.
async fn listen(
    node: usize,
    mut subscription: Subscription,
    deliveries: mpsc::UnboundedSender<Delivery>,
) {
    while let Some(publication) = subscription.recv().await {
        let at = Instant::now();
        let index = std::str::from_utf8(&publication.payload)
            .ok()
            .and_then(|s| s.parse().ok());
        // A payload the demo did not send counts as publication `usize::MAX`.
        let publication = index.unwrap_or(usize::MAX);
        if deliveries
            .send(Delivery {
                node,
                publication,
                at,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Deliveries that were expected (each counted once).
fn count_expected(got: &BTreeMap<(usize, usize), Vec<Instant>>) -> usize {
    PUBLICATIONS
        .iter()
        .enumerate()
        .map(|(index, (_, to))| {
            to.iter()
                .filter(|node| got.contains_key(&(index, **node)))
                .count()
        })
        .sum()
}

/// Prints who received what and how fast; returns what went wrong.
fn report(
    nodes: &[MaculaNode],
    got: &BTreeMap<(usize, usize), Vec<Instant>>,
    sent_at: &[Instant],
) -> Problems {
    let mut problems = Problems::new();
    let mut latencies = Latencies::default();
    for (index, (topic, to)) in PUBLICATIONS.into_iter().enumerate() {
        let mut line = Vec::new();
        for node in to {
            match got.get(&(index, *node)).map(Vec::as_slice) {
                Some([at]) => {
                    let latency = at.saturating_duration_since(sent_at[index]);
                    latencies.push(latency);
                    line.push(format!("node {node} {}", Ms(latency)));
                }
                Some(many) => {
                    problems.push(format!(
                        "{topic}: node {node} received it {} times",
                        many.len()
                    ));
                    line.push(format!("node {node} DUPLICATED"));
                }
                None => {
                    problems.push(format!("{topic}: node {node} never received it"));
                    line.push(format!("node {node} MISSING"));
                }
            }
        }
        println!("  {topic:<26} -> {}", line.join(", "));
    }
    for (publication, node) in got.keys() {
        let wanted = PUBLICATIONS
            .get(*publication)
            .is_some_and(|(_, to)| to.contains(node));
        if !wanted {
            let topic = PUBLICATIONS
                .get(*publication)
                .map_or("an unknown message", |(t, _)| t);
            problems.push(format!(
                "{} received {topic} without a matching subscription",
                name(*node, nodes)
            ));
        }
    }
    println!(
        "  delivery latency (publish call to the subscriber's receive) {}",
        latencies.summary()
    );
    println!("  (a topic's first publication includes looking its subscribers up in the DHT)");
    problems
}
