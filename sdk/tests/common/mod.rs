//! Test harness: scripted fake edges (a QUIC server speaking the client
//! protocol exactly as the test says), tokens, and a UDP blackhole that makes
//! an edge vanish the way a SIGKILLed process does (no close, no reply).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use edge_node::tls::DevPki;
use edge_node::{Edge, EdgeConfig, EdgeOptions, RouteFeed, RouteTable};
use protocol::framing::{self, FrameBuffer};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use protocol::token::{mint, Grant};
use sdk::{ClientConfig, EdgeCandidate};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};

pub const STEP: Duration = Duration::from_secs(5);

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The app of the real in-process edges (`start_edges`) and its secret.
pub const APP: &str = "demo";
pub const SECRET: &str = "test-secret-0123456789";

/// A token for the real edges: publish and subscribe, ten minutes.
pub fn token(channel: &str, user: &str) -> String {
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
        SECRET.as_bytes(),
    )
}

/// `n` real in-process edges (ids 1..=n) that know each other as peers.
pub async fn start_edges(pki: &DevPki, n: u32) -> Vec<Edge> {
    let mut edges = vec![];
    for id in 1..=n {
        let opts = EdgeOptions {
            tls: Some(pki.material(&["localhost".into()]).unwrap()),
            routes: Some(RouteFeed::new(RouteTable::default())),
            ..Default::default()
        };
        edges.push(
            Edge::start(EdgeConfig::dev(id, APP, SECRET), opts)
                .await
                .unwrap(),
        );
    }
    let peer = |e: &Edge| protocol::EdgeAddress::new(e.addr(), "localhost");
    for e in &edges {
        e.routes.publish(RouteTable {
            version: 0,
            peers: edges
                .iter()
                .filter(|p| p.id() != e.id())
                .map(|p| (p.id(), peer(p)))
                .collect(),
            paths: Default::default(),
            ..Default::default()
        });
    }
    edges
}

/// A client config for these candidates, with test-friendly timers.
pub fn config(pki: &DevPki, edges: &[SocketAddr]) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        edges
            .iter()
            .map(|a| EdgeCandidate {
                addr: *a,
                server_name: "localhost".into(),
            })
            .collect(),
        pki.ca_pem().into_bytes(),
    );
    cfg.backoff.initial = Duration::from_millis(20);
    cfg
}

/// A QUIC server that accepts client links and hands them to the test.
pub struct FakeEdge {
    pub addr: SocketAddr,
    pub endpoint: quinn::Endpoint,
    conns: mpsc::UnboundedReceiver<FakeConn>,
}

impl FakeEdge {
    pub fn start(pki: &DevPki) -> FakeEdge {
        let server = pki
            .material(&["localhost".into()])
            .unwrap()
            .server_config()
            .unwrap();
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        let ep = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let Ok((send, recv)) = conn.accept_bi().await else {
                        return;
                    };
                    let _ = tx.send(FakeConn::new(conn, send, recv));
                });
            }
        });
        FakeEdge {
            addr,
            endpoint,
            conns,
        }
    }

    /// The next client connection (its control stream is open).
    pub async fn accept(&mut self) -> FakeConn {
        tokio::time::timeout(STEP, self.conns.recv())
            .await
            .expect("a client connects")
            .expect("edge running")
    }

    /// Whether a client connected (without waiting).
    pub fn try_accept(&mut self) -> Option<FakeConn> {
        self.conns.try_recv().ok()
    }
}

/// One client link as the fake edge sees it. Keepalives are answered in the
/// background (until `mute`); every other frame goes to the test.
pub struct FakeConn {
    pub conn: quinn::Connection,
    frames: mpsc::UnboundedReceiver<CK>,
    send: Arc<Mutex<quinn::SendStream>>,
    muted: Arc<AtomicBool>,
}

impl FakeConn {
    fn new(conn: quinn::Connection, send: quinn::SendStream, mut recv: quinn::RecvStream) -> Self {
        let (tx, frames) = mpsc::unbounded_channel();
        let send = Arc::new(Mutex::new(send));
        let muted = Arc::new(AtomicBool::new(false));
        let (w, m) = (send.clone(), muted.clone());
        tokio::spawn(async move {
            let mut buf = FrameBuffer::new();
            while let Ok(Some(chunk)) = recv.read_chunk(65536, true).await {
                buf.extend(&chunk.bytes);
                while let Ok(Some(f)) = buf.next_frame::<pb::ClientFrame>() {
                    match f.kind {
                        // Muted: the edge process hangs.
                        Some(CK::Keepalive(_)) if m.load(Ordering::Relaxed) => {}
                        Some(CK::Keepalive(k)) => {
                            let ack = SK::KeepaliveAck(pb::KeepaliveAck { nonce: k.nonce });
                            let _ = w.lock().await.write_all(&frame(ack)).await;
                        }
                        Some(k) => {
                            let _ = tx.send(k);
                        }
                        None => {}
                    }
                }
            }
        });
        FakeConn {
            conn,
            frames,
            send,
            muted,
        }
    }

    /// Stop answering anything: the edge process hangs (its QUIC stack
    /// still acknowledges packets).
    pub fn mute(&self) {
        self.muted.store(true, Ordering::Relaxed);
    }

    pub async fn send(&self, kind: SK) {
        self.send_raw(&frame(kind)).await;
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.send.lock().await.write_all(bytes).await.unwrap();
    }

    /// The next non-keepalive frame from the client.
    pub async fn next(&mut self) -> CK {
        tokio::time::timeout(STEP, self.frames.recv())
            .await
            .expect("the client sends a frame")
            .expect("control stream open")
    }

    /// The next frame, if one comes within `wait`.
    pub async fn maybe_next(&mut self, wait: Duration) -> Option<CK> {
        tokio::time::timeout(wait, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    pub async fn expect_join(&mut self) -> pb::Join {
        match self.next().await {
            CK::Join(j) => j,
            other => panic!("expected Join, got {other:?}"),
        }
    }

    /// Answer a Join.
    pub async fn joined(
        &self,
        j: &pb::Join,
        channel_id: u64,
        user: &str,
        members: Vec<pb::Member>,
    ) {
        self.send(SK::Joined(pb::Joined {
            request_id: j.request_id,
            channel: j.channel.clone(),
            channel_id,
            user_id: user.into(),
            members,
            edge_id: 1,
        }))
        .await;
    }

    pub async fn expect_publish(&mut self) -> pb::PublishTrack {
        match self.next().await {
            CK::PublishTrack(p) => p,
            other => panic!("expected PublishTrack, got {other:?}"),
        }
    }

    pub async fn published(&self, p: &pb::PublishTrack, key: u64) {
        self.send(SK::TrackPublished(pb::TrackPublished {
            request_id: p.request_id,
            channel_id: p.channel_id,
            name: p.name.clone(),
            track_key: key,
        }))
        .await;
    }

    pub async fn expect_message(&mut self) -> pb::ChatMessage {
        match self.next().await {
            CK::Message(m) => m,
            other => panic!("expected ChatMessage, got {other:?}"),
        }
    }

    pub async fn datagram(&self) -> Bytes {
        tokio::time::timeout(STEP, self.conn.read_datagram())
            .await
            .expect("a datagram arrives")
            .expect("connection open")
    }
}

pub fn frame(kind: SK) -> BytesMut {
    let mut out = BytesMut::new();
    framing::encode(&pb::ServerFrame { kind: Some(kind) }, &mut out).unwrap();
    out
}

pub fn member(user: &str, session: u64, tracks: &[(&str, u64)]) -> pb::Member {
    pb::Member {
        user_id: user.into(),
        session,
        tracks: tracks
            .iter()
            .map(|(name, key)| pb::TrackInfo {
                name: (*name).into(),
                track_key: *key,
                kind: pb::TrackKind::Audio as i32,
            })
            .collect(),
    }
}

/// A UDP relay in front of an edge that can be cut: then it drops every
/// packet both ways, as if the edge's machine vanished.
pub struct Blackhole {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Blackhole {
    pub async fn start(upstream: SocketAddr) -> Blackhole {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(upstream).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        {
            let (front, back, cut, client) =
                (front.clone(), back.clone(), cut.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    if !cut.load(Ordering::Relaxed) {
                        let _ = back.send(&buf[..n]).await;
                    }
                }
            });
        }
        {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = back.recv(&mut buf).await {
                    let to = *client.lock().unwrap();
                    if let (false, Some(to)) = (cut.load(Ordering::Relaxed), to) {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            });
        }
        Blackhole { addr, cut }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}
