//! Raw QUIC plumbing for benchmarks: a client config trusting one CA, a
//! bare server endpoint, and a raw RTN client that joins and publishes.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use protocol::framing::{FrameReader, FrameWriter};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;

pub fn client_config(
    ca: &CertificateDer<'static>,
    alpn: &[u8],
) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(Arc::new(bench_transport()));
    Ok(cfg)
}

/// A server endpoint for the direct baseline, same TLS and buffers as an edge.
pub fn server_endpoint(
    material: &edge_node::tls::TlsMaterial,
    alpn: &[u8],
) -> anyhow::Result<quinn::Endpoint> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(Arc::new(bench_transport()));
    let socket = edge_node::socket::bind_udp("127.0.0.1:0".parse()?, 8 << 20, 0)?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

pub fn client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    client_endpoint_at("127.0.0.1:0".parse()?, 8 << 20)
}

/// A client endpoint bound to `addr` with `buffer` bytes of socket buffers.
pub fn client_endpoint_at(addr: SocketAddr, buffer: usize) -> anyhow::Result<quinn::Endpoint> {
    let socket = edge_node::socket::bind_udp(addr, buffer, 0)?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

fn bench_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(1 << 20);
    // Benchmarks leave a flow idle while they measure another, longer than
    // an edge's client idle timeout: keep it open.
    t.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    t
}

/// A client speaking the RTN client protocol directly.
pub struct RawClient {
    pub conn: quinn::Connection,
    out: FrameWriter<quinn::SendStream>,
    frames: FrameReader<quinn::RecvStream>,
}

impl RawClient {
    pub async fn connect(
        ep: &quinn::Endpoint,
        addr: SocketAddr,
        ca: &CertificateDer<'static>,
    ) -> anyhow::Result<Self> {
        let conn = ep
            .connect_with(
                client_config(ca, protocol::alpn::CLIENT_V1)?,
                addr,
                "localhost",
            )?
            .await
            .context("connecting to the edge")?;
        let (send, recv) = conn.open_bi().await?;
        Ok(RawClient {
            conn,
            out: FrameWriter::new(send),
            frames: FrameReader::new(recv),
        })
    }

    pub async fn send(&mut self, kind: CK) -> anyhow::Result<()> {
        self.out.send(&pb::ClientFrame { kind: Some(kind) }).await?;
        Ok(())
    }

    pub async fn recv_until<T>(
        &mut self,
        mut pick: impl FnMut(SK) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            let f = self
                .frames
                .next_frame::<pb::ServerFrame>()
                .await?
                .ok_or_else(|| anyhow!("control stream closed"))?;
            if let Some(SK::Error(e)) = &f.kind {
                return Err(anyhow!("edge refused: {} ({})", e.message, e.code));
            }
            if let Some(t) = f.kind.and_then(&mut pick) {
                return Ok(t);
            }
        }
    }

    /// Join and return the channel id.
    pub async fn join(
        &mut self,
        token: String,
        channel: &str,
        subscribe_all: bool,
    ) -> anyhow::Result<u64> {
        self.send(CK::Join(pb::Join {
            request_id: 1,
            token,
            subscribe_all,
            channel: channel.into(),
        }))
        .await?;
        self.recv_until(|f| match f {
            SK::Joined(j) => Some(j.channel_id),
            _ => None,
        })
        .await
    }

    /// Publish a track and return its key.
    pub async fn publish(&mut self, channel_id: u64, name: &str) -> anyhow::Result<u64> {
        self.send(CK::PublishTrack(pb::PublishTrack {
            request_id: 2,
            channel_id,
            name: name.into(),
            kind: pb::TrackKind::Audio as i32,
        }))
        .await?;
        self.recv_until(|f| match f {
            SK::TrackPublished(t) => Some(t.track_key),
            _ => None,
        })
        .await
    }
}
