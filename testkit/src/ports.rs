//! Ports for the processes a test or the lab starts, picked so that nothing
//! else takes them between the pick and the child's bind.
//!
//! Binding port 0 and handing the port to a child process races: once the
//! probe socket closes, the kernel may give the same port to any outgoing
//! connection or port-0 bind on the machine (a client connecting to etcd,
//! another test's probe), and the child dies with "address in use" (seen in
//! CI: a controller of `etcd_cluster.rs` lost its API port that way). Ports
//! below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`,
//! 32768-60999 by default) are never handed out like that, so they are
//! picked from below it: each checked free by binding it, none picked twice
//! by one process, and each process starting at its own offset so that two
//! test binaries rarely try the same port first.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out: above the registered services most
/// machines run (etcd 2379/2380, Prometheus 9090, ...).
const LOWEST: u16 = 12_000;
/// The kernel's default start of the ephemeral range, when it cannot be
/// read.
const DEFAULT_EPHEMERAL_START: u16 = 32_768;
/// Ports tried before giving up (the range is nearly full).
const ATTEMPTS: u32 = 4_096;

/// A free TCP port on `ip` (ready to be bound by a child process).
pub fn tcp(ip: IpAddr) -> SocketAddr {
    pick(ip, |addr| TcpListener::bind(addr).is_ok())
        .map(|port| SocketAddr::new(ip, port))
        .unwrap_or_else(|| panic!("no free TCP port on {ip} below the ephemeral range"))
}

/// A free UDP port on `ip`.
pub fn udp(ip: IpAddr) -> SocketAddr {
    pick(ip, |addr| UdpSocket::bind(addr).is_ok())
        .map(|port| SocketAddr::new(ip, port))
        .unwrap_or_else(|| panic!("no free UDP port on {ip} below the ephemeral range"))
}

/// A free TCP port on 127.0.0.1.
pub fn tcp_local() -> SocketAddr {
    tcp(Ipv4Addr::LOCALHOST.into())
}

/// A free UDP port on 127.0.0.1.
pub fn udp_local() -> SocketAddr {
    udp(Ipv4Addr::LOCALHOST.into())
}

/// The next port of this process's walk through the range that `free`
/// accepts on `ip`, 127.0.0.1 and the wildcard (a port taken on any of them
/// may refuse the child's bind).
fn pick(ip: IpAddr, free: impl Fn(SocketAddr) -> bool) -> Option<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let w = walk();
    (0..ATTEMPTS).find_map(|_| {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = w.lowest + ((w.offset + n) % w.span) as u16;
        let on = |ip: IpAddr| free(SocketAddr::new(ip, port));
        let free = on(ip) && on(Ipv4Addr::LOCALHOST.into()) && on(Ipv4Addr::UNSPECIFIED.into());
        free.then_some(port)
    })
}

/// This process's walk: the first port, how many follow it below the
/// ephemeral range, and where in them this process starts.
struct Walk {
    lowest: u16,
    span: u32,
    offset: u32,
}

fn walk() -> &'static Walk {
    static WALK: OnceLock<Walk> = OnceLock::new();
    WALK.get_or_init(|| {
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(DEFAULT_EPHEMERAL_START);
        let span = u32::from(ephemeral.max(LOWEST + 1_000) - LOWEST);
        Walk {
            lowest: LOWEST,
            span,
            offset: std::process::id().wrapping_mul(7_919) % span,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let Walk { lowest, span, .. } = *walk();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let t = tcp_local();
            let u = udp_local();
            for p in [t.port(), u.port()] {
                assert!(
                    p >= lowest && u32::from(p) < u32::from(lowest) + span,
                    "{p}"
                );
                assert!(seen.insert(p), "port {p} picked twice");
            }
            // Free: the child can bind them.
            TcpListener::bind(t).unwrap();
            UdpSocket::bind(u).unwrap();
        }
    }

    #[test]
    fn ports_refused_are_skipped() {
        let ip = Ipv4Addr::LOCALHOST.into();
        for _ in 0..20 {
            let even = pick(ip, |a| a.port() % 2 == 0).unwrap();
            assert_eq!(even % 2, 0);
        }
        assert_eq!(pick(ip, |_| false), None, "a full range is not a port");
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = held.local_addr().unwrap();
        assert!(TcpListener::bind(addr).is_err(), "the check pick makes");
    }
}
