//! The edge's forwarding decisions, free of I/O (in the spirit of
//! quinn-proto under quinn).
//!
//! Everything here is plain data whose methods take inputs (a join, a
//! relayed packet's tree, a directory update, the time) and return what to
//! send where (the local members' clients to hand a packet to, the subtrees
//! to send on, the announcements for each client). Nothing here holds a
//! socket, a lock or a task: the adapters around it (`session.rs` for client
//! connections, `relay.rs` for relay links, `forwarding.rs` and
//! `directory.rs` on [`crate::edge::EdgeCore`]) read, call it, and write. So
//! the decisions are unit-tested here without sockets.
//!
//! - [`channel`]: a channel as one edge sees it (local members, remote
//!   edges, track ownership), who receives a packet, and its directory
//!   reports.
//! - [`roster`]: what each member is told of a change, and large channels.
//! - [`remote`]: directory updates merged from several homes.
//! - [`home`]: a channel's directory as its home edge keeps it.
//! - [`trees`]: route trees from the route table, the checks a relayed
//!   packet's tree passes, the repair around dead hops and the copies
//!   around suspect ones.
//! - [`copies`]: the first of two copies of a packet is delivered, not the
//!   second.

pub mod channel;
pub mod copies;
pub mod home;
pub mod remote;
pub mod report_pace;
pub mod roster;
pub mod trees;
