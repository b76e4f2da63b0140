//! The whole SDK flow: connect, join, publish audio, subscribe, chat, print
//! events. `cargo run -p sdk --example chat -- --help`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use sdk::{Client, ClientConfig, EdgeCandidate, Event, TrackKind};

#[derive(Parser)]
struct Args {
    /// Candidate edges (host:port), best first; repeat the flag.
    #[arg(long = "edge", required = true)]
    edges: Vec<SocketAddr>,
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// PEM file of the CA the edges' certificates chain to.
    #[arg(long)]
    ca: std::path::PathBuf,
    /// Join token from the app server (`edge-node token` for development).
    #[arg(long)]
    token: String,
    #[arg(long)]
    channel: String,
    /// Audio packets per second to publish (0 = none).
    #[arg(long, default_value_t = 50)]
    publish_media: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let edges = args
        .edges
        .iter()
        .map(|a| EdgeCandidate {
            addr: *a,
            server_name: args.server_name.clone(),
        })
        .collect();
    let client = Client::connect(ClientConfig::new(edges, std::fs::read(&args.ca)?)).await?;
    let room = client.join(&args.token, &args.channel, true).await?;
    println!(
        "joined {} as {} via {:?}",
        room.name,
        room.user,
        client.edge()
    );
    if args.publish_media > 0 {
        let mic = room.publish_track("mic", TrackKind::Audio).await?;
        let period = Duration::from_secs(1) / args.publish_media;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = mic.send(&[0u8; 160]).await;
            }
        });
    }
    let chat = room.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            n += 1;
            let _ = chat.send_message(Bytes::from(format!("line {n}"))).await;
        }
    });
    let mut media = 0u64;
    loop {
        tokio::select! {
            ev = client.next_event() => match ev {
                Some(Event::Media(_)) => {
                    media += 1;
                    if media.is_multiple_of(250) { println!("{media} media packets received"); }
                }
                Some(Event::Message(m)) => println!("{}: {}", m.from, String::from_utf8_lossy(&m.payload)),
                Some(other) => println!("{other:?}"),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
