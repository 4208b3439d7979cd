//! Which DHT operations run for which machine: a directory request of the
//! [`Rpc`] or [`PubSub`] machine becomes a DHT operation the Node runs
//! (`Lookup`: a lookup with the machine's timeout, `Announce`: a store with
//! confirmation that the DHT signs and alone republishes, `Withdraw`: stop
//! publishing), and the DHT events that end them come back here: a lookup's
//! records go to the machine that asked (our own records included, so a
//! node finds itself among the providers of what it serves), and the end of
//! every store of an announced key (republishes included) to the machine
//! that announces it.
//!
//! [`Rpc`]: crate::rpc::Rpc
//! [`PubSub`]: crate::pubsub::PubSub

use std::time::Duration;

use super::MessagingOutput;
use crate::collections::HashMap;
use crate::contract::OutputQueue;
use crate::dht::{DhtEvent, QueryId};
use crate::directory::Answered;
use crate::id::RecordKey;
use crate::rpc::{AnnounceFailure, DirectoryRequest, Found};

/// Which machine a DHT operation runs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The RPC machine (provider records).
    Rpc,
    /// The pub/sub machine (subscriber records).
    PubSub,
}

/// What a DHT event means to messaging.
pub(super) enum Outcome {
    /// One of our lookups found these records, answered as it was.
    Found {
        owner: Owner,
        key: RecordKey,
        found: Vec<Found>,
        answered: Answered,
    },
    /// A store of an announced key ended.
    Stored {
        key: RecordKey,
        result: Result<(), AnnounceFailure>,
    },
    /// Not ours.
    Other(DhtEvent),
}

/// The DHT operations run for the two machines.
#[derive(Debug)]
pub(super) struct Directory {
    rpc_timeout: Duration,
    pubsub_timeout: Duration,
    /// Lookups run for a machine.
    lookups: HashMap<QueryId, Owner>,
    /// The keys our machines announce under, and which one does.
    announced: HashMap<RecordKey, Owner>,
}

impl Directory {
    /// No operation yet; lookups take the given machine's timeout.
    pub(super) fn new(rpc_timeout: Duration, pubsub_timeout: Duration) -> Self {
        Self {
            rpc_timeout,
            pubsub_timeout,
            lookups: HashMap::default(),
            announced: HashMap::default(),
        }
    }

    /// Asks the Node to carry out `owner`'s request.
    pub(super) fn request(
        &mut self,
        out: &mut OutputQueue<MessagingOutput>,
        owner: Owner,
        request: DirectoryRequest,
    ) {
        out.push(match request {
            DirectoryRequest::Lookup { key } => {
                let timeout = match owner {
                    Owner::Rpc => self.rpc_timeout,
                    Owner::PubSub => self.pubsub_timeout,
                };
                MessagingOutput::Lookup {
                    key,
                    timeout,
                    owner,
                }
            }
            DirectoryRequest::Announce { key, value } => {
                self.announced.insert(key, owner);
                MessagingOutput::Announce { key, value }
            }
            DirectoryRequest::Withdraw { key } => {
                self.announced.remove(&key);
                MessagingOutput::Withdraw { key }
            }
        });
    }

    /// The Node started a lookup for `owner`.
    pub(super) fn started(&mut self, query: QueryId, owner: Owner) {
        self.lookups.insert(query, owner);
    }

    /// The machine that announces under `key`.
    pub(super) fn announcer(&self, key: &RecordKey) -> Option<Owner> {
        self.announced.get(key).copied()
    }

    /// Sorts a DHT event.
    pub(super) fn on_event(&mut self, event: DhtEvent) -> Outcome {
        if let DhtEvent::ValuesFound { query, .. } = &event
            && let Some(owner) = self.lookups.remove(query)
            && let DhtEvent::ValuesFound {
                key,
                records,
                answered,
                stats,
                ..
            } = event
        {
            let (answers, failed) = (answered.len(), stats.failed);
            let answered = Answered::of(records.len(), answers, failed);
            let found: Vec<Found> = records.iter().map(Found::from).collect();
            let providers: Vec<_> = found.iter().map(|f| f.provider).collect();
            tracing::debug!(
                ?key,
                ?owner,
                ?providers,
                answers,
                failed,
                ?answered,
                "lookup ended"
            );
            return Outcome::Found {
                owner,
                key,
                found,
                answered,
            };
        }
        match event {
            DhtEvent::StoreConfirmed {
                key,
                acked,
                quorum,
                success,
                ..
            } if self.announced.contains_key(&key) => {
                let result = if success {
                    Ok(())
                } else {
                    let acked = acked.len();
                    Err(AnnounceFailure::Quorum { acked, quorum })
                };
                Outcome::Stored { key, result }
            }
            other => Outcome::Other(other),
        }
    }
}
