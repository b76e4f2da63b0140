//! Frames from the edge: replies, member and track events, messages,
//! acknowledgements, goaway.

use super::*;

impl Supervisor {
    pub(super) fn frame(&mut self, f: SK, link: &Link) -> Option<End> {
        match f {
            SK::Joined(j) => self.joined(j),
            SK::Error(e) => return self.error(e),
            SK::TrackPublished(t) => self.track_published(t, link),
            SK::Subscribed(s) => match self.pending.remove(&s.request_id) {
                Some(Pending::Subscribe {
                    channel_id,
                    user,
                    reply,
                }) => {
                    if let Some(ch) = self.channels.get_mut(&channel_id) {
                        if user.is_empty() {
                            ch.sub_all = true;
                        } else {
                            ch.sub_users.insert(user);
                        }
                    }
                    let _ = reply.send(Ok(()));
                }
                Some(Pending::Resubscribe { .. }) | None => {}
                Some(other) => self.unexpected(s.request_id, other),
            },
            SK::Left(l) => match self.pending.remove(&l.request_id) {
                Some(Pending::Leave { reply }) => {
                    let _ = reply.send(Ok(()));
                }
                Some(Pending::Ignore) | None => {}
                Some(other) => self.unexpected(l.request_id, other),
            },
            SK::MemberJoined(m) => self.member_joined(m),
            SK::MemberCount(c) => {
                if let Some(ch) = self.channels.get_mut(&c.channel_id) {
                    ch.roster.set_count(&self.shared, c.members, c.large);
                }
            }
            SK::MemberLeft(m) => {
                if let Some(ch) = self.channels.get_mut(&m.channel_id) {
                    let hidden = m.reason() == pb::MemberLeftReason::Hidden;
                    ch.roster
                        .member_left(&self.shared, &m.user_id, m.session, hidden);
                }
            }
            SK::TrackAvailable(t) => {
                if let (Some(ch), Some(track)) = (self.channels.get_mut(&t.channel_id), &t.track) {
                    ch.roster.add_track(&self.shared, &t.user_id, track);
                }
            }
            SK::TrackUnavailable(t) => {
                if let Some(ch) = self.channels.get_mut(&t.channel_id) {
                    ch.roster.remove_track(&self.shared, t.track_key);
                }
            }
            SK::Message(m) => self.incoming_message(m),
            SK::MessageAck(a) => self.message_ack(a),
            SK::Goaway(g) => {
                bump(&self.shared.stats.goaways, 1);
                let after = Duration::from_millis(g.reconnect_after_ms as u64).min(MAX_GOAWAY_WAIT);
                // Spread the reconnects: wait after + U[0, after].
                let wait = after + after.mul_f64(rand::random::<f64>());
                info!(
                    reason = g.reason,
                    redirects = g.redirect.len(),
                    wait_ms = wait.as_millis() as u64,
                    "goaway from the edge"
                );
                self.redirects = g.redirect;
                let at = Instant::now() + wait;
                self.goaway_at = Some(self.goaway_at.map_or(at, |t| t.min(at)));
            }
            SK::KeepaliveAck(_) => {}
        }
        None
    }

    /// A reply whose request id names a different kind of request: the
    /// edge is confused. Put the request back so its own answer still finds
    /// it.
    pub(super) fn unexpected(&mut self, rid: u32, p: Pending) {
        debug!(rid, "reply does not match its request; ignored");
        self.pending.insert(rid, p);
    }

    pub(super) fn joined(&mut self, j: pb::Joined) {
        match self.pending.remove(&j.request_id) {
            Some(Pending::Join {
                token,
                channel,
                subscribe_all,
                e2ee,
                reply,
            }) => {
                if reply.is_closed() || self.channels.contains_key(&j.channel_id) {
                    // The caller gave up (or a duplicate): do not stay joined
                    // on its behalf.
                    let channel_id = j.channel_id;
                    if !self.channels.contains_key(&channel_id) {
                        self.request(
                            |rid| {
                                CK::Leave(pb::Leave {
                                    request_id: rid,
                                    channel_id,
                                })
                            },
                            Pending::Ignore,
                        );
                    }
                    let _ = reply.send(Err(SdkError::Refused {
                        code: ErrorCode::AlreadyJoined,
                        message: "channel already joined by this client".into(),
                    }));
                    return;
                }
                let permits = Arc::new(Semaphore::new(self.cfg.max_unacked));
                let roster = Roster::new(j.channel_id, &channel, &j.user_id);
                let mut ch = ChannelState {
                    name: channel,
                    token,
                    sub_all: subscribe_all,
                    sub_users: BTreeSet::new(),
                    tracks: vec![],
                    window: ReplayWindow::new(self.cfg.replay_window),
                    permits: permits.clone(),
                    live: true,
                    publish_refused: false,
                    roster,
                    e2ee: e2ee.map(|k| Arc::new(KeyRing::new(j.channel_id, &j.user_id, k))),
                    msg_base: crate::e2ee::random_base(),
                };
                if let Some(ring) = &ch.e2ee {
                    self.shared.set_e2ee(j.channel_id, Some(ring.clone()));
                }
                ch.roster.adopt(&self.shared, &j);
                let census = ch.roster.census();
                self.channels.insert(j.channel_id, ch);
                self.left_last = false;
                let info = JoinInfo {
                    channel_id: j.channel_id,
                    user: j.user_id,
                    census,
                    permits,
                    e2ee: self
                        .channels
                        .get(&j.channel_id)
                        .and_then(|c| c.e2ee.clone()),
                };
                if reply.send(Ok(info)).is_err() {
                    self.remove_channel(j.channel_id, || Binding::Closed);
                    let channel_id = j.channel_id;
                    self.request(
                        |rid| {
                            CK::Leave(pb::Leave {
                                request_id: rid,
                                channel_id,
                            })
                        },
                        Pending::Ignore,
                    );
                }
            }
            Some(Pending::Rejoin { channel_id }) => self.rejoined(channel_id, j),
            Some(other) => self.unexpected(j.request_id, other),
            None => debug!(rid = j.request_id, "Joined for no request; ignored"),
        }
    }

    pub(super) fn rejoined(&mut self, channel_id: u64, j: pb::Joined) {
        if j.channel_id != channel_id {
            self.lose_channel(
                channel_id,
                SdkError::Protocol(format!(
                    "rejoin answered for channel {:016x}, not {channel_id:016x}",
                    j.channel_id
                )),
            );
            self.restored_one();
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            // Left while the rejoin was in flight.
            self.request(
                |rid| {
                    CK::Leave(pb::Leave {
                        request_id: rid,
                        channel_id,
                    })
                },
                Pending::Ignore,
            );
            self.restored_one();
            return;
        };
        if let Some(ring) = &ch.e2ee {
            ring.set_me(&j.user_id);
        }
        ch.roster.me.clone_from(&j.user_id);
        ch.roster.adopt(&self.shared, &j);
        ch.live = true;
        let tracks = ch.tracks.clone();
        let users: Vec<String> = if ch.sub_all {
            vec![]
        } else {
            ch.sub_users.iter().cloned().collect()
        };
        let replay: Vec<pb::ChatMessage> = ch
            .window
            .replay()
            .map(|s| chat(channel_id, s, ""))
            .collect();
        for slot in tracks {
            let pending = Pending::Republish {
                channel_id,
                slot: slot.clone(),
            };
            self.request_publish(channel_id, &slot, pending);
        }
        for user in users {
            let user_id = user.clone();
            self.request(
                |rid| {
                    CK::Subscribe(pb::Subscribe {
                        request_id: rid,
                        channel_id,
                        user_id,
                    })
                },
                Pending::Resubscribe { channel_id, user },
            );
        }
        bump(&self.shared.stats.messages_replayed, replay.len() as u64);
        for m in replay {
            self.outstanding.push_back((channel_id, m.seq));
            self.queue(CK::Message(m));
        }
        self.restored_one();
    }

    pub(super) fn track_published(&mut self, t: pb::TrackPublished, link: &Link) {
        let (channel_id, slot, reply) = match self.pending.remove(&t.request_id) {
            Some(Pending::Publish {
                channel_id,
                slot,
                reply,
            }) => (channel_id, slot, Some(reply)),
            Some(Pending::Republish { channel_id, slot }) => (channel_id, slot, None),
            Some(other) => return self.unexpected(t.request_id, other),
            None => return,
        };
        let wanted = !slot.is_closed()
            && reply.as_ref().is_none_or(|r| !r.is_closed())
            && self.channels.get(&channel_id).is_some_and(|ch| {
                // A republished track must still be one of the channel's.
                reply.is_some() || ch.tracks.iter().any(|s| Arc::ptr_eq(s, &slot))
            });
        if !wanted {
            let track_key = t.track_key;
            self.fire(|rid| {
                CK::UnpublishTrack(pb::UnpublishTrack {
                    request_id: rid,
                    channel_id,
                    track_key,
                })
            });
            return;
        }
        slot.rebind(link.conn.clone(), t.track_key);
        if let Some(reply) = reply {
            if let Some(ch) = self.channels.get_mut(&channel_id) {
                ch.tracks.push(slot.clone());
            }
            if reply.send(Ok(())).is_err() {
                // The caller is gone: undo.
                self.command(Cmd::Unpublish { slot }, Some(link));
            }
        }
    }

    pub(super) fn error(&mut self, e: pb::Error) -> Option<End> {
        let err = SdkError::from_wire(e.code, e.message);
        if e.request_id == 0 {
            // Refusals of messages carry request id 0 and come in order.
            match self.outstanding.pop_front() {
                Some((channel_id, seq)) => self.message_refused(channel_id, seq, err),
                None => self.emit(Event::Error(err)),
            }
            return None;
        }
        match self.pending.remove(&e.request_id) {
            Some(Pending::Join { reply, .. }) => {
                let _ = reply.send(Err(err));
            }
            Some(Pending::Rejoin { channel_id }) => {
                if matches!(
                    err.code(),
                    Some(
                        ErrorCode::GoingAway
                            | ErrorCode::Overloaded
                            | ErrorCode::Internal
                            | ErrorCode::JoinTimeout
                    )
                ) {
                    // This edge cannot take us now; another may.
                    return Some(End::Lost(format!("the edge refused the rejoin: {err}")));
                }
                self.lose_channel(channel_id, err);
                self.restored_one();
            }
            Some(Pending::Publish { reply, .. }) | Some(Pending::Subscribe { reply, .. }) => {
                let _ = reply.send(Err(err));
            }
            Some(Pending::Republish { channel_id, slot }) => {
                if let Some(ch) = self.channels.get_mut(&channel_id) {
                    ch.tracks.retain(|s| !Arc::ptr_eq(s, &slot));
                }
                slot.set(Binding::Failed(err.clone()));
                warn!(track = %slot.name, error = %err, "track could not be republished");
                self.emit(Event::Error(err));
            }
            Some(Pending::Resubscribe { channel_id, user }) => {
                if err.is_permanent() {
                    if let Some(ch) = self.channels.get_mut(&channel_id) {
                        ch.sub_users.remove(&user);
                    }
                }
                self.emit(Event::Error(err));
            }
            // Not joined any more: left is left.
            Some(Pending::Leave { reply }) => {
                let _ = reply.send(Ok(()));
            }
            Some(Pending::Ignore) => {}
            None if self.fired.contains(&e.request_id) => {
                debug!(rid = e.request_id, error = %err, "refusal of an unpublish or unsubscribe")
            }
            None => self.emit(Event::Error(err)),
        }
        None
    }

    // ----- messages ---------------------------------------------------

    pub(super) fn message_ack(&mut self, a: pb::MessageAck) {
        if let Some(pos) = self
            .outstanding
            .iter()
            .position(|&(c, s)| c == a.channel_id && s == a.seq)
        {
            self.outstanding.drain(..=pos);
        }
        if let Some(ch) = self.channels.get_mut(&a.channel_id) {
            let newly = ch.window.ack(a.seq);
            if newly > 0 {
                ch.permits.add_permits(newly);
                bump(&self.shared.stats.messages_acked, newly as u64);
            }
        }
    }

    pub(super) fn message_refused(&mut self, channel_id: u64, seq: u64, error: SdkError) {
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            return;
        };
        if error == SdkError::NoPublishRight {
            ch.publish_refused = true;
        }
        let last_seq = ch.window.last_seq();
        if ch.window.refuse(seq) {
            if ch.window.last_seq() < last_seq {
                // The next message reuses a seq the edge saw sealed: seal
                // it in a new stream (fresh salt), so no nonce repeats.
                ch.msg_base = crate::e2ee::random_base();
            }
            ch.permits.add_permits(1);
            bump(&self.shared.stats.messages_refused, 1);
            let channel = ch.name.clone();
            self.emit(Event::MessageRefused {
                channel,
                seq,
                error,
            });
        } else {
            debug!(seq, %error, "a resent message was refused");
        }
    }

    pub(super) fn member_joined(&mut self, m: pb::MemberJoined) {
        let Some(ch) = self.channels.get_mut(&m.channel_id) else {
            return;
        };
        if !ch
            .roster
            .member_joined(&self.shared, &m.user_id, m.session, m.edge_id)
        {
            return;
        }
        // A new session of another user (first seen, or reconnected, maybe
        // through another edge): it may have missed messages in flight, so
        // resend the window to it alone. (A channel being restored replays
        // to everyone anyway.)
        if m.user_id == ch.roster.me || !ch.live || ch.window.is_empty() {
            return;
        }
        let replay: Vec<pb::ChatMessage> = ch
            .window
            .replay()
            .map(|s| chat(m.channel_id, s, &m.user_id))
            .collect();
        bump(&self.shared.stats.messages_replayed, replay.len() as u64);
        for msg in replay {
            self.outstanding.push_back((m.channel_id, msg.seq));
            self.queue(CK::Message(msg));
        }
    }

    pub(super) fn incoming_message(&mut self, m: pb::ChatMessage) {
        let Some(ch) = self.channels.get(&m.channel_id) else {
            return;
        };
        let channel = ch.name.clone();
        let payload = match &ch.e2ee {
            None => Bytes::from(m.payload),
            Some(ring) => match ring.open_message(&m.from_user, m.seq, m.sent_at_us, &m.payload) {
                Ok(p) => {
                    ring.note_success(&m.from_user);
                    p
                }
                Err(error) => {
                    // Dropped before the reorder buffer: garbage never takes
                    // a sequence number (a replay may still fill it).
                    bump(&self.shared.stats.messages_undecryptable, 1);
                    if ring.note_failure(&m.from_user, error) {
                        warn!(%channel, from = %m.from_user, %error, "a message did not open");
                        self.emit(Event::Undecryptable {
                            channel,
                            user: m.from_user,
                            error,
                        });
                    }
                    return;
                }
            },
        };
        // A sender replays its window to a member it hears of (`to_user`
        // set): that replay opens the sequence. A hidden member of a large
        // channel is not heard of, so nothing will come to wait for.
        let hidden = ch.roster.is_large() && ch.tracks.is_empty();
        let opening = if !m.to_user.is_empty() || hidden {
            Opening::Opens
        } else {
            Opening::Live
        };
        let (max_held, timeout) = (self.cfg.max_held_per_sender, self.cfg.reorder_timeout);
        let buf = self
            .receivers
            .entry((m.channel_id, m.from_user.clone()))
            .or_insert_with(|| ReorderBuffer::new(max_held, timeout));
        let outcome = buf.offer(
            Incoming {
                seq: m.seq,
                payload,
                sent_at_us: m.sent_at_us,
            },
            opening,
            Instant::now(),
        );
        self.deliver(&channel, &m.from_user, outcome);
    }

    pub(super) fn poll_reorder(&mut self) {
        let now = Instant::now();
        let mut ready = vec![];
        for ((channel_id, from), buf) in self.receivers.iter_mut() {
            let o = buf.poll(now);
            if !o.deliver.is_empty() || o.skipped > 0 {
                ready.push((*channel_id, from.clone(), o));
            }
        }
        for (channel_id, from, o) in ready {
            if let Some(name) = self.channels.get(&channel_id).map(|c| c.name.clone()) {
                self.deliver(&name, &from, o);
            }
        }
    }

    pub(super) fn deliver(&self, channel: &str, from: &str, o: Outcome) {
        let st = &self.shared.stats;
        if o.duplicate {
            bump(&st.messages_duplicate, 1);
        }
        bump(&st.messages_skipped, o.skipped);
        for m in o.deliver {
            bump(&st.messages_delivered, 1);
            self.emit(Event::Message(Message {
                channel: channel.to_string(),
                from: from.to_string(),
                seq: m.seq,
                payload: m.payload,
                sent_at_us: m.sent_at_us,
            }));
        }
    }
}
