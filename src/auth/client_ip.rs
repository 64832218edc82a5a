//! Who the client is, for the login limit: the connection's peer address, or, behind reverse
//! proxies the operator trusts ([`TrustedProxy`]), the address they forwarded in
//! `X-Forwarded-For`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::{IpNet, Ipv4Net};

/// Most `X-Forwarded-For` entries looked at, from the right.
const MAX_FORWARDED_HOPS: usize = 32;

/// A reverse proxy whose `X-Forwarded-For` header is believed: an IP address (`127.0.0.1`,
/// `::1`) or a network in CIDR notation (`10.0.0.0/8`, `fd00::/8`). See
/// [`AuthLayer::trusted_proxies`](crate::AuthLayer::trusted_proxies).
///
/// The one reading of such text, for the library and the `marimo-rs --trusted-proxy` flag: the
/// address as the standard library reads it, the prefix length in decimal digits and no
/// longer than the address. An IPv4 network written as IPv4-mapped IPv6
/// (`::ffff:192.168.0.0/112`) is that IPv4 network, as the addresses it is matched against
/// are.
///
/// ```
/// use marimo_rs::TrustedProxy;
///
/// let proxies: TrustedProxy = "10.0.0.0/8".parse()?;
/// assert_eq!(proxies.to_string(), "10.0.0.0/8");
/// assert_eq!(TrustedProxy::parse("::1")?.to_string(), "::1/128");
/// assert!(TrustedProxy::parse("10.0.0.0/33").is_err());
/// assert!(TrustedProxy::parse("proxy.local").is_err());
/// # Ok::<_, marimo_rs::TrustedProxyError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedProxy(IpNet);

/// Why [`TrustedProxy::parse`] refused a text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustedProxyError {
    /// The text is not an IP address, with or without `/prefix-length`.
    #[error(
        "{given:?} is not an IP address or CIDR network: expected an address such as \
         127.0.0.1 or ::1, or a network such as 10.0.0.0/8"
    )]
    NotAnAddress {
        /// The text as given.
        given: String,
    },
    /// The prefix length is not a number that fits the address.
    #[error(
        "{given:?} is not an IP address or CIDR network: the prefix length must be 0 to {max}"
    )]
    PrefixLength {
        /// The text as given.
        given: String,
        /// The longest prefix of the address family: 32 or 128.
        max: u8,
    },
}

impl TrustedProxy {
    /// Reads `ip` or `ip/prefix-length` (see [`TrustedProxy`]).
    ///
    /// # Errors
    ///
    /// [`TrustedProxyError`] when `text` is not an IP address, or its prefix length is not
    /// `0` to `32` (IPv4) or `0` to `128` (IPv6).
    pub fn parse(text: &str) -> Result<Self, TrustedProxyError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| TrustedProxyError::NotAnAddress {
            given: text.to_owned(),
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bad_prefix = || TrustedProxyError::PrefixLength {
            given: text.to_owned(),
            max,
        };
        let prefix = match prefix {
            None => max,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<u8>().map_err(|_| bad_prefix())?
            }
            Some(_) => return Err(bad_prefix()),
        };
        let net = IpNet::new(addr, prefix).map_err(|_| bad_prefix())?;
        Ok(Self(match (addr, addr.to_canonical()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) if prefix >= 96 => {
                IpNet::V4(Ipv4Net::new(v4, prefix - 96).map_err(|_| bad_prefix())?)
            }
            _ => net,
        }))
    }

    /// Whether `ip` (IPv4-mapped IPv6 counting as IPv4) is this proxy or in this network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for TrustedProxy {
    type Err = TrustedProxyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<&str> for TrustedProxy {
    type Error = TrustedProxyError;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        Self::parse(text)
    }
}

impl TryFrom<&String> for TrustedProxy {
    type Error = TrustedProxyError;

    fn try_from(text: &String) -> Result<Self, Self::Error> {
        Self::parse(text)
    }
}

impl TryFrom<String> for TrustedProxy {
    type Error = TrustedProxyError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The client a request came from, as far as the login limit is concerned.
///
/// The connection's peer address (`peer`), unless that is a trusted proxy: then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy (every trusted proxy appends the address
/// it got the request from, so entries to the right of the first untrusted one are true and
/// the ones to its left may be forged). An entry that is not an IP address stops the walk at
/// the last trusted hop. `None` without a peer address.
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    let mut client = peer?.to_canonical();
    if !is_trusted(trusted, client) {
        return Some(client);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','))
        .take(MAX_FORWARDED_HOPS);
    for hop in hops {
        let Some(ip) = parse_hop(hop.trim_ascii()) else {
            break;
        };
        client = ip;
        if !is_trusted(trusted, ip) {
            break;
        }
    }
    Some(client)
}

/// Whether `ip` (IPv4-mapped IPv6 counting as IPv4) is one of the `trusted` proxies or in one
/// of their networks.
pub(crate) fn is_trusted(trusted: &[TrustedProxy], ip: IpAddr) -> bool {
    trusted.iter().any(|proxy| proxy.contains(ip))
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, with or without a
/// port.
pub(crate) fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn net(text: &str) -> TrustedProxy {
        TrustedProxy::parse(text).unwrap()
    }

    #[test]
    fn ip_networks_parse_and_match() {
        let private = net("10.0.0.0/8");
        assert!(private.contains("10.200.0.1".parse().unwrap()));
        assert!(private.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!private.contains("11.0.0.1".parse().unwrap()));
        assert!(!private.contains("::1".parse().unwrap()));
        let one = net("127.0.0.1");
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = net("fd00::/8");
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all = net("0.0.0.0/0");
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let mapped = net("::ffff:192.168.0.0/112");
        assert!(mapped.contains("192.168.3.4".parse().unwrap()));
        assert_eq!(mapped.to_string(), "192.168.0.0/16");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host",
            "10.0.0.0/8/8",
            "010.0.0.0/8",
        ] {
            assert!(TrustedProxy::parse(bad).is_err(), "{bad}");
        }
        let error = TrustedProxy::parse("10.0.0.0/33").unwrap_err().to_string();
        assert!(
            error.contains("the prefix length must be 0 to 32"),
            "{error}"
        );
        let error = TrustedProxy::parse("proxy.local").unwrap_err().to_string();
        assert!(error.contains("is not an IP address"), "{error}");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [net("10.0.0.0/8")];
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let outsider: IpAddr = "198.51.100.1".parse().unwrap();
        // From the proxy: skip trusted hops from the right, stop at the first untrusted one.
        assert_eq!(
            client_ip(Some(proxy), &headers, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_ip(Some(outsider), &headers, &trusted),
            Some(outsider)
        );
        assert_eq!(client_ip(Some(proxy), &headers, &[]), Some(proxy));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(Some(proxy), &HeaderMap::new(), &trusted),
            Some(proxy)
        );
        // Garbage stops the walk at the last trusted hop.
        let mut garbage = HeaderMap::new();
        garbage.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, nonsense"),
        );
        assert_eq!(client_ip(Some(proxy), &garbage, &trusted), Some(proxy));
        // Ports and brackets are tolerated.
        let mut ported = HeaderMap::new();
        ported.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(
            client_ip(Some(proxy), &ported, &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
        ported.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1:80"));
        assert_eq!(
            client_ip(Some(proxy), &ported, &trusted),
            Some("192.0.2.1".parse().unwrap())
        );
        // Every hop trusted: the left-most.
        let mut inner = HeaderMap::new();
        inner.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.9.9.9, 10.0.0.3"),
        );
        assert_eq!(
            client_ip(Some(proxy), &inner, &trusted),
            Some("10.9.9.9".parse().unwrap())
        );
        assert_eq!(client_ip(None, &headers, &trusted), None);
    }

    #[test]
    #[should_panic(expected = "is not an IP address or CIDR network")]
    fn trusted_proxies_must_parse() {
        let _ = crate::AuthLayer::new(crate::Token::new("t")).trusted_proxies(["proxy.local"]);
    }
}
