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
    // A restarted edge binds its port again at once, even while the previous
    // instance's socket is still being torn down.
    let _ = socket.set_reuse_address(true);
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
