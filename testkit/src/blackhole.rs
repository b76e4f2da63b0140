//! A UDP blackhole: a relay in front of an edge that, once cut, drops every
//! packet both ways, the way a SIGKILLed process's machine vanishes (no
//! close, no reply).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;

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
