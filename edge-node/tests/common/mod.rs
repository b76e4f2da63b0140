//! Test harness: in-process edges on loopback with a dev mesh CA, and a raw
//! protocol client that speaks frames directly (so tests can also send what
//! no SDK would).
#![allow(dead_code)]

#[cfg(all(feature = "etcd", feature = "netem"))]
pub mod etcd_cluster;

/// The admin bearer token of edges and controllers started as processes
/// (operator endpoints: `/netem`, `/v1/mesh`), and the variable their
/// configs name for it.
pub const ADMIN_TOKEN_ENV: &str = "RTN_TEST_ADMIN_TOKEN";
pub const ADMIN_TOKEN: &str = "rtn-test-admin-token";

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions, RouteFeed, RouteTable};
use protocol::framing::{self, FrameBuffer};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use protocol::token::{mint, Grant};
use protocol::{EdgeAddress, EdgeId};
use quinn::crypto::rustls::QuicClientConfig;
pub use testkit::netem::Wan;

pub const APP: &str = "demo";
pub const SECRET: &str = "test-secret-0123456789";
pub const STEP: Duration = Duration::from_secs(5);

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(channel: &str, user: &str, publish: bool, subscribe: bool) -> String {
    mint(
        &Grant {
            app_id: APP,
            channel,
            user_id: user,
            publish,
            subscribe,
            issued_at: now(),
            expires_at: now() + 600,
        },
        SECRET.as_bytes(),
    )
}

/// A token for `channel` and `user` signed with a secret the app does not
/// have: refused with `TOKEN_BAD_SIGNATURE`.
pub fn forged_token(channel: &str, user: &str) -> String {
    mint(
        &Grant {
            app_id: APP,
            channel,
            user_id: user,
            publish: true,
            subscribe: true,
            issued_at: now(),
            expires_at: now() + 600,
        },
        b"not-the-apps-secret-at-all",
    )
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A set of in-process edges sharing one dev mesh CA.
pub struct Mesh {
    pub pki: DevPki,
    pub edges: Vec<Edge>,
    /// The emulated WAN the edges send through, if they do.
    pub wan: Option<Arc<Wan>>,
}

impl Mesh {
    pub async fn start(n: u32) -> Mesh {
        Self::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: u32, tweak: impl Fn(&mut EdgeConfig)) -> Mesh {
        Self::start_over(None, n, tweak).await
    }

    /// `n` edges whose sockets send through `wan`, if given.
    pub async fn start_over(
        wan: Option<Arc<Wan>>,
        n: u32,
        tweak: impl Fn(&mut EdgeConfig),
    ) -> Mesh {
        init_logs();
        let pki = DevPki::new().unwrap();
        let mut edges = vec![];
        for id in 1..=n {
            edges.push(start_edge(&pki, id, None, &tweak, wan.as_ref()).await);
        }
        let mesh = Mesh { pki, edges, wan };
        mesh.full_mesh_routes();
        mesh
    }

    /// The emulated WAN under the edges (a mesh started over one).
    pub fn wan(&self) -> &Wan {
        self.wan
            .as_deref()
            .expect("this mesh runs over an emulated WAN")
    }

    pub fn peer(&self, e: &Edge) -> EdgeAddress {
        EdgeAddress::new(e.addr(), "localhost")
    }

    /// Every edge knows every other, reached directly.
    pub fn full_mesh_routes(&self) {
        for e in &self.edges {
            let peers = self
                .edges
                .iter()
                .filter(|p| p.id() != e.id())
                .map(|p| (p.id(), self.peer(p)))
                .collect();
            e.routes.publish(RouteTable {
                version: 0,
                peers,
                paths: Default::default(),
                ..Default::default()
            });
        }
    }

    /// Give edge `at` explicit paths (`[at, ..., dest]`).
    pub fn set_paths(&self, at: EdgeId, paths: &[&[EdgeId]]) {
        let e = self.edge(at);
        let mut table = (*e.routes.current()).clone();
        for p in paths {
            table.paths.insert(*p.last().unwrap(), p.to_vec());
        }
        e.routes.publish(table);
    }

    pub fn edge(&self, id: EdgeId) -> &Edge {
        self.edges.iter().find(|e| e.id() == id).unwrap()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.pki.ca_der().to_vec()
    }

    pub async fn stop(self) {
        for e in self.edges {
            e.kill().await;
        }
    }
}

pub async fn start_edge(
    pki: &DevPki,
    id: u32,
    listen: Option<SocketAddr>,
    tweak: &impl Fn(&mut EdgeConfig),
    wan: Option<&Arc<Wan>>,
) -> Edge {
    let mut cfg = EdgeConfig::dev(id, APP, SECRET);
    if let Some(l) = listen {
        cfg.edge.listen = l;
    }
    tweak(&mut cfg);
    // A restarted edge reuses its port; the old socket may take a moment to go.
    let mut tries = 0;
    loop {
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()]).unwrap()),
            routes: Some(RouteFeed::new(RouteTable::default())),
            socket: wan.map(|w| w.hook()),
            ..Default::default()
        };
        match Edge::start(cfg.clone(), opts).await {
            Ok(e) => return e,
            Err(e) if tries < 40 => {
                tries += 1;
                tracing::debug!("edge start retry: {e:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("edge {id} did not start: {e:#}"),
        }
    }
}

/// Sum of a Prometheus counter over the series matching all `labels`.
/// An SDK client config that tries the edges `order` of `mesh`, in that
/// order.
pub fn sdk_config(mesh: &Mesh, order: &[EdgeId]) -> sdk::ClientConfig {
    let edges = order
        .iter()
        .map(|id| sdk::EdgeCandidate {
            addr: mesh.edge(*id).addr(),
            server_name: "localhost".into(),
        })
        .collect();
    sdk::ClientConfig::new(edges, mesh.pki.ca_pem().into_bytes())
}

/// A call of two SDK clients in channel `chat`: rita (subscribing) joins
/// through `receiver`, then sam (publishing) through `sender`.
pub struct Call {
    pub sender: sdk::Client,
    pub receiver: sdk::Client,
    /// Sam's side of the channel.
    pub room: sdk::Channel,
    /// Rita's.
    pub rx_room: sdk::Channel,
}

impl Call {
    pub async fn start(sender: sdk::ClientConfig, receiver: sdk::ClientConfig) -> Call {
        let sender = sdk::Client::connect(sender).await.unwrap();
        let receiver = sdk::Client::connect(receiver).await.unwrap();
        let rx_room = receiver
            .join(&token("chat", "rita", false, true), "chat", true)
            .await
            .unwrap();
        let room = sender
            .join(&token("chat", "sam", true, true), "chat", true)
            .await
            .unwrap();
        Call {
            sender,
            receiver,
            room,
            rx_room,
        }
    }

    pub async fn close(self) {
        self.sender.close().await;
        self.receiver.close().await;
    }
}

pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = edge_node::metrics::prometheus().render();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn client_config(ca_der: &[u8], alpn: &[u8]) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

pub fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A client speaking raw frames.
pub struct RawClient {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameBuffer,
    next_request: u32,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, ca_der: &[u8]) -> RawClient {
        Self::connect_from(client_endpoint(), addr, ca_der).await
    }

    /// Connect through a given endpoint (e.g. bound to an address of its own
    /// in an emulated WAN).
    pub async fn connect_from(
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        ca_der: &[u8],
    ) -> RawClient {
        let conn = endpoint
            .connect_with(
                client_config(ca_der, protocol::alpn::CLIENT_V1),
                addr,
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        RawClient {
            endpoint,
            conn,
            send,
            recv,
            frames: FrameBuffer::new(),
            next_request: 1,
        }
    }

    pub async fn send(&mut self, kind: CK) {
        let bytes = framing::encode_to_bytes(&pb::ClientFrame { kind: Some(kind) }).unwrap();
        self.send.write_all(&bytes).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.send.write_all(bytes).await;
    }

    /// The next frame, or None if the stream ended or the time ran out.
    pub async fn recv(&mut self) -> Option<SK> {
        loop {
            if let Ok(Some(f)) = self.frames.next_frame::<pb::ServerFrame>() {
                return f.kind;
            }
            let chunk = tokio::time::timeout(STEP, self.recv.read_chunk(64 * 1024, true))
                .await
                .ok()?;
            let chunk = chunk.ok()??;
            self.frames.extend(&chunk.bytes);
        }
    }

    /// Skip frames until one matches.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(SK) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + STEP;
        while tokio::time::Instant::now() < deadline {
            if let Some(f) = self.recv().await {
                if let Some(t) = pick(f) {
                    return t;
                }
            } else {
                break;
            }
        }
        panic!("expected frame did not arrive");
    }

    fn rid(&mut self) -> u32 {
        self.next_request += 1;
        self.next_request
    }

    pub async fn join_with(
        &mut self,
        token: String,
        channel: &str,
        subscribe_all: bool,
    ) -> Result<pb::Joined, pb::Error> {
        let rid = self.rid();
        self.send(CK::Join(pb::Join {
            request_id: rid,
            token,
            subscribe_all,
            channel: channel.into(),
        }))
        .await;
        self.expect(|f| match f {
            SK::Joined(j) if j.request_id == rid => Some(Ok(j)),
            SK::Error(e) if e.request_id == rid => Some(Err(e)),
            _ => None,
        })
        .await
    }

    pub async fn join(&mut self, channel: &str, user: &str) -> pb::Joined {
        self.join_with(token(channel, user, true, true), channel, true)
            .await
            .unwrap()
    }

    pub async fn publish(&mut self, channel_id: u64, name: &str) -> Result<u64, pb::Error> {
        let rid = self.rid();
        self.send(CK::PublishTrack(pb::PublishTrack {
            request_id: rid,
            channel_id,
            name: name.into(),
            kind: pb::TrackKind::Audio as i32,
        }))
        .await;
        self.expect(|f| match f {
            SK::TrackPublished(t) if t.request_id == rid => Some(Ok(t.track_key)),
            SK::Error(e) if e.request_id == rid => Some(Err(e)),
            _ => None,
        })
        .await
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

    pub fn media(&self, channel_id: u64, track_key: u64, seq: u32, payload: &[u8]) {
        let h = protocol::datagram::MediaHeader {
            channel: protocol::ChannelId(channel_id),
            track: protocol::TrackKey(track_key),
            sequence: seq,
            timestamp_us: 0,
        };
        self.conn.send_datagram(h.encode(payload).unwrap()).unwrap();
    }

    pub async fn recv_media(&self) -> Option<Bytes> {
        tokio::time::timeout(STEP, self.conn.read_datagram())
            .await
            .ok()?
            .ok()
    }

    /// The close code the edge gave, waiting for it.
    pub async fn closed_code(&self) -> Option<u64> {
        match tokio::time::timeout(STEP, self.conn.closed()).await.ok()? {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

pub fn bytes_of(b: &[u8]) -> BytesMut {
    BytesMut::from(b)
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
) -> std::time::Duration {
    use std::time::{Duration, Instant};
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

/// One HTTP/1.1 request with `connection: close`: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "http timed out"))??;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}
