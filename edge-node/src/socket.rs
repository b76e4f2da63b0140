//! The edge's UDP socket, with large buffers, and the hook that may wrap it
//! before quinn takes it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

/// Bind a UDP socket asking for `buffer` bytes of kernel buffer each way and
/// log what the kernel granted (Linux caps it at net.core.rmem_max/wmem_max
/// unless raised; the terraform module raises them). `reuse_port`: one of
/// several sockets sharing the port (SO_REUSEPORT), only where the edge
/// runs several endpoints: set everywhere, it would let a second edge
/// started on the same port by mistake take half the traffic silently.
pub fn bind_udp(
    addr: SocketAddr,
    buffer: usize,
    edge: u32,
    reuse_port: bool,
) -> anyhow::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // No SO_REUSEADDR: UDP has no TIME_WAIT for it to skip (a dead edge's
    // port is free at once), and with it Linux lets two sockets bind one
    // port. A second edge started on a live edge's port would take its
    // traffic silently, and a socket bound to port 0 can be given a port
    // another such socket holds: with the ~130 sockets of a 50-edge bench
    // on 127.0.0.1, one run in four had an edge's clients' packets land
    // on another socket and their handshakes time out.
    if reuse_port {
        socket
            .set_reuse_port(true)
            .context("setting SO_REUSEPORT (edge.endpoints > 1)")?;
    }
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        warn!(edge, error = %e, "could not set the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        warn!(edge, error = %e, "could not set the UDP send buffer");
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    socket.set_nonblocking(true)?;
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    let edge_label = edge.to_string();
    metrics::gauge!("rtn_edge_udp_buffer_bytes", "edge" => edge_label.clone(), "dir" => "recv")
        .set(recv as f64);
    metrics::gauge!("rtn_edge_udp_buffer_bytes", "edge" => edge_label, "dir" => "send")
        .set(send as f64);
    if recv < buffer || send < buffer {
        warn!(edge, requested = buffer, recv, send, "kernel granted smaller UDP buffers than requested (raise net.core.rmem_max / wmem_max)");
    } else {
        info!(edge, recv, send, "UDP buffers granted");
    }
    Ok(socket.into())
}

/// Wraps the edge's bound UDP socket before quinn takes it: the lab and the
/// tests put their WAN emulation (`netem`) under an edge this way.
pub type SocketHook = Arc<
    dyn Fn(std::net::UdpSocket) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> + Send + Sync,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_not_shared() {
        let first = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 16, 0, false).unwrap();
        let port = first.local_addr().unwrap();
        // With SO_REUSEADDR this bind succeeded and the newer socket took
        // the older one's datagrams; the kernel's port-0 choice skips such
        // ports for the same reason, so two edges could share one.
        let second = bind_udp(port, 1 << 16, 0, false);
        assert!(second.is_err(), "a second socket bound {port}");
        // Several endpoints of one edge still share their port on purpose.
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 16, 0, true).unwrap();
        let b = bind_udp(a.local_addr().unwrap(), 1 << 16, 0, true);
        assert!(b.is_ok(), "SO_REUSEPORT endpoints share a port");
    }
}
