//! The traffic mix: SDK clients that find their nearest edge, join their
//! channels and talk — 1:1 calls across continents, group rooms, one
//! broadcast everybody watches, and chat in every channel.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sdk::{Client, ClientConfig, Event, SocketFactory, TrackKind};
use tokio::task::JoinSet;

use super::record::{Recorder, StreamId};

/// Audio: 40 ms packets (25/s) of 120 bytes, like Opus at 24 kbit/s.
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(40);
const AUDIO_BYTES: usize = 120;
/// The broadcast: 30 packets/s of 800 bytes (~190 kbit/s of low-rate video).
const VIDEO_INTERVAL: Duration = Duration::from_millis(33);
const VIDEO_BYTES: usize = 800;
/// Chat in calls and rooms every 500 ms, in the broadcast every second.
const CHAT_INTERVAL: Duration = Duration::from_millis(500);
/// Group rooms hold this many members at most.
const ROOM_SIZE: usize = 4;
/// A client starts talking in a channel once its SDK lists every other
/// member, as an app starts a call when the others are in: before that its
/// edge does not know every other member's edge, and what it sent would be
/// lost on the way to them for a reason that is not the network's (a join
/// takes a round trip through the channel's directory homes to reach the
/// other edges). It starts anyway after this long (a member that never
/// came), and the wait is in the report (`roster_wait_ms`).
const ROSTER_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// How one client reaches the network.
#[derive(Clone)]
pub struct ClientSpec {
    pub name: String,
    /// Where it is (region or city), to pair calls across continents.
    pub place: String,
    pub config: ClientConfig,
}

/// App credentials for tokens.
pub use testkit::tokens::App;

/// Who is in which channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The broadcaster publishes video in `live`; everyone else watches.
    pub broadcaster: usize,
    /// Each channel and its members (indices into the client list). Every
    /// member publishes audio and chats.
    pub rooms: Vec<(String, Vec<usize>)>,
}

/// Calls pair clients of different places (cross-continent first); the
/// rest share rooms of up to [`ROOM_SIZE`].
pub fn plan(places: &[String]) -> Plan {
    let n = places.len();
    let mut free: Vec<usize> = (0..n).collect();
    let mut rooms = Vec::new();
    // Half the clients (rounded down to pairs) are in 1:1 calls.
    let calls = n / 4;
    for c in 0..calls {
        if free.len() < 2 {
            break;
        }
        let a = free.remove(0);
        let far = free
            .iter()
            .position(|&b| places[b] != places[a])
            .unwrap_or(0);
        let b = free.remove(far);
        rooms.push((format!("call-{c}"), vec![a, b]));
    }
    // The rest round-robin into as few rooms as hold them.
    let n_rooms = free.len().div_ceil(ROOM_SIZE);
    for r in 0..n_rooms {
        let members: Vec<usize> = free.iter().skip(r).step_by(n_rooms).copied().collect();
        rooms.push((format!("room-{r}"), members));
    }
    Plan {
        broadcaster: 0,
        rooms,
    }
}

/// The running clients.
pub struct Traffic {
    pub clients: Vec<(ClientSpec, Arc<Client>)>,
    pub plan: Plan,
    /// Every client's name, by plan index.
    names: Vec<String>,
    /// Channels each client joined.
    joined: std::collections::HashMap<String, usize>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

pub const LIVE: &str = "live";

impl Traffic {
    /// Connect every client, join everybody to its channels, then start
    /// sending once all are in and listed (so that every message and every
    /// media packet has its full audience).
    pub async fn start(
        specs: Vec<ClientSpec>,
        app: &App,
        rec: Arc<Recorder>,
        connect_limit: Duration,
    ) -> anyhow::Result<Traffic> {
        let places: Vec<String> = specs.iter().map(|s| s.place.clone()).collect();
        let plan = plan(&places);
        let mut room_of = vec![None; specs.len()];
        let mut room_size = std::collections::HashMap::new();
        for (name, members) in &plan.rooms {
            room_size.insert(name.clone(), members.len());
            for &m in members {
                room_of[m] = Some(name.clone());
            }
        }
        // Connect and join in parallel: a client's join time runs from its
        // first attempt to its first media packet.
        let mut joining = JoinSet::new();
        for (i, spec) in specs.iter().enumerate() {
            let (spec, app, rec) = (spec.clone(), app.clone(), rec.clone());
            let room = room_of[i].clone();
            let broadcaster = i == plan.broadcaster;
            joining.spawn(async move {
                let started = Instant::now();
                let mut last = String::new();
                let client = loop {
                    match Client::connect(spec.config.clone()).await {
                        Ok(c) => break Some(c),
                        Err(e) => last = e.to_string(),
                    }
                    if started.elapsed() > connect_limit {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                };
                let Some(client) = client else {
                    rec.join_failed(&spec.name, last);
                    return (i, None);
                };
                let mut channels = vec![];
                for ch in [Some(LIVE.to_string()), room].into_iter().flatten() {
                    let publish = ch != LIVE || broadcaster;
                    match client
                        .join(&app.token(&ch, &spec.name, publish, true), &ch, true)
                        .await
                    {
                        Ok(c) => {
                            rec.member(&ch, &spec.name);
                            channels.push((c, Instant::now()));
                        }
                        Err(e) => rec.join_failed(&spec.name, format!("{ch}: {e}")),
                    }
                }
                (i, Some((client, channels, started)))
            });
        }
        let mut joined = vec![];
        while let Some(r) = joining.join_next().await {
            if let Ok((i, Some(c))) = r {
                joined.push((i, c));
            }
        }
        joined.sort_by_key(|(i, _)| *i);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let mut clients = vec![];
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let joined_count = joined
            .iter()
            .map(|(i, (_, channels, _))| (names[*i].clone(), channels.len()))
            .collect();
        for (i, (client, channels, started)) in joined {
            let client = Arc::new(client);
            let spec = specs[i].clone();
            // The listener: every event recorded; the first media packet of
            // each channel ends that channel's join.
            let mut waiting: Vec<(String, bool)> = channels
                .iter()
                .map(|(c, _)| {
                    // Nothing to receive: the broadcaster in `live`, a
                    // member alone in its room.
                    let expects = match c.name.as_str() {
                        LIVE => i != plan.broadcaster,
                        room => room_size.get(room).is_some_and(|n| *n > 1),
                    };
                    (c.name.as_str().to_string(), expects)
                })
                .collect();
            for _ in waiting.iter().filter(|(_, expects)| !expects) {
                rec.joined(None);
            }
            waiting.retain(|(_, e)| *e);
            tasks.spawn(listen(
                client.clone(),
                spec.name.clone(),
                rec.clone(),
                waiting,
                started,
            ));
            for (channel, _) in channels {
                let name = channel.name.as_str().to_string();
                let video = name == LIVE;
                let publishes = !video || i == plan.broadcaster;
                tasks.spawn(talk(
                    channel,
                    spec.name.clone(),
                    publishes,
                    video,
                    rec.clone(),
                    stop.clone(),
                ));
            }
            clients.push((spec, client));
        }
        Ok(Traffic {
            clients,
            plan,
            names,
            joined: joined_count,
            stop,
            tasks,
        })
    }

    /// Channels `name` should be in: the broadcast, and its call or room.
    pub fn channels_of(&self, name: &str) -> usize {
        let Some(i) = self.names.iter().position(|n| n == name) else {
            return 0;
        };
        1 + self
            .plan
            .rooms
            .iter()
            .filter(|(_, m)| m.contains(&i))
            .count()
    }

    pub fn joined_all(&self, name: &str) -> bool {
        self.joined.get(name).copied().unwrap_or(0) == self.channels_of(name)
    }

    /// (publisher, receiver) of every media stream, by client name.
    pub fn streams(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let b = self.plan.broadcaster;
        for (i, n) in self.names.iter().enumerate() {
            if i != b {
                out.push((self.names[b].clone(), n.clone()));
            }
        }
        for (_, members) in &self.plan.rooms {
            for &a in members {
                for &r in members {
                    if a != r {
                        out.push((self.names[a].clone(), self.names[r].clone()));
                    }
                }
            }
        }
        out
    }

    /// Stop sending, give in-flight traffic `grace` to land, and close.
    /// Every client's played tracks so far.
    pub fn playout_stats(&self) -> Vec<sdk::TrackPlayout> {
        self.clients
            .iter()
            .flat_map(|(_, c)| c.playout_stats())
            .collect()
    }

    /// Media and repair sent so far by the lab's edges and clients.
    pub fn repair_counters(&self) -> super::quality::RepairCounters {
        let mut c = super::quality::RepairCounters::of_edges(&testkit::scrape::edge_metrics());
        for (_, client) in &self.clients {
            c.add_client(&client.stats().snapshot());
        }
        c
    }

    /// Stop sending, and give what is on the way `grace` to land (and be
    /// played out).
    pub async fn quiesce(&self, grace: Duration) {
        self.stop.store(true, Ordering::Release);
        tokio::time::sleep(grace).await;
    }

    pub async fn stop(mut self, grace: Duration) {
        self.quiesce(grace).await;
        self.tasks.abort_all();
        for (_, c) in self.clients {
            if let Ok(c) = Arc::try_unwrap(c) {
                tokio::time::timeout(Duration::from_secs(2), c.close())
                    .await
                    .ok();
            }
        }
    }
}

async fn listen(
    client: Arc<Client>,
    me: String,
    rec: Arc<Recorder>,
    mut waiting: Vec<(String, bool)>,
    started: Instant,
) {
    while let Some(e) = client.next_event().await {
        match e {
            Event::Media(m) => {
                if let Some(at) = waiting.iter().position(|(c, _)| *c == m.channel) {
                    waiting.remove(at);
                    rec.joined(Some(started.elapsed()));
                }
                rec.media(&me, &m);
            }
            Event::Message(m) => rec.message(&me, &m),
            Event::MemberJoined { channel, user } => rec.member_listed(&me, &channel, &user),
            _ => {}
        }
    }
}

async fn talk(
    channel: sdk::Channel,
    me: String,
    publishes: bool,
    video: bool,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let (name, kind) = if video {
        ("cam", TrackKind::Video)
    } else {
        ("mic", TrackKind::Audio)
    };
    let stream = StreamId {
        channel: channel.name.as_str().to_string(),
        user: me.clone(),
        track: name.to_string(),
    };
    let track = if publishes {
        rec.publishing(&stream, video);
        channel.publish_track(name, kind).await.ok()
    } else {
        None
    };
    let (every, bytes) = if video {
        (VIDEO_INTERVAL, VIDEO_BYTES)
    } else {
        (AUDIO_INTERVAL, AUDIO_BYTES)
    };
    wait_for_roster(&channel, &me, &rec, &stop).await;
    let payload = vec![0x5au8; bytes];
    let chat_every = if video {
        CHAT_INTERVAL * 2
    } else {
        CHAT_INTERVAL
    };
    let mut media = tokio::time::interval(every);
    media.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut chat = tokio::time::interval(chat_every);
    chat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        tokio::select! {
            // Ticks for viewers too: it wakes the loop to see `stop`.
            _ = media.tick() => {
                if publishes {
                    // Between connections media is dropped, as a live call
                    // would; the recorder counts it apart from loss.
                    let accepted = match &track {
                        Some(t) => t.send(&payload).await.is_ok(),
                        None => false,
                    };
                    rec.media_sent(&stream, accepted);
                }
            }
            _ = chat.tick(), if publishes => {
                n += 1;
                if channel
                    .send_message(Bytes::from(format!("{me} #{n}")))
                    .await
                    .is_ok()
                {
                    rec.message_sent(channel.name.as_str(), &me);
                }
            }
        }
    }
    // Stopped sending, still in the call: the track stays published (and
    // the channel joined) until the lab ends the clients. Unpublishing now
    // would race the last packets (the edge reads the control stream and
    // the datagrams apart, and drops media of a track it no longer has):
    // measured, each stream's last packet lost, 0.13-0.15% of a 25 s run.
    let _keep = (track, channel);
    std::future::pending::<()>().await;
}

/// Until `me`'s SDK lists every other member of `channel` (at most
/// [`ROSTER_WAIT_LIMIT`]).
async fn wait_for_roster(channel: &sdk::Channel, me: &str, rec: &Recorder, stop: &AtomicBool) {
    let started = Instant::now();
    let name = channel.name.as_str();
    while started.elapsed() < ROSTER_WAIT_LIMIT && !stop.load(Ordering::Acquire) {
        let count = channel.is_large().then(|| channel.member_count());
        if rec.lists_everyone(me, name, count) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec.roster_waited(started.elapsed());
}

/// A client config that asks `controllers` (in turn) for its shortlist,
/// from `local_ip`, through `socket` (the lab's WAN emulation).
pub fn client_config(
    trust: &sdk::EdgeTrust,
    controllers: Vec<String>,
    local_ip: Option<IpAddr>,
    socket: Option<SocketFactory>,
) -> ClientConfig {
    let mut cfg = ClientConfig::new(vec![]).trusting(trust.clone());
    cfg.controllers = controllers;
    cfg.local_ip = local_ip;
    cfg.socket = socket;
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_pair_distant_clients_and_everyone_has_a_room() {
        let places: Vec<String> = ["eu", "eu", "us", "us", "ap", "ap", "eu", "us", "ap"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = plan(&places);
        let mut seen = vec![0; places.len()];
        for (name, members) in &p.rooms {
            if name.starts_with("call") {
                assert_eq!(members.len(), 2);
                assert_ne!(places[members[0]], places[members[1]], "{name}");
            }
            assert!(members.len() <= ROOM_SIZE);
            for &m in members {
                seen[m] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{seen:?}");
    }
}
