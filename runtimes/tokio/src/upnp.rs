//! Port mapping on a UPnP-IGD gateway (feature `upnp`), for routers that speak
//! neither PCP nor NAT-PMP (the core asks those itself:
//! `macula::nat::portmap`). UPnP is SSDP multicast and SOAP over HTTP, which a
//! sans-IO core cannot do, so it lives here, on the `igd-next` crate.
//!
//! [`UpnpMapping::map`] finds the gateway (SSDP), asks it to forward the
//! socket's own port (UDP) to the socket for a lease, and reads its external
//! address; hand [`UpnpMapping::external`] to the node with
//! `Node::set_mapped_address`, call [`UpnpMapping::renew`] before the lease
//! ends (at half of it), and [`UpnpMapping::remove`] at shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use igd_next::aio::Gateway;
use igd_next::aio::tokio::{Tokio, search_gateway};
use igd_next::{PortMappingProtocol, SearchOptions};

/// The description the mapping carries on the gateway.
const DESCRIPTION: &str = "macula";

/// Why a UPnP mapping could not be made, renewed or removed.
#[derive(Debug, thiserror::Error)]
pub enum UpnpError {
    /// No gateway answered the SSDP search.
    #[error("no UPnP gateway found: {0}")]
    Search(#[from] igd_next::SearchError),
    /// The gateway would not say its external address.
    #[error("the gateway does not tell its external address: {0}")]
    ExternalIp(#[from] igd_next::GetExternalIpError),
    /// The gateway refused the mapping.
    #[error("the gateway refused the mapping: {0}")]
    AddPort(#[from] igd_next::AddPortError),
    /// The gateway refused to remove the mapping.
    #[error("the gateway did not remove the mapping: {0}")]
    RemovePort(#[from] igd_next::RemovePortError),
    /// The socket's address is unspecified: the gateway needs the LAN address
    /// to forward to.
    #[error("the socket's address {0} is unspecified")]
    Unspecified(SocketAddr),
}

/// A UDP port mapping held on a UPnP-IGD gateway.
#[derive(Debug)]
pub struct UpnpMapping {
    gateway: Gateway<Tokio>,
    local: SocketAddr,
    external: SocketAddr,
    lease: Duration,
}

impl UpnpMapping {
    /// Searches the gateway (for at most `search`) and maps its port equal to
    /// `local`'s port to `local` for `lease` (whole seconds; 0 asks for no
    /// end, which some gateways refuse).
    pub async fn map(
        local: SocketAddr,
        lease: Duration,
        search: Duration,
    ) -> Result<Self, UpnpError> {
        if local.ip().is_unspecified() {
            return Err(UpnpError::Unspecified(local));
        }
        let mut options = SearchOptions::default();
        options.bind_addr = SocketAddr::new(local.ip(), 0);
        options.timeout = Some(search);
        let gateway = search_gateway(options).await?;
        let ip = gateway.get_external_ip().await?;
        let mapping = Self {
            gateway,
            local,
            external: SocketAddr::new(ip, local.port()),
            lease,
        };
        mapping.renew().await?;
        Ok(mapping)
    }

    /// The address peers reach the socket at.
    pub fn external(&self) -> SocketAddr {
        self.external
    }

    /// The gateway's control address.
    pub fn gateway(&self) -> SocketAddr {
        self.gateway.addr
    }

    /// How long one grant lasts: renew at half of it.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Asks for the mapping again, for a whole lease from now.
    pub async fn renew(&self) -> Result<(), UpnpError> {
        let seconds = u32::try_from(self.lease.as_secs()).unwrap_or(u32::MAX);
        let port = self.external.port();
        (self.gateway)
            .add_port(
                PortMappingProtocol::UDP,
                port,
                self.local,
                seconds,
                DESCRIPTION,
            )
            .await?;
        Ok(())
    }

    /// Removes the mapping from the gateway.
    pub async fn remove(self) -> Result<(), UpnpError> {
        let port = self.external.port();
        (self.gateway)
            .remove_port(PortMappingProtocol::UDP, port)
            .await?;
        Ok(())
    }
}
