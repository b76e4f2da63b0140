//! Raw QUIC for tests and benchmarks: the one TLS client setup that trusts
//! a test mesh CA, client and server endpoints, and the one raw RTN client,
//! which speaks the client protocol's frames directly (so a test can also
//! send what no SDK would).
//!
//! The raw client speaks native QUIC (`rtn-client/1`) or WebTransport
//! (HTTP/3, as a browser does: [`RawClient::open_webtransport`]); both are
//! a `web_transport_quinn::Session`, as on the edge, so every step below
//! works over either.
//!
//! [`RawClient`] has a fallible core (`open`, `try_send`, `recv_until`,
//! `try_join`, `try_publish`) for benchmarks, which count refusals and
//! closes, and test conveniences on top (`connect`, `send`, `expect`,
//! `join`, ...) that wait at most [`STEP`] and panic when the edge does not
//! answer: in a test that is the failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use protocol::framing::{FrameReader, FrameWriter};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::tokens::token;

/// How long a test waits for one step (a frame, a datagram, a close).
pub const STEP: Duration = Duration::from_secs(5);

/// A client config trusting `ca_der` (a test mesh CA) for `alpn`, with
/// quinn's default transport (what a test's client is).
pub fn client_config(ca_der: &[u8], alpn: &[u8]) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .expect("the test CA is a valid certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).expect("TLS 1.3 config for QUIC"),
    ))
}

/// [`client_config`] with a benchmark's transport: datagram buffers for
/// saturating rates, and keep-alives.
pub fn bench_client_config(ca_der: &[u8], alpn: &[u8]) -> quinn::ClientConfig {
    let mut cfg = client_config(ca_der, alpn);
    cfg.transport_config(Arc::new(bench_transport()));
    cfg
}

/// A bare server endpoint (a benchmark's direct baseline), same TLS and
/// buffers as an edge.
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
    let socket = edge_node::socket::bind_udp("127.0.0.1:0".parse()?, 8 << 20, 0, false)?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// A client endpoint on loopback with 2 MiB socket buffers (enough for a
/// client, and within the default `net.core.rmem_max`, so no warning).
pub fn client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    client_endpoint_at("127.0.0.1:0".parse()?, 2 << 20)
}

/// A client endpoint bound to `addr` with `buffer` bytes of socket buffers.
pub fn client_endpoint_at(addr: SocketAddr, buffer: usize) -> anyhow::Result<quinn::Endpoint> {
    let socket = edge_node::socket::bind_udp(addr, buffer, 0, false)?;
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
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t
}

/// A client speaking the RTN client protocol directly.
pub struct RawClient {
    pub endpoint: quinn::Endpoint,
    /// Native connections in web-transport-quinn's raw mode (its methods
    /// are quinn's; the QUIC connection is `*conn`).
    pub conn: web_transport_quinn::Session,
    out: FrameWriter<web_transport_quinn::SendStream>,
    frames: FrameReader<web_transport_quinn::RecvStream>,
    next_request: u32,
}

impl RawClient {
    /// Connect through `endpoint` to the edge at `addr` (whose certificate
    /// `ca_der` signed) with a benchmark's transport, and open the control
    /// stream.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        ca_der: &[u8],
    ) -> anyhow::Result<RawClient> {
        let config = bench_client_config(ca_der, protocol::alpn::CLIENT_V1);
        Self::open_with(endpoint, addr, config).await
    }

    /// [`RawClient::open`] with a config of the caller's (a transport of
    /// its own: a small receive window, say).
    pub async fn open_with(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        config: quinn::ClientConfig,
    ) -> anyhow::Result<RawClient> {
        let conn = endpoint
            .connect_with(config, addr, "localhost")?
            .await
            .context("connecting to the edge")?;
        Self::on_session(endpoint, web_transport_quinn::Session::raw(conn)).await
    }

    /// Open a WebTransport session to `https://<addr>/rtn-client/1` (or
    /// `path`), trusting the certificate digests `hashes` as a browser
    /// given `serverCertificateHashes` does, and open the control stream.
    pub async fn open_webtransport(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        path: &str,
        hashes: &[protocol::CertHash],
    ) -> anyhow::Result<RawClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(sdk::tls::PinnedVerifier::new(
                hashes.to_vec(),
            )))
            .with_no_client_auth();
        tls.alpn_protocols = vec![protocol::alpn::WEBTRANSPORT.to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        let client = web_transport_quinn::Client::new(endpoint.clone(), config);
        let url = url::Url::parse(&format!("https://{addr}{path}"))?;
        let session = client.connect(url).await?;
        Self::on_session(endpoint, session).await
    }

    async fn on_session(
        endpoint: &quinn::Endpoint,
        conn: web_transport_quinn::Session,
    ) -> anyhow::Result<RawClient> {
        let (send, recv) = conn.open_bi().await?;
        Ok(RawClient {
            endpoint: endpoint.clone(),
            conn,
            out: FrameWriter::new(send),
            frames: FrameReader::new(recv),
            next_request: 1,
        })
    }

    pub async fn try_send(&mut self, kind: CK) -> anyhow::Result<()> {
        self.out.send(&pb::ClientFrame { kind: Some(kind) }).await?;
        Ok(())
    }

    /// Bytes on the control stream as they are (a malformed frame, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.out.get_mut().write_all(bytes).await;
    }

    /// Skip frames until `pick` takes one; an error when the stream ends.
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
            if let Some(t) = f.kind.and_then(&mut pick) {
                return Ok(t);
            }
        }
    }

    fn request_id(&mut self) -> u32 {
        self.next_request += 1;
        self.next_request
    }

    /// Join `channel`: the edge's answer to this request, `Joined` or its
    /// refusal.
    pub async fn try_join(
        &mut self,
        token: String,
        channel: &str,
        subscribe_all: bool,
    ) -> anyhow::Result<Result<pb::Joined, pb::Error>> {
        let rid = self.request_id();
        self.try_send(CK::Join(pb::Join {
            request_id: rid,
            token,
            subscribe_all,
            channel: channel.into(),
            member_edges: vec![],
            unreachable_edge: 0,
        }))
        .await?;
        self.recv_until(|f| match f {
            SK::Joined(j) if j.request_id == rid => Some(Ok(j)),
            SK::Error(e) if e.request_id == rid => Some(Err(e)),
            _ => None,
        })
        .await
    }

    /// Publish an audio track: the edge's answer, its key or a refusal.
    pub async fn try_publish(
        &mut self,
        channel_id: u64,
        name: &str,
    ) -> anyhow::Result<Result<u64, pb::Error>> {
        let rid = self.request_id();
        self.try_send(CK::PublishTrack(pb::PublishTrack {
            request_id: rid,
            channel_id,
            name: name.into(),
            kind: pb::TrackKind::Audio as i32,
        }))
        .await?;
        self.recv_until(|f| match f {
            SK::TrackPublished(t) if t.request_id == rid => Some(Ok(t.track_key)),
            SK::Error(e) if e.request_id == rid => Some(Err(e)),
            _ => None,
        })
        .await
    }

    /// Send a media datagram with the 29-byte header.
    pub fn media(&self, channel_id: u64, track_key: u64, seq: u32, payload: &[u8]) {
        let h = protocol::datagram::MediaHeader {
            channel: protocol::ChannelId(channel_id),
            track: protocol::TrackKey(track_key),
            sequence: seq,
            timestamp_us: 0,
        };
        let _ = self
            .conn
            .send_datagram(h.encode(payload).expect("payload fits"));
    }
}

/// A refusal as an error, for a benchmark's `?`.
pub fn refused(e: pb::Error) -> anyhow::Error {
    anyhow!("edge refused: {} ({})", e.message, e.code)
}

/// Test conveniences: each step waits at most [`STEP`] and panics when the
/// edge does not answer.
impl RawClient {
    pub async fn connect(addr: SocketAddr, ca_der: &[u8]) -> RawClient {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        Self::connect_from(endpoint, addr, ca_der).await
    }

    /// Connect through a given endpoint (e.g. bound to an address of its own
    /// in an emulated WAN).
    pub async fn connect_from(
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        ca_der: &[u8],
    ) -> RawClient {
        let config = client_config(ca_der, protocol::alpn::CLIENT_V1);
        Self::open_with(&endpoint, addr, config).await.unwrap()
    }

    pub async fn send(&mut self, kind: CK) {
        self.try_send(kind).await.unwrap();
    }

    /// The next frame, or None if the stream ended or the time ran out.
    pub async fn recv(&mut self) -> Option<SK> {
        let next = tokio::time::timeout(STEP, self.frames.next_frame::<pb::ServerFrame>());
        next.await.ok()?.ok()??.kind
    }

    /// Skip frames until one matches.
    pub async fn expect<T>(&mut self, pick: impl FnMut(SK) -> Option<T>) -> T {
        match tokio::time::timeout(STEP, self.recv_until(pick)).await {
            Ok(Ok(t)) => t,
            _ => panic!("expected frame did not arrive"),
        }
    }

    pub async fn join_with(
        &mut self,
        token: String,
        channel: &str,
        subscribe_all: bool,
    ) -> Result<pb::Joined, pb::Error> {
        let answer = self.try_join(token, channel, subscribe_all);
        match tokio::time::timeout(STEP, answer).await {
            Ok(Ok(joined)) => joined,
            _ => panic!("no answer to a join"),
        }
    }

    /// Join `channel` as `user` (publish and subscribe, all media).
    pub async fn join(&mut self, channel: &str, user: &str) -> pb::Joined {
        self.join_with(token(channel, user, true, true), channel, true)
            .await
            .unwrap()
    }

    pub async fn publish(&mut self, channel_id: u64, name: &str) -> Result<u64, pb::Error> {
        match tokio::time::timeout(STEP, self.try_publish(channel_id, name)).await {
            Ok(Ok(published)) => published,
            _ => panic!("no answer to a publish"),
        }
    }

    pub async fn message(&mut self, channel_id: u64, seq: u64, payload: &[u8]) {
        self.send(CK::Message(pb::ChatMessage {
            channel_id,
            seq,
            payload: payload.to_vec(),
            sent_at_us: 0,
            ..Default::default()
        }))
        .await;
    }

    pub async fn recv_media(&self) -> Option<Bytes> {
        tokio::time::timeout(STEP, self.conn.read_datagram())
            .await
            .ok()?
            .ok()
    }

    /// The close code the edge gave, waiting for it: a QUIC application
    /// close natively, the CLOSE_WEBTRANSPORT_SESSION capsule's code over
    /// WebTransport.
    pub async fn closed_code(&self) -> Option<u64> {
        use web_transport_quinn::{SessionError, WebTransportError};
        match tokio::time::timeout(STEP, self.conn.closed()).await.ok()? {
            SessionError::ConnectionError(quinn::ConnectionError::ApplicationClosed(c)) => {
                Some(c.error_code.into_inner())
            }
            SessionError::WebTransportError(WebTransportError::Closed(code, _)) => {
                Some(code.into())
            }
            _ => None,
        }
    }
}

/// One-way media latency from `a` to `c`: the median over packets sent one
/// at a time (sequence numbers from `seq0`). A packet lost in a route change
/// is skipped; most must arrive.
pub async fn media_latency(
    a: &RawClient,
    c: &RawClient,
    channel: u64,
    track: u64,
    seq0: u32,
) -> Duration {
    use std::time::Instant;
    let mut took = vec![];
    for i in 0..9 {
        let sent = Instant::now();
        a.media(channel, track, seq0 + i, &[7u8; 100]);
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), c.conn.read_datagram()).await
        {
            took.push(sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(took.len() >= 6, "only {} of 9 packets arrived", took.len());
    took.sort();
    took[took.len() / 2]
}
