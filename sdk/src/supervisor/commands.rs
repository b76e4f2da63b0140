//! The app's commands, with or without a link.

use super::*;

impl Supervisor {
    /// A command while there is no link. False when the client must stop.
    pub(super) fn offline(&mut self, cmd: Option<Cmd>) -> bool {
        match cmd {
            None => false,
            Some(Cmd::Close { reply }) => {
                let _ = reply.send(());
                false
            }
            Some(cmd) => {
                self.command(cmd, None);
                true
            }
        }
    }

    pub(super) fn command(&mut self, cmd: Cmd, link: Option<&Link>) {
        let online = link.is_some();
        match cmd {
            Cmd::Join {
                token,
                channel,
                subscribe_all,
                e2ee,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                if !online {
                    self.deferred.push_back(Cmd::Join {
                        token,
                        channel,
                        subscribe_all,
                        e2ee,
                        reply,
                    });
                    return;
                }
                let join = pb::Join {
                    request_id: 0,
                    token: token.clone(),
                    subscribe_all,
                    channel: channel.clone(),
                    // A first join: no member known yet.
                    member_edges: vec![],
                    unreachable_edge: 0,
                };
                self.request(
                    |rid| {
                        CK::Join(pb::Join {
                            request_id: rid,
                            ..join
                        })
                    },
                    Pending::Join {
                        token,
                        channel,
                        subscribe_all,
                        e2ee,
                        reply,
                    },
                );
            }
            Cmd::Leave { channel_id, reply } => {
                let was_live = self
                    .remove_channel(channel_id, || Binding::Closed)
                    .is_some_and(|ch| ch.live);
                if self.channels.is_empty() {
                    self.left_last = true;
                }
                if online && was_live {
                    self.request(
                        |rid| {
                            CK::Leave(pb::Leave {
                                request_id: rid,
                                channel_id,
                            })
                        },
                        Pending::Leave { reply },
                    );
                } else {
                    let _ = reply.send(Ok(()));
                }
            }
            Cmd::Publish {
                channel_id,
                slot,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                if !self.channels.contains_key(&channel_id) {
                    let _ = reply.send(Err(SdkError::Closed));
                    return;
                }
                if !online {
                    self.deferred.push_back(Cmd::Publish {
                        channel_id,
                        slot,
                        reply,
                    });
                    return;
                }
                let pending = Pending::Publish {
                    channel_id,
                    slot: slot.clone(),
                    reply,
                };
                self.request_publish(channel_id, &slot, pending);
            }
            Cmd::Unpublish { slot } => {
                let key = slot.key();
                slot.set(Binding::Closed);
                let channel_id = slot.channel_id;
                let live = match self.channels.get_mut(&channel_id) {
                    Some(ch) => {
                        ch.tracks.retain(|s| !Arc::ptr_eq(s, &slot));
                        ch.live
                    }
                    None => false,
                };
                if let (true, true, Some(track_key)) = (online, live, key) {
                    self.fire(|rid| {
                        CK::UnpublishTrack(pb::UnpublishTrack {
                            request_id: rid,
                            channel_id,
                            track_key,
                        })
                    });
                }
            }
            Cmd::Subscribe {
                channel_id,
                user,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                if !self.channels.contains_key(&channel_id) {
                    let _ = reply.send(Err(SdkError::Closed));
                    return;
                }
                if !online {
                    self.deferred.push_back(Cmd::Subscribe {
                        channel_id,
                        user,
                        reply,
                    });
                    return;
                }
                let user_id = user.clone();
                self.request(
                    |rid| {
                        CK::Subscribe(pb::Subscribe {
                            request_id: rid,
                            channel_id,
                            user_id,
                        })
                    },
                    Pending::Subscribe {
                        channel_id,
                        user,
                        reply,
                    },
                );
            }
            Cmd::Unsubscribe {
                channel_id,
                user,
                reply,
            } => {
                let Some(ch) = self.channels.get_mut(&channel_id) else {
                    let _ = reply.send(Err(SdkError::Closed));
                    return;
                };
                if user.is_empty() {
                    ch.sub_all = false;
                    ch.sub_users.clear();
                } else {
                    ch.sub_users.remove(&user);
                }
                if online {
                    self.fire(|rid| {
                        CK::Unsubscribe(pb::Unsubscribe {
                            request_id: rid,
                            channel_id,
                            user_id: user,
                        })
                    });
                }
                let _ = reply.send(Ok(()));
            }
            Cmd::Message {
                channel_id,
                payload,
                reply,
            } => {
                let Some(ch) = self.channels.get_mut(&channel_id) else {
                    let _ = reply.send(Err(SdkError::Closed));
                    return;
                };
                if ch.publish_refused {
                    ch.permits.add_permits(1);
                    let _ = reply.send(Err(SdkError::NoPublishRight));
                    return;
                }
                let at = now_us();
                let payload = match &ch.e2ee {
                    None => payload,
                    // Sealed once: replays resend these same bytes.
                    Some(ring) => {
                        match ring.seal_message(ch.window.last_seq() + 1, at, ch.msg_base, &payload)
                        {
                            Ok(sealed) => sealed,
                            Err(e) => {
                                ch.permits.add_permits(1);
                                let _ = reply.send(Err(e.into()));
                                return;
                            }
                        }
                    }
                };
                let sent = ch.window.push(payload, at);
                let live = ch.live;
                bump(&self.shared.stats.messages_sent, 1);
                if online && live {
                    // Otherwise it goes out with the replay after the rejoin.
                    self.queue(CK::Message(chat(channel_id, &sent, "")));
                    self.outstanding.push_back((channel_id, sent.seq));
                }
                let _ = reply.send(Ok(sent.seq));
            }
            Cmd::SetToken { channel_id, token } => {
                if let Some(ch) = self.channels.get_mut(&channel_id) {
                    ch.token = token;
                }
            }
            // Handled by the loops, which own the link.
            Cmd::Close { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Forget a channel; its publishers get `binding()`.
    pub(super) fn remove_channel(
        &mut self,
        id: u64,
        binding: impl Fn() -> Binding,
    ) -> Option<ChannelState> {
        let mut ch = self.channels.remove(&id)?;
        ch.roster.clear(&self.shared);
        self.shared.set_e2ee(id, None);
        ch.permits.close();
        for slot in &ch.tracks {
            slot.set(binding());
        }
        self.receivers.retain(|(c, _), _| *c != id);
        Some(ch)
    }

    pub(super) fn lose_channel(&mut self, id: u64, error: SdkError) {
        let e = error.clone();
        if let Some(ch) = self.remove_channel(id, move || Binding::Failed(e.clone())) {
            warn!(channel = %ch.name, %error, "channel could not be restored");
            self.emit(Event::ChannelLost {
                channel: ch.name,
                error,
            });
        }
        if self.channels.is_empty() {
            self.left_last = true;
        }
    }
}
