//! F6: the outbound allow-list. Oracle: no panic parsing any entry; the
//! public-address check agrees with a reference list of non-public ranges for
//! every IPv4 address, and gives an IPv4-mapped IPv6 address the same verdict
//! as the IPv4 address itself (so `::ffff:127.0.0.1` is loopback too).
#![no_main]

use alorig_host::{capabilities::outbound_http::is_public, config::manifest::AllowedOrigin};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    entry: &'a str,
    v4: u32,
    v6: u128,
    https: bool,
    host: &'a str,
    port: u16,
}

/// RFC 6890 special-purpose and other never-public IPv4 ranges: (network, prefix).
const NOT_PUBLIC: &[(u32, u8)] = &[
    (0x0000_0000, 8),
    (0x0a00_0000, 8),
    (0x6440_0000, 10),
    (0x7f00_0000, 8),
    (0xa9fe_0000, 16),
    (0xac10_0000, 12),
    (0xc000_0200, 24),
    (0xc0a8_0000, 16),
    (0xc612_0000, 15),
    (0xc633_6400, 24),
    (0xcb00_7100, 24),
    (0xe000_0000, 4),
    (0xf000_0000, 4),
];

fn reference_public(v4: u32) -> bool {
    !NOT_PUBLIC
        .iter()
        .any(|&(net, len)| (v4 ^ net) >> (32 - len) == 0)
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(origin) = AllowedOrigin::parse(input.entry) {
        let _ = origin.covers(input.https, input.host, input.port);
        assert!(
            !origin.covers(!origin.https, input.host, input.port)
                || !origin.covers(origin.https, input.host, input.port)
        );
    }
    let v4 = Ipv4Addr::from(input.v4);
    assert_eq!(
        is_public(IpAddr::V4(v4)),
        reference_public(input.v4),
        "{v4}"
    );
    assert_eq!(
        is_public(IpAddr::V6(v4.to_ipv6_mapped())),
        is_public(IpAddr::V4(v4)),
        "{v4} mapped"
    );
    let v6 = Ipv6Addr::from(input.v6);
    if v6.is_loopback()
        || v6.is_unspecified()
        || (v6.segments()[0] & 0xfe00) == 0xfc00
        || (v6.segments()[0] & 0xffc0) == 0xfe80
    {
        assert!(!is_public(IpAddr::V6(v6)), "{v6}");
    }
});
