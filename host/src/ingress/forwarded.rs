//! Who the client is. Behind Caddy every request comes from Caddy's address, so
//! Caddy says who its client was in `X-Forwarded-For` (and the scheme in
//! `X-Forwarded-Proto`). Anyone can send those headers, so the ingress believes
//! them only from `trusted_proxies` (host.toml); from any other peer they are
//! replaced by the peer's own address. Guests always get exactly one address in
//! `X-Forwarded-For`: the client's.

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

const XFF: &str = "x-forwarded-for";
const PROTO: &str = "x-forwarded-proto";

/// Rewrites the forwarding headers of a request that came from `peer`.
pub fn apply(headers: &mut HeaderMap, peer: IpAddr, trusted: &[IpNet]) {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&canonical(ip)));
    let (client, proto) = if is_trusted(peer) {
        // The right-most address that is not one of our proxies is the client;
        // everything left of it was written by the client itself.
        let listed: Vec<IpAddr> = headers
            .get_all(XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(|a| a.parse::<IpAddr>().ok())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let client = listed
            .iter()
            .rev()
            .copied()
            .find(|ip| !is_trusted(*ip))
            .or(listed.first().copied())
            .unwrap_or(peer);
        let proto = headers
            .get(PROTO)
            .and_then(|v| v.to_str().ok())
            .filter(|p| *p == "http" || *p == "https")
            .map(str::to_string);
        (client, proto)
    } else {
        (peer, None)
    };
    headers.remove(XFF);
    headers.remove(PROTO);
    headers.remove(http::header::FORWARDED);
    headers.remove("x-real-ip");
    if let Ok(value) = HeaderValue::from_str(&canonical(client).to_string()) {
        headers.insert(XFF, value);
    }
    if let Some(proto) = proto.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert(PROTO, proto);
    }
}

/// `::ffff:127.0.0.1` (an IPv4 client on a dual-stack socket) is `127.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(peer: &str, xff: &[&str], trusted: &[&str]) -> (String, Option<String>) {
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append(XFF, v.parse().unwrap());
        }
        headers.insert(PROTO, "https".parse().unwrap());
        headers.insert("x-real-ip", "6.6.6.6".parse().unwrap());
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        apply(&mut headers, peer.parse().unwrap(), &trusted);
        assert!(headers.get("x-real-ip").is_none());
        let proto = headers.get(PROTO).map(|v| v.to_str().unwrap().to_string());
        (headers[XFF].to_str().unwrap().to_string(), proto)
    }

    #[test]
    fn only_trusted_peers_say_who_the_client_is() {
        assert_eq!(
            run("127.0.0.1", &["203.0.113.9"], &["127.0.0.1/32"]),
            ("203.0.113.9".into(), Some("https".into()))
        );
        // A client's own X-Forwarded-For (left) behind our proxy: the right-most untrusted one counts.
        assert_eq!(
            run("127.0.0.1", &["6.6.6.6, 203.0.113.9"], &["127.0.0.1/32"]).0,
            "203.0.113.9"
        );
        assert_eq!(
            run(
                "127.0.0.1",
                &["6.6.6.6", "203.0.113.9, 10.0.0.2"],
                &["127.0.0.0/8", "10.0.0.0/8"]
            )
            .0,
            "203.0.113.9"
        );
        // Not from a trusted peer: the peer is the client, whatever it says.
        assert_eq!(
            run("198.51.100.7", &["6.6.6.6"], &["127.0.0.1/32"]),
            ("198.51.100.7".into(), None)
        );
        assert_eq!(
            run("::ffff:127.0.0.1", &["garbage"], &["127.0.0.1/32"]).0,
            "127.0.0.1"
        );
        assert_eq!(run("127.0.0.1", &[], &[]), ("127.0.0.1".into(), None));
    }
}
