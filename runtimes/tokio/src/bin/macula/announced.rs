//! Waiting until a provider or subscriber record is visible in the DHT,
//! so that a caller or publisher that looks it up next finds it (a lookup
//! that finds nothing is cached for a while).

use std::time::Duration;

use macula::id::{NodeId, RecordKey};
use macula_tokio::MaculaNode;
use tokio::time::{Instant, sleep};

use crate::failure::Failure;

/// Pause between two lookups while the record is not there yet.
const POLL: Duration = Duration::from_millis(50);

/// Looks `key` up from `node` until a record published by `owner` comes
/// back from the network (not only from `node`'s own store), at most for
/// `timeout`. `what` names the record in the error.
pub async fn wait_for(
    node: &MaculaNode,
    key: RecordKey,
    owner: NodeId,
    timeout: Duration,
    what: &str,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let found = node.query(key, left.max(POLL)).await?;
        let visible = !found.from_cache && found.records.iter().any(|r| r.provider() == owner);
        if visible {
            return Ok(());
        }
        if Instant::now() + POLL >= deadline {
            return Err(Failure::network(format!(
                "{what} did not reach the DHT within {:.1} s",
                timeout.as_secs_f64()
            )));
        }
        sleep(POLL).await;
    }
}
