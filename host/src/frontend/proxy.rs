//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): a TCP balancer in front of the
//! gateway sends one before the client's bytes, naming the real client, so the address that
//! policies, limits, logs and the audit trail see is the client's and not the balancer's.
//!
//! Only connections from `frontend.proxy-protocol.trusted` networks are read for a header (and
//! must send one); anyone else could claim any address with it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The real client's address.
    Client(SocketAddr),
    /// The balancer speaking for itself (v2 LOCAL, v1 UNKNOWN, a family it does not forward):
    /// the connection's own address stands.
    Local,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("the connection closed before its PROXY protocol header ended")]
    Closed,
}

/// Whether the first bytes a client sent are (the start of) a PROXY header.
pub fn looks_like_header(first: &[u8]) -> bool {
    let n = first.len().min(5);
    n > 0 && (first[..n] == b"PROXY"[..n] || first[..n] == V2_SIGNATURE[..n])
}

/// Reads one header off `tcp`, exactly: not a byte of what follows it.
pub async fn read_header(tcp: &mut TcpStream) -> Result<Source, ProxyError> {
    let mut start = [0u8; 5];
    read(tcp, &mut start).await?;
    if &start == b"PROXY" {
        let mut line = start.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyError::Malformed("a v1 line longer than 107 bytes"));
            }
            let mut b = [0u8; 1];
            read(tcp, &mut b).await?;
            line.push(b[0]);
        }
        return parse_v1(&line);
    }
    if start != V2_SIGNATURE[..5] {
        return Err(ProxyError::Missing);
    }
    let mut head = [0u8; 16];
    head[..5].copy_from_slice(&start);
    read(tcp, &mut head[5..]).await?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut body = vec![0u8; len];
    read(tcp, &mut body).await?;
    parse_v2(&head, &body)
}

async fn read(tcp: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProxyError> {
    tcp.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyError::Closed)
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (or `TCP6`, or `UNKNOWN ...`).
pub fn parse_v1(line: &[u8]) -> Result<Source, ProxyError> {
    let text = std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or(ProxyError::Malformed("a v1 line is ASCII ending in CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::Malformed("a v1 line starts with PROXY"));
    }
    let family = parts.next().ok_or(ProxyError::Malformed("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(Source::Local);
    }
    let (src, _dst, sport, _dport) = match (parts.next(), parts.next(), parts.next(), parts.next())
    {
        (Some(a), Some(b), Some(c), Some(d)) if parts.next().is_none() => (a, b, c, d),
        _ => {
            return Err(ProxyError::Malformed(
                "v1 wants source, destination and ports",
            ));
        }
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::Malformed("not an IPv4 source address"))?,
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::Malformed("not an IPv6 source address"))?,
        _ => {
            return Err(ProxyError::Malformed(
                "v1 protocol is TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let port = sport
        .parse::<u16>()
        .map_err(|_| ProxyError::Malformed("not a source port"))?;
    Ok(Source::Client(SocketAddr::new(ip, port)))
}

/// The 16-byte v2 head (signature, version and command, family, length) and its body.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Source, ProxyError> {
    if head[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    if head[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 header of another version"));
    }
    match head[12] & 0x0f {
        0 => return Ok(Source::Local),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command is LOCAL or PROXY")),
    }
    // Family (high nibble) and transport (low); only TCP over IPv4 / IPv6 names a client.
    match head[13] {
        0x11 => {
            let a = body
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 addresses are 12 bytes"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Ok(Source::Client(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        0x21 => {
            let a = body
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 addresses are 36 bytes"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(Source::Client(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                port,
            )))
        }
        _ => Ok(Source::Local),
    }
}

/// An address block of `frontend.proxy-protocol.trusted` (`10.0.0.0/8`, `::1/128`, or one
/// address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an address or address/prefix"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("'{s}': the prefix length is 0 to {max}"))?,
            None => max,
        };
        Ok(Self { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 6033\r\n"),
            Ok(Source::Client("192.0.2.7:51234".parse().expect("addr")))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 6033\r\n"),
            Ok(Source::Client("[2001:db8::7]:4000".parse().expect("addr")))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Source::Local));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 70000 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(&V2_SIGNATURE);
        head[12] = 0x20 | cmd;
        head[13] = fam;
        head[14..].copy_from_slice(&(body.len() as u16).to_be_bytes());
        (head, body.to_vec())
    }

    #[test]
    fn parses_v2_headers() {
        let (h, b) = v2(
            1,
            0x11,
            &[192, 0, 2, 7, 10, 0, 0, 1, 0xc8, 0x22, 0x17, 0x91],
        );
        assert_eq!(
            parse_v2(&h, &b),
            Ok(Source::Client("192.0.2.7:51234".parse().expect("addr")))
        );
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&4000u16.to_be_bytes());
        let (h, b) = v2(1, 0x21, &six);
        assert_eq!(
            parse_v2(&h, &b),
            Ok(Source::Client("[::1]:4000".parse().expect("addr")))
        );
        let (h, b) = v2(0, 0x00, &[]);
        assert_eq!(parse_v2(&h, &b), Ok(Source::Local));
        let (h, b) = v2(1, 0x11, &[1, 2, 3]);
        assert!(parse_v2(&h, &b).is_err(), "short addresses");
        let (mut h, b) = v2(1, 0x11, &[0; 12]);
        h[12] = 0x11;
        assert!(parse_v2(&h, &b).is_err(), "version 1 in a v2 header");
    }

    #[test]
    fn recognises_the_start_of_a_header() {
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(b"PRO"));
        assert!(looks_like_header(&V2_SIGNATURE));
        assert!(!looks_like_header(&[0x55, 0, 0, 1, 0x85]));
        assert!(!looks_like_header(b""));
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.200.3.4".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("one");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let odd = Cidr::parse("192.168.4.0/22").expect("cidr");
        assert!(odd.contains("192.168.7.255".parse().expect("ip")));
        assert!(!odd.contains("192.168.8.0".parse().expect("ip")));
        assert!(
            Cidr::parse("fd00::/8")
                .expect("v6")
                .contains("fd12::1".parse().expect("ip"))
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
    }
}
