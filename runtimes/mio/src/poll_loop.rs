//! A driver with a `mio::Poll` of its own, for applications with no loop to
//! embed it in (and for tests). Other sources can still join: register them
//! with [`PollLoop::registry`] and take their events in
//! [`PollLoop::turn_with`].

use std::net::SocketAddr;
use std::time::Duration;

use macula::Machine;
use mio::event::Event;
use mio::{Events, Poll, Registry, Token};

use crate::driver::Driver;
use crate::error::DriverError;

/// The token the driver's socket is registered under in a [`PollLoop`].
pub const DRIVER_TOKEN: Token = Token(0);

/// Readiness events one poll returns at most.
const EVENT_CAPACITY: usize = 64;

/// A [`Driver`] and the poll that runs it.
pub struct PollLoop<M: Machine> {
    poll: Poll,
    events: Events,
    driver: Driver<M>,
}

impl<M: Machine> PollLoop<M> {
    /// Binds a UDP socket at `addr` for `machine` and registers it with a
    /// new poll under [`DRIVER_TOKEN`].
    pub fn bind(addr: SocketAddr, machine: M) -> Result<Self, DriverError> {
        Self::new(Driver::bind(addr, machine)?)
    }

    /// Runs `driver` on a new poll, registered under [`DRIVER_TOKEN`].
    pub fn new(mut driver: Driver<M>) -> Result<Self, DriverError> {
        let poll = Poll::new().map_err(DriverError::Poll)?;
        driver.register(poll.registry(), DRIVER_TOKEN)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENT_CAPACITY),
            driver,
        })
    }

    /// The poll's registry, to add sources of the application's own (with
    /// tokens other than [`DRIVER_TOKEN`]).
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The driver.
    pub fn driver(&self) -> &Driver<M> {
        &self.driver
    }

    /// The driver, to give its machine commands and take its events.
    pub fn driver_mut(&mut self) -> &mut Driver<M> {
        &mut self.driver
    }

    /// One round: waits for a datagram, the machine's deadline or
    /// `max_wait`, whichever comes first, and handles what came.
    pub fn turn(&mut self, max_wait: Duration) -> Result<(), DriverError> {
        self.turn_with(max_wait, |_| {})
    }

    /// Like [`PollLoop::turn`], handing every event of another token to
    /// `other`.
    pub fn turn_with(
        &mut self,
        max_wait: Duration,
        mut other: impl FnMut(&Event),
    ) -> Result<(), DriverError> {
        self.driver.flush();
        let wait = self
            .driver
            .timeout()
            .map_or(max_wait, |deadline| deadline.min(max_wait));
        if let Err(error) = self.poll.poll(&mut self.events, Some(wait)) {
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(DriverError::Poll(error));
            }
            self.events.clear();
        }
        self.driver.handle_events(&self.events);
        for event in self.events.iter() {
            if event.token() != DRIVER_TOKEN {
                other(event);
            }
        }
        Ok(())
    }
}
