//! `--gateway`: which router `macula node` asks for a port mapping (PCP,
//! then NAT-PMP; [`macula::nat::portmap`]), given as an address or found
//! from the default route.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::Deserialize;

use crate::failure::Failure;

/// Where the system keeps its IPv4 routes (Linux).
const ROUTE_TABLE: &str = "/proc/net/route";

/// The route flag that marks a route through a gateway (`RTF_GATEWAY`).
const ROUTE_THROUGH_GATEWAY: u32 = 0x2;

/// The gateway a node asks for a port mapping.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum GatewayArg {
    /// The router of the default route.
    Auto,
    /// This router.
    At(IpAddr),
}

impl FromStr for GatewayArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "auto" {
            return Ok(Self::Auto);
        }
        text.parse()
            .map(Self::At)
            .map_err(|_| format!("{text:?} is neither an IP address nor `auto`"))
    }
}

impl TryFrom<String> for GatewayArg {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl GatewayArg {
    /// The router's address: the one given, or the default route's.
    pub fn resolve(self) -> Result<IpAddr, Failure> {
        match self {
            Self::At(ip) => Ok(ip),
            Self::Auto => {
                let table = std::fs::read_to_string(ROUTE_TABLE).map_err(|e| {
                    Failure::settings(format!(
                        "--gateway auto: cannot read {ROUTE_TABLE} ({e}); give the router's address"
                    ))
                })?;
                default_gateway(&table).map(IpAddr::V4).ok_or_else(|| {
                    Failure::settings(
                        "--gateway auto: no default route through a gateway; give the router's address",
                    )
                })
            }
        }
    }
}

/// The gateway of the first default route through one in `table`, a
/// `/proc/net/route` listing (addresses in hex, in the kernel's byte order).
fn default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, flags) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let default = u32::from_str_radix(destination, 16).ok()? == 0;
        let gateway = u32::from_str_radix(gateway, 16).ok()?;
        let through_gateway = flags & ROUTE_THROUGH_GATEWAY != 0 && gateway != 0;
        (default && through_gateway).then(|| Ipv4Addr::from(gateway.swap_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";

    #[test]
    fn the_default_route_names_its_gateway() {
        let table = format!(
            "{HEADER}\neth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\neth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        assert_eq!(default_gateway(&table), Some(Ipv4Addr::new(192, 168, 0, 1)));
    }

    #[test]
    fn no_default_route_or_one_without_a_gateway_names_none() {
        let on_link =
            format!("{HEADER}\nwg0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway(&on_link), None);
        let only_lan =
            format!("{HEADER}\neth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(default_gateway(&only_lan), None);
        assert_eq!(default_gateway("garbage\nnot a route\n"), None);
        assert_eq!(default_gateway(""), None);
    }

    #[test]
    fn the_flag_takes_an_address_or_auto() {
        assert_eq!("auto".parse(), Ok(GatewayArg::Auto));
        assert_eq!(
            "10.0.0.1".parse(),
            Ok(GatewayArg::At(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))))
        );
        let bad = "router".parse::<GatewayArg>().unwrap_err();
        assert!(bad.contains("router"), "{bad}");
        let given = GatewayArg::At("fd00::1".parse().unwrap());
        assert_eq!(
            given.resolve().unwrap(),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
    }
}
