//! `macula call`, `macula publish` and `macula subscribe`: a short-lived
//! node joins the mesh through the seeds, does one thing, and leaves.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::time::Instant;

use macula::dht::Mode;
use macula::id::{RecordKey, RecordKind};
use macula::metrics::MessageDirection;
use macula::pubsub::Pattern;
use macula::rpc::RpcError;
use macula_tokio::{CallError, CallOptions, MaculaConfig, MaculaNode};

use crate::args::{CallArgs, MeshArgs, PublishArgs, SubscribeArgs};
use crate::failure::{Failure, FailureKind};
use crate::latency::Ms;
use crate::settings::{self, Settings};
use crate::{announced, mesh, payload};

/// How often `publish` looks at its node's counters while delivery runs.
const PUBLISH_POLL: Duration = Duration::from_millis(50);

/// How long the counters must stay still before `publish` takes delivery
/// as finished (the frames handed to subscribers' streams get this long
/// to leave before the node closes its connections).
const PUBLISH_QUIET: Duration = Duration::from_millis(500);

/// A node started with `mesh_args` (its configuration adjusted by
/// `adjust`) and joined to the mesh.
async fn joined(
    mesh_args: MeshArgs,
    adjust: impl FnOnce(&mut MaculaConfig),
) -> Result<(MaculaNode, Settings), Failure> {
    let (settings, _) = settings::from_args(mesh_args)?;
    let mut config = mesh::config(&settings, None)?;
    adjust(&mut config);
    let node = mesh::bind(config).await?;
    match mesh::join(&node, &settings.seeds, settings.timeout).await {
        Ok(_) => Ok((node, settings)),
        Err(failure) => {
            node.shutdown().await;
            Err(failure)
        }
    }
}

/// Makes a short-lived node a DHT client: it asks, never serves, and so
/// never enters other nodes' routing tables (where, once gone, it would
/// make their lookups wait for it).
fn as_dht_client(config: &mut MaculaConfig) {
    config.node.dht.mode = Mode::Client;
}

/// `macula call`: prints the reply on stdout and the latency on stderr.
pub async fn call(args: CallArgs) -> Result<(), Failure> {
    let payload = payload::read(&args.payload)?;
    let started = Instant::now();
    let (node, settings) = joined(args.mesh, as_dht_client).await?;
    let joined_after = started.elapsed();
    let call_started = Instant::now();
    let outcome = node
        .call(
            &args.procedure,
            payload,
            CallOptions::with_timeout(settings.timeout),
        )
        .await;
    let latency = call_started.elapsed();
    node.shutdown().await;
    let reply = outcome.map_err(|e| call_failure(&args.procedure, e))?;
    let mut stdout = std::io::stdout().lock();
    // On a terminal the prompt goes on a line of its own; a pipe gets the
    // reply's bytes exactly.
    let newline = stdout.is_terminal() && !reply.ends_with(b"\n");
    stdout
        .write_all(&reply)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::other(format!("cannot write the reply: {e}")))?;
    eprintln!(
        "{} answered {} bytes in {} (joining the mesh took {})",
        args.procedure,
        reply.len(),
        Ms(latency),
        Ms(joined_after)
    );
    Ok(())
}

/// The failure (and so the exit code) for a call that failed.
fn call_failure(procedure: &str, error: CallError) -> Failure {
    let kind = match &error {
        CallError::Rpc(RpcError::NoProvider { .. }) => FailureKind::NoProvider,
        CallError::Rpc(RpcError::Timeout { .. }) => FailureKind::Timeout,
        CallError::Rpc(
            RpcError::Remote { .. } | RpcError::Refused { .. } | RpcError::Unauthorized { .. },
        ) => FailureKind::Remote,
        CallError::Rpc(RpcError::BadName(_)) => FailureKind::Settings,
        CallError::Rpc(_) => FailureKind::Call,
        CallError::Stopped => FailureKind::Other,
    };
    Failure::new(kind, format!("call of {procedure} failed: {error}"))
}

/// `macula publish`: publishes one message, waits until every subscriber
/// found was written it or given up, and says how many got it; fails
/// ([`FailureKind::Undelivered`]) when one could not be reached.
pub async fn publish(args: PublishArgs) -> Result<(), Failure> {
    let payload = payload::read(&args.payload)?;
    let (node, settings) = joined(args.mesh, as_dht_client).await?;
    let outcome = publish_and_wait(&node, &args.topic, payload, settings.timeout).await;
    node.shutdown().await;
    let delivery = outcome?;
    let Delivery {
        message_id,
        found,
        written,
        lost,
    } = delivery;
    eprintln!(
        "published message {message_id} on {}: delivered to {written} of {found} subscribers found in the DHT",
        args.topic
    );
    if written < found {
        let unconfirmed = found - written - lost;
        return Err(Failure::new(
            FailureKind::Undelivered,
            format!(
                "message {message_id} did not reach {} of {found} subscribers ({lost} could not be reached, {unconfirmed} not confirmed in time)",
                found - written
            ),
        ));
    }
    Ok(())
}

/// What became of one publication, from the node's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Delivery {
    message_id: u64,
    /// Frames handed to the node: one per subscriber found.
    found: u64,
    /// Frames written on a subscriber's publish stream.
    written: u64,
    /// Frames dropped: their subscriber could not be reached (or went).
    lost: u64,
}

/// Publishes, then watches the node's pub/sub counters until every frame
/// sent to a subscriber was written or dropped and the counters have been
/// still for [`PUBLISH_QUIET`] (or `timeout` passed).
async fn publish_and_wait(
    node: &MaculaNode,
    topic: &str,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<Delivery, Failure> {
    let message_id = node
        .publish(topic, payload)
        .await
        .map_err(|e| Failure::settings(format!("cannot publish on {topic:?}: {e}")))?;
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut still_since = Instant::now();
    loop {
        let metrics = node.metrics().await?;
        let messages = &metrics.pubsub_messages;
        let delivery = Delivery {
            message_id,
            found: *messages.get(MessageDirection::Sent),
            written: metrics.pubsub_delivery_latency.count(),
            lost: *messages.get(MessageDirection::Dropped),
        };
        let lookups = (metrics.dht_query_latency.iter())
            .map(|(_, h)| h.count())
            .sum::<u64>();
        let settled = delivery.written + delivery.lost >= delivery.found;
        if last != Some((delivery, lookups)) {
            last = Some((delivery, lookups));
            still_since = Instant::now();
        } else if (settled && still_since.elapsed() >= PUBLISH_QUIET) || Instant::now() >= deadline
        {
            return Ok(delivery);
        }
        tokio::time::sleep(PUBLISH_POLL).await;
    }
}

/// `macula subscribe`: prints `TOPIC<tab>PAYLOAD` per message on stdout.
pub async fn subscribe(args: SubscribeArgs) -> Result<(), Failure> {
    let pattern =
        Pattern::new(&args.pattern).map_err(|e| Failure::settings(format!("bad pattern: {e}")))?;
    // This node only subscribes: it looks nothing else up, so its DHT need
    // not cache lookups, and the check that the subscription is announced
    // asks the network each time.
    let (node, settings) = joined(args.mesh, |config| {
        config.node.dht.cache_ttl = Duration::ZERO
    })
    .await?;
    let outcome = receive(&node, &settings, &pattern, args.count).await;
    node.shutdown().await;
    outcome
}

/// Subscribes, waits until the subscription is announced, then prints
/// messages until `count` arrived or Ctrl-C.
async fn receive(
    node: &MaculaNode,
    settings: &Settings,
    pattern: &Pattern,
    count: Option<u64>,
) -> Result<(), Failure> {
    let mut subscription = node
        .subscribe(pattern.as_str())
        .await
        .map_err(|e| Failure::settings(format!("cannot subscribe to {pattern}: {e}")))?;
    let key = RecordKey::new(&settings.realm, RecordKind::Topic, pattern.literal_prefix());
    let what = format!("the subscription to {pattern}");
    announced::wait_for(node, key, node.node_id(), settings.timeout, &what).await?;
    eprintln!("subscribed to {pattern}");
    let mut received = 0;
    let shutdown = crate::stop::requested();
    tokio::pin!(shutdown);
    while count.is_none_or(|n| received < n) {
        let publication = tokio::select! {
            () = &mut shutdown => break,
            next = subscription.recv() => next,
        };
        let Some(publication) = publication else {
            return Err(Failure::other("the node stopped unexpectedly"));
        };
        received += 1;
        let text = String::from_utf8_lossy(&publication.payload);
        println!("{}\t{}", publication.topic, text.escape_debug());
        eprintln!(
            "  from {} (message {})",
            publication.publisher, publication.message_id
        );
    }
    if subscription.dropped() > 0 {
        eprintln!(
            "{} messages were dropped: this terminal fell behind",
            subscription.dropped()
        );
    }
    Ok(())
}
