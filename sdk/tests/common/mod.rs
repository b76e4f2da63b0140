//! Test harness: scripted fake edges (a QUIC server speaking the client
//! protocol exactly as the test says). Tests of the SDK against real edges
//! are system tests, in `edge-node/tests/sdk_*.rs`.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use control::certs::ClientCerts;
use edge_node::tls::DevPki;
use protocol::framing::{self, FrameBuffer};
use protocol::pb::{self, client_frame::Kind as CK, server_frame::Kind as SK};
use sdk::ClientConfig;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};

pub use testkit::mesh::init_logs;
pub use testkit::quic::STEP;

/// The kit's SDK config for `edges`, handing media out as it arrives: the
/// fake edge's media carries made-up timestamps, which a jitter buffer
/// would play out (or drop as late) by them.
pub fn config(pki: &DevPki, edges: &[std::net::SocketAddr]) -> sdk::ClientConfig {
    let mut cfg = testkit::mesh::sdk_config(pki, edges);
    cfg.playout = None;
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
        let names = ["localhost".to_string()];
        let clients = ClientCerts::new(pki.client_cert(&names).unwrap()).unwrap();
        let server = pki
            .material(&names)
            .unwrap()
            .server_config(clients)
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
        let reply = pb::Joined {
            channel_id,
            user_id: user.into(),
            members,
            ..Default::default()
        };
        self.answer_join(j, reply).await;
    }

    /// Answer a Join with `reply`, from edge 1 (its request id and channel
    /// are filled in).
    pub async fn answer_join(&self, j: &pb::Join, reply: pb::Joined) {
        self.send(SK::Joined(pb::Joined {
            request_id: j.request_id,
            channel: j.channel.clone(),
            edge_id: 1,
            ..reply
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
        edge_id: 0,
    }
}
