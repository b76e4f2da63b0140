//! Late joiners: clients that arrive one after another through the run, from
//! every place in turn, and join the broadcast while its video already
//! flows. Each is timed from "token in hand" (the app calls
//! [`sdk::Client::connect`]) to its first media packet, and the time is
//! broken down into what the user waited for: the nearest-edge lookup, the
//! QUIC handshake (the SDK races the candidates and probes them after
//! connecting, so no probe is on the path), the join request, and the first
//! packet after the join. Nobody waits for anybody else: this is the
//! time to first media a user feels, unlike the traffic mix's start, where
//! sending begins only once everyone is in.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sdk::{Client, Event};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::record::Pct;
use super::traffic::{App, ClientSpec, LIVE};

/// A late joiner arrives this often (from each place in turn): a few dozen
/// in a minute's run, two or three connected at a time.
pub const LATE_JOIN_EVERY: Duration = Duration::from_secs(1);
/// A joiner that gets no media this long after its token gives up (and
/// counts as a failure, with the step it was stuck in).
const FIRST_MEDIA_LIMIT: Duration = Duration::from_secs(5);
/// A joiner stays this long after its first packet, then leaves: long enough
/// to be a real member, short enough that joiners do not pile up.
const STAY: Duration = Duration::from_secs(1);
/// The goal: first media within this many client-edge round trips
/// (handshake, join, and the packet) plus [`GOAL_SLACK`].
const GOAL_RTTS: u32 = 3;
const GOAL_SLACK: Duration = Duration::from_millis(100);

/// One joiner's time, step by step.
#[derive(Clone, Debug)]
struct Sample {
    who: String,
    edge: String,
    total: Duration,
    lookup: Duration,
    handshake: Duration,
    join: Duration,
    first_packet: Duration,
    edge_rtt: Duration,
}

impl Sample {
    fn goal(&self) -> Duration {
        self.edge_rtt * GOAL_RTTS + GOAL_SLACK
    }

    fn describe(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{} via {}: {:.0} ms = lookup {:.0} + handshake {:.0} + join {:.0} + first packet {:.0} (edge RTT {:.0}, goal {:.0})",
            self.who,
            self.edge,
            ms(self.total),
            ms(self.lookup),
            ms(self.handshake),
            ms(self.join),
            ms(self.first_packet),
            ms(self.edge_rtt),
            ms(self.goal()),
        )
    }
}

/// Time to first media of the late joiners (`first_media` in the report).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FirstMedia {
    /// Joiners that started (all of them are counted: failures too).
    pub joiners: u64,
    /// Joiners that got no media, with the step they were stuck in.
    pub failures: Vec<String>,
    /// From token in hand to the first media packet.
    pub first_media_ms: Option<Pct>,
    pub lookup_ms: Option<Pct>,
    pub handshake_ms: Option<Pct>,
    pub join_ms: Option<Pct>,
    /// From the join's answer to the first media packet.
    pub first_packet_ms: Option<Pct>,
    /// Each joiner's RTT to its edge, as QUIC estimated it at connect.
    pub edge_rtt_ms: Option<Pct>,
    /// Joiners whose first media came within 3 of their own client-edge
    /// RTTs plus 100 ms.
    pub within_goal: u64,
    /// The slowest joins, step by step.
    pub slowest: Vec<String>,
}

impl FirstMedia {
    fn of(samples: &[Sample], failures: Vec<String>) -> FirstMedia {
        let pct = |f: fn(&Sample) -> Duration| {
            let mut ms: Vec<f64> = samples.iter().map(|s| f(s).as_secs_f64() * 1e3).collect();
            Pct::of(&mut ms)
        };
        let mut slow = samples.to_vec();
        slow.sort_by_key(|s| std::cmp::Reverse(s.total));
        FirstMedia {
            joiners: (samples.len() + failures.len()) as u64,
            failures,
            first_media_ms: pct(|s| s.total),
            lookup_ms: pct(|s| s.lookup),
            handshake_ms: pct(|s| s.handshake),
            join_ms: pct(|s| s.join),
            first_packet_ms: pct(|s| s.first_packet),
            edge_rtt_ms: pct(|s| s.edge_rtt),
            within_goal: samples.iter().filter(|s| s.total <= s.goal()).count() as u64,
            slowest: slow.iter().take(3).map(Sample::describe).collect(),
        }
    }
}

#[derive(Default)]
struct Results {
    samples: Vec<Sample>,
    failures: Vec<String>,
}

/// The first client spec of each place: where late joiners come from (the
/// same host's address, as a second device of someone there).
pub fn one_per_place(specs: &[ClientSpec]) -> Vec<ClientSpec> {
    let mut places: Vec<ClientSpec> = vec![];
    for s in specs {
        if !places.iter().any(|p| p.place == s.place) {
            places.push(s.clone());
        }
    }
    places
}

/// The joiners, arriving in the background until [`LateJoiners::finish`].
pub struct LateJoiners {
    results: Arc<Mutex<Results>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LateJoiners {
    /// Start a joiner every `every`, from `places` in turn (each a client
    /// spec whose config the joiner copies: its address, socket and
    /// controller), the first one `every` from now.
    pub fn start(places: Vec<ClientSpec>, app: App, every: Duration) -> LateJoiners {
        let results = Arc::new(Mutex::new(Results::default()));
        let (stop, mut stopped) = oneshot::channel();
        let r = results.clone();
        let task = tokio::spawn(async move {
            let mut joiners = JoinSet::new();
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            for n in 0.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let Some(place) = places.get(n % places.len().max(1)) else {
                    break;
                };
                let name = format!("late-{}-{n}", place.name);
                let token = app.token(LIVE, &name, false, true);
                let (config, r) = (place.config.clone(), r.clone());
                joiners.spawn(async move {
                    let outcome =
                        tokio::time::timeout(FIRST_MEDIA_LIMIT, join(config, &token, &name)).await;
                    let client = match outcome {
                        Ok(Ok((sample, client))) => {
                            r.lock().unwrap().samples.push(sample);
                            client
                        }
                        Ok(Err(e)) => {
                            return r.lock().unwrap().failures.push(format!("{name}: {e:#}"))
                        }
                        Err(_) => {
                            return r
                                .lock()
                                .unwrap()
                                .failures
                                .push(format!("{name}: no media within {FIRST_MEDIA_LIMIT:?}"))
                        }
                    };
                    tokio::time::sleep(STAY).await;
                    client.close().await;
                });
                while joiners.try_join_next().is_some() {}
            }
            // Those on their way get their time.
            while joiners.join_next().await.is_some() {}
        });
        LateJoiners {
            results,
            stop: Some(stop),
            task,
        }
    }

    /// Stop starting joiners, let those on their way finish, and summarise.
    pub async fn finish(mut self) -> FirstMedia {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        let r = std::mem::take(&mut *self.results.lock().unwrap());
        FirstMedia::of(&r.samples, r.failures)
    }
}

/// One joiner: connect, join the broadcast and wait for its first packet.
/// Dropping it half way (the time limit) disconnects the client.
async fn join(
    config: sdk::ClientConfig,
    token: &str,
    who: &str,
) -> anyhow::Result<(Sample, Client)> {
    let started = Instant::now();
    let client = Client::connect(config)
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let timing = client.connect_timing();
    let connected = Instant::now();
    let _channel = client
        .join(token, LIVE, true)
        .await
        .map_err(|e| anyhow::anyhow!("join: {e}"))?;
    let answered = Instant::now();
    let edge = client.edge().map_or("?".into(), |a| a.to_string());
    loop {
        match client.next_event().await {
            Some(Event::Media(m)) if m.channel.as_str() == LIVE => {
                let got = Instant::now();
                let sample = Sample {
                    who: who.to_string(),
                    edge,
                    total: got - started,
                    lookup: timing.lookup,
                    handshake: timing.handshake,
                    join: answered - connected,
                    first_packet: got - answered,
                    edge_rtt: timing.edge_rtt,
                };
                return Ok((sample, client));
            }
            Some(_) => {}
            None => anyhow::bail!("client closed before any media"),
        }
    }
}
