//! The ports the workers share, reserved by the supervisor before any worker starts: a
//! socket bound with `SO_REUSEPORT` and never listening holds the port for the supervisor's
//! lifetime. It takes no connections (the kernel hands connections only to listening
//! sockets); the kernel gives the port to no other autobind or outgoing connection, and a
//! socket without `SO_REUSEADDR` or `SO_REUSEPORT` cannot bind it, so a restarted worker
//! finds it free. (A listener with `SO_REUSEADDR` alone can still take it while no worker
//! listens; workers then fail to bind and are restarted with backoff.) Port 0 is resolved
//! here, once for all workers.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Attempts at finding consecutive free metrics ports for a base port 0.
const METRICS_ATTEMPTS: usize = 64;

/// Binds, without listening, a socket with `SO_REUSEADDR` and `SO_REUSEPORT` to `addr`
/// (close-on-exec: workers do not inherit it).
fn reserve(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn bound_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

/// Reserves `addr` (port 0: a free port) and returns the address to hand the workers.
pub(super) fn reserve_listen(addr: SocketAddr) -> io::Result<(SocketAddr, Socket)> {
    let socket = reserve(addr)?;
    Ok((bound_addr(&socket)?, socket))
}

/// Reserves `n` consecutive ports from `base`'s (worker K's metrics listener takes the
/// base port plus K); a base port 0 is a free run of `n` ports, searched for.
pub(super) fn reserve_metrics(base: SocketAddr, n: usize) -> io::Result<(SocketAddr, Vec<Socket>)> {
    if base.port() != 0 {
        let sockets = (0..n)
            .map(|k| reserve(with_port_offset(base, k)?))
            .collect::<io::Result<Vec<_>>>()?;
        return Ok((base, sockets));
    }
    for _ in 0..METRICS_ATTEMPTS {
        let first = reserve(base)?;
        let start = bound_addr(&first)?;
        let mut sockets = vec![first];
        for k in 1..n {
            match with_port_offset(start, k).and_then(reserve) {
                Ok(s) => sockets.push(s),
                Err(_) => break,
            }
        }
        if sockets.len() == n {
            return Ok((start, sockets));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("found no {n} consecutive free ports for --metrics-listen {base}"),
    ))
}

/// `addr` with its port plus `k`; an error past 65535.
pub(super) fn with_port_offset(mut addr: SocketAddr, k: usize) -> io::Result<SocketAddr> {
    let port = u16::try_from(usize::from(addr.port()) + k)
        .map_err(|_| io::Error::other(format!("port {} + {k} is past 65535", addr.port())))?;
    addr.set_port(port);
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_takes_no_connection_and_a_reuse_port_listener_shares_it() {
        let (addr, _hold) = reserve_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "a bound socket that does not listen refuses connections"
        );
        let plain = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        assert!(
            plain.bind(&addr.into()).is_err(),
            "a socket without SO_REUSEADDR or SO_REUSEPORT cannot take the port"
        );
        let listener = reserve(addr).unwrap();
        listener.listen(8).unwrap();
        assert!(std::net::TcpStream::connect(addr).is_ok());
    }

    #[test]
    fn metrics_ports_are_consecutive() {
        let (base, held) = reserve_metrics("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(held.len(), 3);
        for (k, s) in held.iter().enumerate() {
            assert_eq!(bound_addr(s).unwrap(), with_port_offset(base, k).unwrap());
        }
        assert!(with_port_offset("127.0.0.1:65535".parse().unwrap(), 1).is_err());
    }
}
