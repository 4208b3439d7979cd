//! Hole punching: a pure machine that finds a direct UDP path to a peer both of whose
//! candidates were swapped over the relayed connection.
//!
//! ## The strategy
//!
//! Real Linux NATs punish the naive race (both sides probe at the agreed time): when the
//! peer's first probe reaches our NAT before our own first probe has left it, conntrack
//! keeps an "unreplied" entry for that flow (30 s), moves our outbound flow to a new port
//! the peer does not know, and the peer's retries keep the entry alive. The NAT lab saw
//! this punch succeed 4 times in 10. So a punch here is asymmetric, TTL-limited and
//! patient:
//!
//! 1. **Roles.** The peers agree who opens ([`Role::Opener`], e.g. the dialer of the
//!    relayed connection). At the agreed start the opener sends an *opening burst*: to each
//!    of the peer's candidates, one STUN Binding request per IP TTL from 1 up to the
//!    attempt's opening TTL. The TTL that just crosses the opener's own NAT(s) creates the
//!    mappings toward the peer; none of them is meant to live long enough to reach the
//!    peer's NAT, so nothing is planted there.
//! 2. **Lead.** A host's NAT may sit at the far end of a slow access link (a cellular or
//!    satellite hop in front of a carrier NAT), which the burst must cross before it opens
//!    anything; neither side knows how the round trip `rtt` of the relayed connection
//!    splits, but neither access link takes more than half of it. So the follower probes
//!    with the default TTL half the round trip and one *lead* after the start (`rtt/2 +
//!    max(20 ms, rtt/4)`, the lead larger than the error of the agreed time,
//!    [`PunchConfig::follow_after`]): its probes open its own NAT and arrive at the
//!    opener's NAT after the burst opened it, so they pass; the opener answers and probes
//!    back. The opener's own full-TTL rounds start half a round trip and a lead after
//!    that ([`PunchConfig::open_after`]) — after the follower's first probe has crossed
//!    the follower's access link and left its NAT — so they never arrive first either.
//!    (The simulator's ladder found the half round trip missing: on a satellite link in
//!    front of the opener, the follower's probe one lead after the start reached the
//!    opener's NAT 100 ms before the burst did.) Full-TTL rounds repeat with doubling gaps
//!    (50 ms up to 500 ms), which also carries pairs through loss and through NATs whose
//!    depth the burst did not reach.
//! 3. **TTL is not one fixed value.** The largest opening TTL starts at 2 (one NAT right
//!    in front of the host, dying at the next router, as in the lab) and grows by 2 with
//!    every attempt (4, 6, capped at 8), so a host behind a home NAT inside a carrier NAT
//!    opens both by its second attempt; and within a burst every TTL from 1 up is sent, so
//!    whatever the host's NAT depth, one of them is just right. The grown TTLs (above the
//!    first attempt's) leave with the opener's full rounds, once the follower's first probe
//!    has left its NAT: if one of them does reach the peer's NAT (Linux lets a packet arriving
//!    there with TTL 1 plant a conntrack entry), the peer's mapping toward us exists by then. Roles swap on every retry:
//!    the side whose burst was too short in one attempt follows in the next, and the other
//!    side's burst (possibly right) goes first.
//!
//!    **Counted hops replace the guess.** When NAT discovery counted the hops to a public
//!    reflector (`h`, the smallest TTL it answered, [`Plan::hops`]), every NAT of ours lies
//!    within them: both sides, whatever their role, send at the attempt's start one probe
//!    per candidate with TTL `h - 1`, which crosses all of them and dies at a router before
//!    the open internet, in every attempt. A host behind a home NAT inside a carrier NAT
//!    (`h` = 4 in the NAT lab) opens both layers in its first attempt; its peer's full-TTL
//!    probes, one lead later, find them open (the NAT lab saw this pair never go direct
//!    with the growing schedule when the carrier side opened: its TTL 2 died inside the
//!    carrier NAT, and the peer's probe planted an entry there). With `h` ≤ 2 there is no
//!    router to die at, and the growing schedule runs.
//! 4. **Retries outlast stale state.** An attempt probes for `max(4 s, 8·rtt)`. If no probe
//!    was answered, both sides stay silent for 31 s — longer than Linux keeps an unreplied
//!    UDP entry — so a lost race's stale entry and the moved flow are gone before the next
//!    attempt. Both sides derive the whole schedule from the one agreed start, so retries
//!    need no further messages. Three attempts in all.
//! 5. **ICE-style checks.** Every probe is a Binding request whose transaction id begins
//!    with the punch's [`SessionTag`]; an answer carries XOR-MAPPED-ADDRESS. A probe from an
//!    address the peer never announced becomes a peer-reflexive candidate and is probed back
//!    at once (triggered check), which is how a side behind a random symmetric NAT is found.
//!    Every peer probe is probed back, between attempts too: a peer that started late
//!    (its PUNCH_SYNC was lost and sent again) would otherwise win alone while we stayed
//!    silent until our next attempt. A probe answered from the address it was sent to
//!    wins: [`PunchEvent::Succeeded`] names the pair. A won punch keeps answering its
//!    peer's probes. Behind a NAT that gives each new destination its next sequential port
//!    (the peer probes the ports it predicts), our first packets to the peer's candidates
//!    leave in order and a gap apart (`touch.rs`), so jitter on our access link cannot
//!    reorder them, and with them the ports.
//! 6. **Skipping.** When both NAT classes are known and [`direct_possible`] says no (see
//!    [`oracle`]), nothing is sent. Uncertain classes never skip.
//! 7. **Birthday search for a hard NAT.** A NAT that maps every destination to a new random
//!    port (Linux `masquerade random,fully-random`) cannot be predicted, and a peer behind a
//!    port-restricted cone (Linux masquerade) admits only the exact address it sent to. When
//!    one side is known to be such a NAT and the other to map endpoint-independently
//!    without known permissive filtering ([`search_side`]; discovery seldom tells the
//!    filtering, so an uncertain one counts as port-dependent), the sides
//!    split the work (Tailscale's idea, our own machine): the **hard** side asks its driver
//!    for [`PunchConfig::search_sockets`] extra sockets ([`crate::Output::Sockets`]) and, at
//!    each attempt's start, sends one probe from each toward the easy side's reflexive
//!    address with the opening TTL (counted hops − 1, else 2), which opens one mapping of
//!    its NAT per socket and dies before the easy side's NAT, planting nothing there. The
//!    **easy** side, a lead after a follower would probe, probes distinct random ports of the hard side's NAT
//!    address (the IP of the peer's own announced reflexive candidate, nothing else),
//!    [`PunchConfig::search_batch`] every [`PunchConfig::search_interval`] and at most
//!    [`PunchConfig::search_probes`] per attempt: its endpoint-independent mapping makes its
//!    probes come from exactly the address the hard side's mappings expect, so a probe that
//!    hits one of the 256 ports reaches a socket (`1 − (1 − 256/64512)^k`: 98% for 1,024
//!    probes, 99.97% for the default 2,048, sent in about 2 s). That socket answers and
//!    probes back from itself, and keeps probing in every later round; the pair wins on
//!    both sides, the hard side's [`Punched::local`] naming the socket, and every other
//!    extra socket is closed (all of them when the punch fails). Two unpredictable NATs
//!    still rule each other out. The search runs only when the owner opens sockets
//!    ([`Plan::search`]); without it a pair the plain punch certainly cannot join is
//!    skipped. The plain rounds run beside the search all along. The NAT lab measured
//!    masquerade × `random,fully-random` direct 10 in 10, 67–608 ms after the relayed
//!    connection was up.
//! 8. **A fresh port after a direct path died.** When a NAT reboots (conntrack flushed, a
//!    new public IP) while a pair is direct, the packets one side sent from its new
//!    address before it fell back reached the other side's NAT and planted an unreplied
//!    entry there (the rebooted side's new address → the other side's mapped port): the
//!    other side's flow toward that new address moves to a random port for the entry's
//!    30 s, so a re-punch between the same two sockets fails. The owner re-punches from an
//!    extra socket instead ([`Plan::socket`]: one fresh local port, announced as
//!    [`on_port`] of our candidates when our NAT was seen preserving ports): a 5-tuple no
//!    entry matches, whichever NAT rebooted. The NAT lab measured the masquerade pair
//!    direct again within 5 s of the reboot (before: not within the 30 s).
//!
//! Limits: at most [`PunchConfig::max_checks_per_attempt`] probes per attempt (100, RFC 8445
//! §19.5.1) and [`PunchConfig::max_candidates`] remote candidates; the search adds at most
//! one opening per extra socket and reflexive candidate (hard side) or
//! [`PunchConfig::search_probes`] probes (easy side) per attempt.
//!
//! In the simulator (feature `sim`), `sim::punch_lab` runs two peers behind NATs of every
//! kind and measures the punch against the oracle (`tests/punch_sim.rs`,
//! `examples/nat_matrix.rs`).

mod budget;
mod candidate;
mod config;
mod machine;
pub mod oracle;
mod search;
mod touch;
mod wire;

pub use budget::SearchBudget;
pub use candidate::{
    Candidate, CandidateKind, PREDICTED_PORTS, on_port, ordered, predict, preserves_ports,
};
pub use config::PunchConfig;
pub use machine::{Plan, PunchEvent, PunchStats, Punched, Puncher, Role, SessionTag};
pub use oracle::{NatClass, SearchSide, direct_possible, search_side};
