//! Admission control: whether a new QUIC connection gets handshake state,
//! a Retry, a refusal or silence, decided from its source address before
//! any TLS work; and the per-token and per-session rate limits applied
//! after it joins.
//!
//! Policy, in the order applied to each new connection (limits in
//! [`AdmissionSection`]):
//! 1. More handshakes in progress than `max_handshakes`: **ignore** the
//!    packet. Answering would cost as much as the attacker spends, and
//!    the cap bounds the memory a flood can pin.
//! 2. Source address not validated, and Retry is `always`, or `auto` with
//!    more than `retry_above_handshakes` in progress: send a **Retry**. It
//!    keeps no state; a spoofed source never sees it, so a spoofed flood
//!    ends here at the cost of one small packet each.
//! 3. The address is over `max_connections_per_ip` or its rate of
//!    `connections_per_ip_per_s`: a **Retry** if it is not validated yet
//!    (a spoofer could be using a victim's address: the victim passes the
//!    Retry and is judged by its own validated budget), else **refuse**
//!    with CONNECTION_REFUSED.
//!
//! Validated and unvalidated connections draw from separate per-IP
//! budgets for the same reason: spoofed packets carrying a victim's
//! address can only use up the unvalidated one.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{AdmissionSection, RetryMode};

/// What to do with a new connection attempt.
#[derive(Debug)]
pub enum Decision {
    /// Go on with the handshake; the guard holds the connection's slots.
    Accept(Admitted),
    /// Answer with a QUIC Retry (stateless address validation).
    Retry,
    /// Close at once with CONNECTION_REFUSED; the reason is for metrics.
    Refuse(&'static str),
    /// Drop the packet without an answer; the reason is for metrics.
    Ignore(&'static str),
}

/// The edge's admission state: handshakes in progress, connections per
/// address, and the rate limiters.
pub struct Admission {
    cfg: AdmissionSection,
    handshaking: AtomicUsize,
    open_per_ip: Mutex<HashMap<IpAddr, usize>>,
    validated_rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    unvalidated_rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    join_rate: Option<DefaultKeyedRateLimiter<u64>>,
    /// Keys tokens for `join_rate` by a keyed hash, so the limiter holds
    /// 8 bytes per token and collisions cannot be chosen from outside.
    token_hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("handshaking", &self.handshaking)
            .finish_non_exhaustive()
    }
}

/// A rate of `per_s` with a burst of `burst_factor` seconds' worth; `None`
/// for 0 (no limit).
fn quota(per_s: u64, burst_factor: u64) -> Option<Quota> {
    let rate = NonZeroU32::new(u32::try_from(per_s).unwrap_or(u32::MAX))?;
    let burst =
        NonZeroU32::new(u32::try_from(per_s.saturating_mul(burst_factor)).unwrap_or(u32::MAX))?;
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Admission {
    pub fn new(cfg: AdmissionSection) -> Arc<Admission> {
        let per_ip = || quota(cfg.connections_per_ip_per_s.into(), 2).map(RateLimiter::keyed);
        Arc::new(Admission {
            validated_rate: per_ip(),
            unvalidated_rate: per_ip(),
            join_rate: quota(cfg.joins_per_token_per_s.into(), 2).map(RateLimiter::keyed),
            handshaking: AtomicUsize::new(0),
            open_per_ip: Mutex::default(),
            token_hasher: Default::default(),
            cfg,
        })
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.handshake_timeout_ms)
    }

    pub fn handshakes_in_progress(&self) -> usize {
        self.handshaking.load(Ordering::Relaxed)
    }

    /// Decide on a connection attempt from `remote`; `validated` is QUIC's
    /// word that the client answered a Retry from this address.
    pub fn decide(self: &Arc<Self>, remote: SocketAddr, validated: bool) -> Decision {
        let ip = remote.ip().to_canonical();
        let handshaking = self.handshaking.load(Ordering::Relaxed);
        if handshaking >= self.cfg.max_handshakes {
            return Decision::Ignore("handshake_backlog");
        }
        let retry_first = match self.cfg.retry {
            RetryMode::Always => true,
            RetryMode::Auto => handshaking >= self.cfg.retry_above_handshakes,
            RetryMode::Never => false,
        };
        if !validated && retry_first {
            return Decision::Retry;
        }
        // Unvalidated senders over a limit get a Retry where it is allowed:
        // the real owner of the address passes it, a spoofer does not.
        let over = |reason| {
            if validated || self.cfg.retry == RetryMode::Never {
                Decision::Refuse(reason)
            } else {
                Decision::Retry
            }
        };
        let limiter = if validated {
            &self.validated_rate
        } else {
            &self.unvalidated_rate
        };
        let mut open = self.open_per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cfg.max_connections_per_ip {
            return over("ip_connections");
        }
        if limiter.as_ref().is_some_and(|l| l.check_key(&ip).is_err()) {
            return over("ip_rate");
        }
        *count += 1;
        self.handshaking.fetch_add(1, Ordering::Relaxed);
        Decision::Accept(Admitted {
            admission: self.clone(),
            ip,
            handshaking: true,
        })
    }

    /// Whether another join with this token is allowed now.
    pub fn allow_join(&self, token: &str) -> bool {
        let Some(limiter) = &self.join_rate else {
            return true;
        };
        limiter
            .check_key(&self.token_hasher.hash_one(token))
            .is_ok()
    }

    /// A limiter for one session's messages (`None`: unlimited).
    pub fn message_limiter(&self) -> Option<DefaultDirectRateLimiter> {
        quota(self.cfg.messages_per_session_per_s.into(), 2).map(RateLimiter::direct)
    }

    /// A limiter for one session's media bytes (`None`: unlimited).
    pub fn media_limiter(&self) -> Option<DefaultDirectRateLimiter> {
        quota(self.cfg.media_bytes_per_session_per_s, 2).map(RateLimiter::direct)
    }

    /// A session's budget of dropped datagrams (see [`DropBudget`]).
    pub fn drop_budget(&self) -> DropBudget {
        DropBudget {
            limiter: quota(self.cfg.dropped_datagrams_per_session_per_s.into(), 10)
                .map(RateLimiter::direct),
        }
    }

    /// Forget rate-limit state of keys not seen lately, so a flood from
    /// many addresses or tokens does not leave the maps large for good.
    pub fn prune(&self) {
        for l in [&self.validated_rate, &self.unvalidated_rate]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.join_rate {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Whether a media datagram of `len` bytes fits the session's budget.
pub fn media_allowed(limiter: &Option<DefaultDirectRateLimiter>, len: usize) -> bool {
    let Some(l) = limiter else { return true };
    match NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX)) {
        // A datagram larger than the whole burst can never pass.
        Some(n) => matches!(l.check_n(n), Ok(Ok(()))),
        None => true,
    }
}

/// How many of a session's datagrams the edge may throw away (malformed,
/// for a track it does not own, over its media rate) before it closes the
/// session: a few are normal (a track unpublished while packets were in
/// flight), a steady stream is a flood.
pub struct DropBudget {
    limiter: Option<DefaultDirectRateLimiter>,
}

impl DropBudget {
    /// Charge one dropped datagram; false once the budget is spent.
    pub fn spend(&mut self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }
}

/// A connection's admission slots: one of its address's connections, and
/// while the handshake runs, one of the handshakes in progress. Released
/// when dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
    handshaking: bool,
}

impl Admitted {
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.handshake_done();
        let mut open = self
            .admission
            .open_per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 5000))
    }

    fn cfg() -> AdmissionSection {
        AdmissionSection {
            retry: RetryMode::Auto,
            retry_above_handshakes: 4,
            max_handshakes: 8,
            connections_per_ip_per_s: 5,
            max_connections_per_ip: 6,
            ..AdmissionSection::default()
        }
    }

    fn kind(d: &Decision) -> String {
        match d {
            Decision::Accept(_) => "accept".into(),
            Decision::Retry => "retry".into(),
            Decision::Refuse(r) => format!("refuse:{r}"),
            Decision::Ignore(r) => format!("ignore:{r}"),
        }
    }

    #[test]
    fn handshake_flood_gets_retries_then_silence() {
        let a = Admission::new(cfg());
        let mut held = Vec::new();
        // Four handshakes from four addresses go ahead without a Retry...
        for i in 0..4 {
            match a.decide(addr(i), false) {
                Decision::Accept(g) => held.push(g),
                d => panic!("handshake {i}: {}", kind(&d)),
            }
        }
        // ...then unvalidated sources must validate first,
        assert_eq!(kind(&a.decide(addr(10), false)), "retry");
        // while validated ones still get in, up to the cap.
        for i in 0..4 {
            match a.decide(addr(20 + i), true) {
                Decision::Accept(g) => held.push(g),
                d => panic!("validated {i}: {}", kind(&d)),
            }
        }
        assert_eq!(a.handshakes_in_progress(), 8);
        assert_eq!(kind(&a.decide(addr(30), true)), "ignore:handshake_backlog");
        // Finished handshakes free their place.
        for g in &mut held {
            g.handshake_done();
        }
        assert_eq!(a.handshakes_in_progress(), 0);
        assert_eq!(kind(&a.decide(addr(30), false)), "accept");
    }

    #[test]
    fn one_address_is_limited_and_a_spoofer_cannot_spend_its_validated_budget() {
        let a = Admission::new(AdmissionSection {
            retry_above_handshakes: usize::MAX,
            max_handshakes: usize::MAX,
            ..cfg()
        });
        let mut accepted = 0;
        let mut retried = 0;
        // A spoofed flood with the victim's address: burst of 10, then Retry.
        for _ in 0..100 {
            match a.decide(addr(1), false) {
                Decision::Accept(mut g) => {
                    g.handshake_done();
                    accepted += 1;
                }
                Decision::Retry => retried += 1,
                d => panic!("{}", kind(&d)),
            }
        }
        assert_eq!((accepted, retried), (10, 90));
        // The victim, validated through the Retry, still gets in.
        assert_eq!(kind(&a.decide(addr(1), true)), "accept");
        // A validated address over its own budget is refused.
        let mut refused = 0;
        for _ in 0..100 {
            if let Decision::Refuse("ip_rate") = a.decide(addr(2), true) {
                refused += 1;
            }
        }
        assert_eq!(refused, 90);
    }

    #[test]
    fn open_connections_per_address_are_capped_and_released() {
        let a = Admission::new(AdmissionSection {
            connections_per_ip_per_s: 0,
            retry_above_handshakes: usize::MAX,
            max_handshakes: usize::MAX,
            ..cfg()
        });
        let held: Vec<_> = (0..6)
            .map(|_| match a.decide(addr(1), true) {
                Decision::Accept(g) => g,
                d => panic!("{}", kind(&d)),
            })
            .collect();
        assert_eq!(kind(&a.decide(addr(1), true)), "refuse:ip_connections");
        assert_eq!(kind(&a.decide(addr(1), false)), "retry");
        assert_eq!(kind(&a.decide(addr(2), true)), "accept");
        drop(held);
        assert_eq!(kind(&a.decide(addr(1), true)), "accept");
        assert!(a.open_per_ip.lock().unwrap().len() <= 1);
    }

    #[test]
    fn joins_per_token_and_session_rates_are_limited() {
        let a = Admission::new(AdmissionSection {
            joins_per_token_per_s: 2,
            messages_per_session_per_s: 10,
            media_bytes_per_session_per_s: 1_000,
            ..cfg()
        });
        let allowed = (0..20).filter(|_| a.allow_join("token-a")).count();
        assert_eq!(allowed, 4, "burst of twice the rate");
        assert!(a.allow_join("token-b"), "another token has its own budget");
        let m = a.message_limiter().unwrap();
        assert_eq!((0..100).filter(|_| m.check().is_ok()).count(), 20);
        let mut drops = Admission::new(AdmissionSection {
            dropped_datagrams_per_session_per_s: 10,
            ..cfg()
        })
        .drop_budget();
        assert_eq!(
            (0..500).filter(|_| drops.spend()).count(),
            100,
            "ten seconds' worth"
        );
        let media = a.media_limiter();
        assert!(media_allowed(&media, 1_500));
        assert!(!media_allowed(&media, 1_500), "2,000 bytes of burst spent");
        assert!(!media_allowed(&media, 5_000), "larger than the burst");
        let unlimited = Admission::new(AdmissionSection::unlimited());
        assert!((0..1000).all(|_| unlimited.allow_join("t")));
        assert!(unlimited.message_limiter().is_none());
        assert!((0..100_000).all(|_| unlimited.drop_budget().spend()));
        assert!(media_allowed(&unlimited.media_limiter(), 60_000));
    }
}
