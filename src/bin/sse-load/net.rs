//! Sockets and addresses: `http://` URLs, non-blocking connects from a chosen loopback
//! source address, and the open-file limit.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};

/// An `http://host[:port]/path?query` URL, resolved once.
#[derive(Debug, Clone)]
pub struct HttpUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header value (as written in the URL).
    pub host: String,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl HttpUrl {
    /// Parses and resolves `s`. Only plain `http://` is supported (a load generator on
    /// loopback has no use for TLS).
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{s}`: only http:// URLs are supported"))?;
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("`{s}`: no host"));
        }
        let with_port = if authority.starts_with('[') {
            if authority.contains("]:") {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            }
        } else if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("`{s}`: cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("`{s}`: {authority} resolves to no address"))?;
        Ok(HttpUrl {
            addr,
            host: authority.to_owned(),
            target: target.to_owned(),
        })
    }

    /// The same server with another path (and query).
    pub fn with_target(&self, target: &str) -> HttpUrl {
        HttpUrl {
            addr: self.addr,
            host: self.host.clone(),
            target: target.to_owned(),
        }
    }
}

/// The `i`-th of `k` loopback source addresses: 127.0.0.1 … 127.0.0.k.
pub fn source_ip(i: usize, k: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(k.max(1))) as u8)
}

fn sockaddr_v4(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_v6(addr: std::net::SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: addr.port().to_be(),
        sin6_flowinfo: addr.flowinfo(),
        sin6_addr: libc::in6_addr {
            s6_addr: addr.ip().octets(),
        },
        sin6_scope_id: addr.scope_id(),
    }
}

/// Starts a non-blocking connect to `dst`, first binding to `src` (port chosen at connect
/// time, with `IP_BIND_ADDRESS_NO_PORT`, so each source address has its own ephemeral
/// port range). The connect completes later: wait for writability.
pub fn start_connect(src: Option<Ipv4Addr>, dst: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let family = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let (Some(src), SocketAddr::V4(_)) = (src, dst) {
        let one: libc::c_int = 1;
        let sa = sockaddr_v4(src, 0);
        // SAFETY: setsockopt/bind on our socket with pointers to locals of the right size.
        unsafe {
            // Best effort: without it, bind picks a port per source address up front.
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            if libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    let rc = match dst {
        SocketAddr::V4(a) => {
            let sa = sockaddr_v4(*a.ip(), a.port());
            // SAFETY: connect(2) with a valid sockaddr_in of the stated size.
            unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = sockaddr_v6(a);
            // SAFETY: connect(2) with a valid sockaddr_in6 of the stated size.
            unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(mio::net::TcpStream::from_std(std::net::TcpStream::from(
        owned,
    )))
}

/// True when `ip` is an IPv4 loopback address (the only place source spreading works).
pub fn is_v4_loopback(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:3000/events?topic=a").unwrap();
        assert_eq!(u.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(u.host, "127.0.0.1:3000");
        assert_eq!(u.target, "/events?topic=a");
        let u = HttpUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!(u.addr.port(), 80);
        assert_eq!(u.target, "/");
        assert!(HttpUrl::parse("https://x/").is_err());
        assert!(HttpUrl::parse("http:///x").is_err());
    }

    #[test]
    fn source_ips_cycle() {
        assert_eq!(source_ip(0, 3), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(4, 3), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(7, 1), Ipv4Addr::new(127, 0, 0, 1));
    }
}
