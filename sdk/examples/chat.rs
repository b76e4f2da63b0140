//! The whole SDK flow: connect to the first answering edge, join a channel,
//! publish an audio track, subscribe to everyone, send a chat line every
//! second and print what happens (members, tracks, media, messages,
//! failovers). Ctrl-C leaves cleanly.
//!
//! ```text
//! cargo run -p sdk --example chat -- --edge 127.0.0.1:4433 --edge 127.0.0.1:4434 \
//!     --server-name localhost --ca mesh-ca.pem --token "$TOKEN" --channel room
//! ```
//! (`edge-node token ...` mints a development token.)
//!
//! End-to-end encryption: give every participant the same channel key (in a
//! real app it comes from the app's server with the token), e.g.
//!
//! ```text
//! KEY="1:$(openssl rand -hex 32)"
//! cargo run -p sdk --example chat -- ... --e2ee-key "$KEY"
//! ```
//!
//! and the edges carry only ciphertext (docs/e2ee.md). A participant without
//! the key sees `Undecryptable` events instead of the other's lines.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use sdk::{ChannelKey, Client, ClientConfig, EdgeCandidate, Event, JoinOptions, TrackKind};

#[derive(Parser)]
#[command(about = "RTN SDK example: audio + chat in one channel")]
struct Args {
    /// Candidate edge (host:port), best first; repeat the flag for fallbacks.
    #[arg(long = "edge", required = true)]
    edges: Vec<String>,
    /// TLS server name of the edges' certificates.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// PEM file of a private CA the edges' client certificates chain to;
    /// default: the system's WebPKI roots.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Join token from the app server.
    #[arg(long, env = "RTN_TOKEN")]
    token: String,
    #[arg(long)]
    channel: String,
    /// Audio packets per second to publish (0 = publish nothing).
    #[arg(long, default_value_t = 50)]
    publish_media: u32,
    /// End-to-end encrypt media and messages with this channel key,
    /// `<id>:<64 hex digits>` (every participant needs the same one).
    #[arg(long, env = "RTN_E2EE_KEY", hide_env_values = true)]
    e2ee_key: Option<String>,
}

async fn resolve(edge: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(edge)
        .await
        .with_context(|| format!("resolving --edge {edge}"))?
        .next()
        .with_context(|| format!("--edge {edge} has no address"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut edges = vec![];
    for e in &args.edges {
        edges.push(EdgeCandidate::new(
            resolve(e).await?,
            args.server_name.clone(),
        ));
    }
    let trust = match &args.ca {
        Some(ca) => sdk::EdgeTrust::Ca(
            std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
        ),
        None => sdk::EdgeTrust::WebPki,
    };
    let e2ee = match &args.e2ee_key {
        Some(k) => Some(ChannelKey::parse(k).context("--e2ee-key")?.into()),
        None => None,
    };

    let client = Client::connect(ClientConfig::new(edges).trusting(trust)).await?;
    println!("connected to {:?}", client.edge());
    let room = client
        .join(
            &args.token,
            &args.channel,
            JoinOptions {
                subscribe_all: false,
                e2ee,
            },
        )
        .await?;
    println!(
        "joined {} as {}{}",
        room.name,
        room.user,
        match room.keys() {
            Some((_, Some(id))) => format!(", end-to-end encrypted with key {id}"),
            _ => String::new(),
        }
    );
    room.subscribe(None).await?;

    if args.publish_media > 0 {
        let mic = room.publish_track("mic", TrackKind::Audio).await?;
        let period = Duration::from_secs(1) / args.publish_media;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let frame = [0u8; 160]; // 20 ms of 64 kbit/s audio
            loop {
                tick.tick().await;
                // While reconnecting, media is dropped (it is real-time).
                let _ = mic.send(&frame).await;
            }
        });
    }

    let chat = room.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            // Waits only if 1,024 messages are unacknowledged; kept across
            // reconnects.
            if let Err(e) = chat.send_message(Bytes::from(format!("line {n}"))).await {
                eprintln!("message not sent: {e}");
                break;
            }
        }
    });

    let mut media = 0u64;
    loop {
        tokio::select! {
            ev = client.next_event() => match ev {
                Some(Event::Media(m)) => {
                    media += 1;
                    if media % 250 == 1 {
                        println!("media from {}/{}: seq {} ({media} packets so far)", m.user, m.track, m.sequence);
                    }
                }
                Some(Event::Message(m)) => {
                    println!("[{}] {} #{}: {}", m.channel, m.from, m.seq, String::from_utf8_lossy(&m.payload));
                }
                Some(Event::Reconnecting { reason }) => println!("reconnecting: {reason}"),
                Some(Event::Reconnected { edge }) => println!("reconnected via {edge}"),
                Some(Event::Undecryptable { channel, user, error }) => {
                    println!("[{channel}] cannot read what {user} sends: {error}")
                }
                Some(other) => println!("{other:?}"),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("{:#?}", client.stats().snapshot());
    client.close().await;
    Ok(())
}
