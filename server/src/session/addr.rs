//! Client addresses as the limits and the logs see them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The unit that per-IP limits count: an IPv4 address, or an IPv6 /64 (one
/// subscriber usually holds a whole /64, so counting single IPv6 addresses would
/// let one client multiply its allowance). IPv4-mapped IPv6 addresses, which a
/// dual-stack socket reports, count as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => ClientKey(IpAddr::V6(mask_v6(v6, 64))),
        }
    }

    /// The address (an IPv6 key is its /64's first address).
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

/// An address made fit for logs: IPv4 without its last octet, IPv6 beyond its /48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskedIp(IpAddr);

impl MaskedIp {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                MaskedIp(IpAddr::V4(Ipv4Addr::new(a, b, c, 0)))
            }
            IpAddr::V6(v6) => MaskedIp(IpAddr::V6(mask_v6(v6, 48))),
        }
    }
}

impl fmt::Display for MaskedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                write!(f, "{a}.{b}.{c}.x")
            }
            IpAddr::V6(v6) => write!(f, "{v6}/48"),
        }
    }
}

fn mask_v6(ip: Ipv6Addr, prefix: u32) -> Ipv6Addr {
    let bits = u128::from(ip) & (u128::MAX << (128 - prefix));
    Ipv6Addr::from(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_neighbours_in_one_slash_64_share_a_key() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let plain: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), ClientKey::of(plain));
    }

    #[test]
    fn logs_see_masked_addresses() {
        assert_eq!(MaskedIp::of("192.0.2.7".parse().unwrap()).to_string(), "192.0.2.x");
        assert_eq!(
            MaskedIp::of("2001:db8:1:2::1".parse().unwrap()).to_string(),
            "2001:db8:1::/48"
        );
    }
}
