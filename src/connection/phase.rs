//! A connection's phases and the one rule of what the node does with what
//! arrives in each (docs/PROTOCOL.md §2).
//!
//! handshaking → awaiting CONNECT → ready → closing. Nothing but CONNECT
//! (and DISCONNECT, a peer's goodbye) is dispatched before ready, on any
//! stream: other streams are left unread (their bytes wait in QUIC's
//! flow-control window, which bounds them) until the peer's CONNECT is
//! accepted, whatever order the peer opened or split them in; any other
//! frame on the control stream before then closes the connection. A
//! connection still awaiting CONNECT at its deadline is closed. The table is
//! data ([`Phase::after`], [`Phase::admit`]) and snapshot-tested, so a
//! change to the rule shows up as a diff of `phase_table.txt`.

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The QUIC handshake is running.
    Handshaking,
    /// QUIC is up; the peer's CONNECT has not been accepted yet.
    AwaitingConnect,
    /// Both CONNECTs are through: requests flow.
    Ready,
    /// Closing or closed.
    Closing,
}

/// Something that moves a connection between phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseEvent {
    /// The TLS handshake finished and the peer's certificate names a node.
    HandshakeDone,
    /// The peer's CONNECT was checked and accepted.
    ConnectAccepted,
    /// We close the connection (refusal, the CONNECT deadline, eviction,
    /// shutdown, the peer's DISCONNECT).
    Close,
    /// QUIC reports the connection lost.
    Lost,
}

/// What arrived on a connection, as far as the phase rule cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A CONNECT on the control stream.
    Connect,
    /// A DISCONNECT on the control stream.
    Disconnect,
    /// Any other frame on the control stream.
    ControlFrame,
    /// Bytes on any other stream.
    StreamData,
}

/// What the node does with an [`Arrival`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Hand it to its owner (the router decides which).
    Dispatch,
    /// Leave it unread until the connection is ready.
    Hold,
    /// Close the connection: the peer broke the protocol.
    Refuse,
    /// Drop it: the connection is going away.
    Ignore,
}

impl Phase {
    /// The phase after `step`, or `None` where `step` cannot happen in this
    /// phase (the caller ignores it).
    pub fn after(self, step: PhaseEvent) -> Option<Phase> {
        match (self, step) {
            (Phase::Handshaking, PhaseEvent::HandshakeDone) => Some(Phase::AwaitingConnect),
            (Phase::AwaitingConnect, PhaseEvent::ConnectAccepted) => Some(Phase::Ready),
            (_, PhaseEvent::Close | PhaseEvent::Lost) => Some(Phase::Closing),
            _ => None,
        }
    }

    /// What to do with `arrival` in this phase.
    pub fn admit(self, arrival: Arrival) -> Admission {
        match (self, arrival) {
            (Phase::Closing, _) => Admission::Ignore,
            (Phase::Handshaking, _) => Admission::Hold,
            (Phase::AwaitingConnect, Arrival::Connect | Arrival::Disconnect) => Admission::Dispatch,
            (Phase::AwaitingConnect, Arrival::ControlFrame) => Admission::Refuse,
            (Phase::AwaitingConnect, Arrival::StreamData) => Admission::Hold,
            (Phase::Ready, Arrival::Connect) => Admission::Refuse,
            (Phase::Ready, _) => Admission::Dispatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Phase {
        /// Every phase, in life order.
        pub const ALL: [Phase; 4] = [
            Phase::Handshaking,
            Phase::AwaitingConnect,
            Phase::Ready,
            Phase::Closing,
        ];
    }

    impl PhaseEvent {
        /// Every event.
        pub const ALL: [PhaseEvent; 4] = [
            PhaseEvent::HandshakeDone,
            PhaseEvent::ConnectAccepted,
            PhaseEvent::Close,
            PhaseEvent::Lost,
        ];
    }

    impl Arrival {
        /// Every arrival.
        pub const ALL: [Arrival; 4] = [
            Arrival::Connect,
            Arrival::Disconnect,
            Arrival::ControlFrame,
            Arrival::StreamData,
        ];
    }

    /// The whole rule as text, one line per (phase, step) and (phase, arrival).
    fn table() -> String {
        let mut text = String::new();
        for phase in Phase::ALL {
            for step in PhaseEvent::ALL {
                let next = phase
                    .after(step)
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:?}"));
                text.push_str(&format!("{phase:?} + {step:?} -> {next}\n"));
            }
            for arrival in Arrival::ALL {
                let admission = phase.admit(arrival);
                text.push_str(&format!("{phase:?} <- {arrival:?}: {admission:?}\n"));
            }
        }
        text
    }

    /// The transition table is pinned: a change to the rule must change
    /// `phase_table.txt` in the same commit.
    #[test]
    fn the_phase_table_matches_its_snapshot() {
        let now = table();
        let pinned = include_str!("phase_table.txt");
        assert_eq!(now, pinned, "the phase table changed; new table:\n{now}");
    }

    #[test]
    fn nothing_but_connect_is_dispatched_before_ready() {
        for phase in [Phase::Handshaking, Phase::AwaitingConnect] {
            for arrival in [Arrival::ControlFrame, Arrival::StreamData] {
                assert_ne!(
                    phase.admit(arrival),
                    Admission::Dispatch,
                    "{phase:?} {arrival:?}"
                );
            }
        }
    }

    #[test]
    fn every_phase_can_close_and_closing_is_final() {
        for phase in Phase::ALL {
            assert_eq!(phase.after(PhaseEvent::Close), Some(Phase::Closing));
            assert_eq!(phase.after(PhaseEvent::Lost), Some(Phase::Closing));
        }
        for step in [PhaseEvent::HandshakeDone, PhaseEvent::ConnectAccepted] {
            assert_eq!(Phase::Closing.after(step), None);
        }
    }
}
