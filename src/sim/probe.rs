//! A small machine for simulator tests: sends what it is told, reports what
//! it receives, and can act as a reflector.
//!
//! A [`Probe`] sends datagrams at scheduled times (with an optional IP TTL)
//! and reports every datagram it receives with the source address it saw. A
//! reflector probe also answers every datagram with that source address as
//! text, which is how hosts behind NATs learn their reflexive address
//! ([`ProbeEvent::reflected`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::{Input, Machine, Output, Transmit};

/// What a probe reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A datagram arrived.
    Received {
        /// The probe's address it arrived on.
        local: SocketAddr,
        /// The source address it came from.
        remote: SocketAddr,
        /// Its bytes.
        payload: Bytes,
    },
    /// The probe's address changed.
    AddressChanged {
        /// The old address.
        old: SocketAddr,
        /// The new address.
        new: SocketAddr,
    },
}

impl ProbeEvent {
    /// The address a reflector reported, if this is a reflector's answer.
    pub fn reflected(&self) -> Option<SocketAddr> {
        match self {
            Self::Received { payload, .. } => std::str::from_utf8(payload).ok()?.parse().ok(),
            Self::AddressChanged { .. } => None,
        }
    }

    /// The source of a received datagram.
    pub fn remote(&self) -> Option<SocketAddr> {
        match self {
            Self::Received { remote, .. } => Some(*remote),
            Self::AddressChanged { .. } => None,
        }
    }
}

/// A scripted datagram sender and receiver; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    reflect: bool,
    /// Scheduled transmits by (time, order of scheduling).
    plan: BTreeMap<(Instant, usize), Transmit>,
    scheduled: usize,
    ready: VecDeque<Output<ProbeEvent>>,
}

impl Probe {
    /// A probe that only sends what it is scheduled to send.
    pub fn new() -> Self {
        Self::default()
    }

    /// A probe that also answers each datagram with its source address.
    pub fn reflector() -> Self {
        Self {
            reflect: true,
            ..Self::default()
        }
    }

    /// Schedules a datagram to `destination` at `at` (sent at once if `at`
    /// has passed by the next input).
    pub fn send(&mut self, at: Instant, destination: SocketAddr, payload: impl Into<Bytes>) {
        self.send_with_ttl(at, destination, payload, None);
    }

    /// [`send`](Self::send) with an IP TTL.
    pub fn send_with_ttl(
        &mut self,
        at: Instant,
        destination: SocketAddr,
        payload: impl Into<Bytes>,
        ttl: Option<u8>,
    ) {
        let transmit = Transmit {
            source: None,
            destination,
            payload: payload.into(),
            segment_size: None,
            ttl,
        };
        self.plan.insert((at, self.scheduled), transmit);
        self.scheduled = self.scheduled.wrapping_add(1);
    }
}

impl Machine for Probe {
    type Event = ProbeEvent;

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram(d) => {
                if self.reflect {
                    self.ready.push_back(Output::Transmit(Transmit {
                        source: None,
                        destination: d.remote,
                        payload: Bytes::from(d.remote.to_string()),
                        segment_size: None,
                        ttl: None,
                    }));
                }
                self.ready.push_back(Output::Event(ProbeEvent::Received {
                    local: d.local,
                    remote: d.remote,
                    payload: d.payload,
                }));
            }
            Input::LocalAddressChanged { old, new } => {
                let changed = ProbeEvent::AddressChanged { old, new };
                self.ready.push_back(Output::Event(changed));
            }
            Input::Timeout | Input::SocketsOpened(_) => {}
        }
        while let Some(entry) = self.plan.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.ready.push_back(Output::Transmit(entry.remove()));
        }
    }

    fn poll_output(&mut self) -> Option<Output<ProbeEvent>> {
        self.ready.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.plan.keys().next().map(|&(at, _)| at)
    }
}
