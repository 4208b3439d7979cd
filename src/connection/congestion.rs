//! Congestion control that survives a path switch: quinn's Cubic, started
//! afresh when the path layer moves a connection onto another path, without
//! the bytes stranded on the old path blocking the new one.
//!
//! The path layer moves connections between a direct path and a relay circuit
//! behind quinn's back (one virtual address, migration off), and then asks
//! quinn to start its congestion control and RTT estimate afresh
//! ([`quinn_proto::Connection::path_changed`]). quinn builds a new controller
//! but keeps counting as in flight every byte it sent on the old path. When
//! that path died, those bytes fill a fresh controller's initial window, so
//! nothing new may be sent, nothing new is acknowledged, and only the probe
//! timeout, backed off for as long as the old path was dying (8 s and more on
//! a lossy link), unblocks the connection (issue 14's link ladder, slow-3g:
//! 663 calls and publications lost; quiche and nginx fixed the same stall in
//! their stacks).
//!
//! Here each connection's controllers share one [`Flight`]: the bytes in
//! flight as the controller saw them sent, acknowledged and lost. A
//! controller built for a path switch ([`Flight::hand_over`] just before
//! quinn's `path_changed`) notes the bytes then in flight as **stranded**: its
//! window is a fresh Cubic's plus what is still stranded, so the new path
//! starts with a whole initial window of its own; acknowledgements and losses
//! of packets sent before the switch take their bytes off the stranded count
//! and are not fed to the new path's Cubic (a loss on a dead path says
//! nothing about the new one).

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{
    Controller, ControllerFactory, ControllerMetrics, Cubic, CubicConfig,
};

/// What one connection's controllers know of its bytes in flight.
#[derive(Debug, Default)]
struct FlightState {
    /// Bytes sent and neither acknowledged nor lost (quinn's own count at
    /// each batch of acknowledgements, kept up between them).
    in_flight: u64,
    /// Bytes sent before the last switch and still in flight.
    stranded: u64,
    /// When the path last switched.
    switched_at: Option<Instant>,
}

impl FlightState {
    /// Whether a packet sent at `sent` went out before the last switch.
    fn before_switch(&self, sent: Instant) -> bool {
        self.switched_at.is_some_and(|at| sent < at)
    }

    /// `bytes` sent at `sent` left the network (acknowledged or lost); true
    /// when they were stranded by a switch.
    fn settled(&mut self, sent: Instant, bytes: u64) -> bool {
        self.in_flight = self.in_flight.saturating_sub(bytes);
        let stranded = self.before_switch(sent);
        if stranded {
            self.stranded = self.stranded.saturating_sub(bytes);
        }
        stranded
    }
}

/// One connection's flight, shared by its controllers; the connection keeps
/// it to hand it over to the controller built at a path switch.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<FlightState>,
    /// Weak: the factory's slots may hold this flight.
    factory: Weak<Handoff>,
}

impl Flight {
    /// Hands this flight to the next controller the factory builds: call it
    /// right before quinn's `path_changed`, which builds that controller.
    pub fn hand_over(self: &Arc<Self>) {
        if let Some(handoff) = self.factory.upgrade() {
            *lock(&handoff.next) = Some(self.clone());
        }
    }

    fn state(&self) -> MutexGuard<'_, FlightState> {
        lock(&self.state)
    }

    /// Bytes sent before the last switch and still in flight.
    pub fn stranded(&self) -> u64 {
        self.state().stranded
    }
}

/// The slots by which a factory and its connections pass flights.
#[derive(Debug, Default)]
struct Handoff {
    /// A flight handed over for the next build (a path switch).
    next: Mutex<Option<Arc<Flight>>>,
    /// The flight of the controller built last.
    built: Mutex<Option<Arc<Flight>>>,
}

/// Builds [`SwitchAware`] controllers (Cubic with quinn's defaults); set it
/// as the transport config's congestion controller factory.
#[derive(Debug, Default)]
pub struct SwitchAwareFactory {
    cubic: Arc<CubicConfig>,
    handoff: Arc<Handoff>,
}

impl SwitchAwareFactory {
    /// The flight of the controller built last: take it right after quinn
    /// created a connection (dialed or accepted), so the connection can hand
    /// it over at a path switch.
    pub fn take_built(&self) -> Option<Arc<Flight>> {
        lock(&self.handoff.built).take()
    }
}

impl ControllerFactory for SwitchAwareFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        let handed = lock(&self.handoff.next).take();
        let flight = match handed {
            Some(flight) => {
                let mut state = flight.state();
                state.stranded = state.in_flight;
                state.switched_at = Some(now);
                drop(state);
                flight
            }
            None => Arc::new(Flight {
                state: Mutex::new(FlightState::default()),
                factory: Arc::downgrade(&self.handoff),
            }),
        };
        *lock(&self.handoff.built) = Some(flight.clone());
        Box::new(SwitchAware {
            cubic: Cubic::new(self.cubic.clone(), now, current_mtu),
            flight,
        })
    }
}

/// Cubic for the path in use, plus room for the bytes stranded on the path
/// before it (see the module docs).
#[derive(Debug)]
pub struct SwitchAware {
    cubic: Cubic,
    flight: Arc<Flight>,
}

impl Controller for SwitchAware {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.flight.state().in_flight += bytes;
        self.cubic.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        if !self.flight.state().settled(sent, bytes) {
            self.cubic.on_ack(now, sent, bytes, app_limited, rtt);
        }
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        let mut state = self.flight.state();
        state.in_flight = in_flight;
        state.stranded = state.stranded.min(in_flight);
        drop(state);
        (self.cubic).on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if !self.flight.state().settled(sent, lost_bytes) {
            (self.cubic).on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.cubic.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.cubic.window() + self.flight.stranded()
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.cubic.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            cubic: self.cubic.clone(),
            flight: self.flight.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.cubic.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Locks `mutex`; a panic elsewhere while it was held (none is expected:
/// nothing in here panics) leaves counts that are still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MTU: u16 = 1200;
    const PACKET: u64 = 1200;

    fn factory() -> Arc<SwitchAwareFactory> {
        Arc::new(SwitchAwareFactory::default())
    }

    /// A controller for a new connection at `now`, and its flight.
    fn connection(
        factory: &Arc<SwitchAwareFactory>,
        now: Instant,
    ) -> (Box<dyn Controller>, Arc<Flight>) {
        let controller = factory.clone().build(now, MTU);
        let flight = factory
            .take_built()
            .expect("the flight of the controller built");
        assert!(factory.take_built().is_none(), "taken once");
        (controller, flight)
    }

    #[test]
    fn a_switch_leaves_the_new_path_a_whole_window_beside_the_stranded_bytes() {
        let t0 = crate::test_epoch();
        let factory = factory();
        let (mut old, flight) = connection(&factory, t0);
        let initial = old.initial_window();
        assert_eq!(old.window(), initial);
        for n in 0..10 {
            old.on_sent(t0, PACKET, n);
        }
        assert_eq!(flight.state().in_flight, 10 * PACKET);
        assert_eq!(flight.stranded(), 0, "no switch yet");

        let t1 = t0 + Duration::from_secs(2);
        flight.hand_over();
        let mut new = factory.clone().build(t1, MTU);
        assert!(
            Arc::ptr_eq(&factory.take_built().unwrap(), &flight),
            "the same flight"
        );
        assert_eq!(flight.stranded(), 10 * PACKET);
        assert_eq!(new.window(), initial + 10 * PACKET);

        // Losses of packets sent before the switch free their room and leave the new
        // path's window whole; so does the count quinn reports with its acknowledgements.
        new.on_congestion_event(t1, t0, true, 4 * PACKET);
        assert_eq!(flight.stranded(), 6 * PACKET);
        assert_eq!(new.window(), initial + 6 * PACKET);
        new.on_sent(t1, PACKET, 10);
        new.on_end_acks(t1, 3 * PACKET, false, Some(10));
        assert_eq!(flight.stranded(), 3 * PACKET, "no more than is in flight");
        assert_eq!(new.window(), initial + 3 * PACKET);

        // A loss of a packet sent on the new path is the new path's congestion.
        new.on_congestion_event(t1, t1, false, PACKET);
        assert!(new.window() < initial + 3 * PACKET);
        assert_eq!(flight.stranded(), 3 * PACKET);
        assert_eq!(new.metrics().congestion_window, new.window());
    }

    #[test]
    fn settling_counts_stranded_bytes_only_for_packets_sent_before_the_switch() {
        let t0 = crate::test_epoch();
        let t1 = t0 + Duration::from_secs(1);
        let mut state = FlightState {
            in_flight: 5 * PACKET,
            stranded: 3 * PACKET,
            switched_at: Some(t1),
        };
        assert!(state.settled(t0, PACKET), "sent before the switch");
        assert_eq!((state.in_flight, state.stranded), (4 * PACKET, 2 * PACKET));
        assert!(!state.settled(t1, PACKET), "sent on the new path");
        assert_eq!((state.in_flight, state.stranded), (3 * PACKET, 2 * PACKET));
        assert!(state.settled(t0, 10 * PACKET), "more than counted");
        assert_eq!((state.in_flight, state.stranded), (0, 0));
        let mut fresh = FlightState::default();
        assert!(!fresh.settled(t0, PACKET), "never switched");
    }

    #[test]
    fn a_controller_is_cloned_with_its_flight_and_a_handover_outliving_the_factory_is_dropped() {
        let t0 = crate::test_epoch();
        let factory = factory();
        let (mut controller, flight) = connection(&factory, t0);
        let copy = controller.clone_box();
        controller.on_sent(t0, PACKET, 0);
        assert_eq!(flight.state().in_flight, PACKET, "one flight for both");
        assert_eq!(copy.window(), controller.window());
        assert!(controller.into_any().downcast::<SwitchAware>().is_ok());
        drop(factory);
        flight.hand_over();
    }
}
