//! Hard limits of protocol version 1. Decoders check them before allocating;
//! senders check them before encoding. Changing one is a protocol change.

/// Largest protobuf frame on a control or relay stream (length prefix excluded).
/// Big enough for a chat message at [`MAX_MESSAGE_PAYLOAD`] plus its headers and a
/// directory update of a large channel.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Largest chat message payload. Chat and signalling are small; bigger blobs
/// belong in the app's own storage.
pub const MAX_MESSAGE_PAYLOAD: usize = 64 * 1024;

/// Largest media payload in one datagram. Chosen so that a media datagram plus
/// the largest relay header still fits the 1,452-byte QUIC datagram a
/// 1,500-byte Ethernet path carries over IPv4; relay links need that much.
pub const MAX_MEDIA_PAYLOAD: usize = 1_000;

/// Largest route tree in a relayed frame, in nodes. A channel spread over more
/// edges than this is split by the ingress into several trees.
pub const MAX_TREE_NODES: usize = 48;

/// Hop limit a relayed frame starts with. Overlay paths are short (RON: one
/// intermediate is usually enough); this only guards against bugs.
pub const INITIAL_HOP_LIMIT: u8 = 8;

/// Longest token accepted, in bytes of its text form.
pub const MAX_TOKEN_LEN: usize = 1_024;

/// Longest channel name, user id or app id, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Most channels one client session may join at once.
pub const MAX_CHANNELS_PER_SESSION: usize = 16;

/// Most tracks one client may publish in one channel.
pub const MAX_TRACKS_PER_CHANNEL: usize = 8;

/// Edges of `Join.member_edges` an edge uses (a hint: more are ignored).
/// A rejoining client's channel is rarely spread over more; beyond that
/// the channel's directory homes tell the rest as usual.
pub const MAX_MEMBER_EDGES: usize = 32;

/// A channel with more member sessions than this is large
/// (docs/protocol.md, "Large channels"): its members that publish nothing
/// are counted (`MemberCount`), not announced one by one. An app with
/// 10,000 viewers wants its hosts listed and the audience counted, not
/// 10,000 `MemberJoined` events per viewer (Agora's live broadcasting
/// announces only hosts, for the same reason). 100 keeps every call and
/// meeting room a small channel.
pub const LARGE_CHANNEL_MEMBERS: usize = 100;

/// A large channel becomes small again at or below this many members. Half
/// the threshold, so a channel hovering around it does not switch modes
/// (and resend its member list) on every join and leave.
pub const SMALL_AGAIN_MEMBERS: usize = LARGE_CHANNEL_MEMBERS / 2;

/// A large channel's `MemberCount` is sent at most this often (when the
/// count changed): a count, not an event stream.
pub const MEMBER_COUNT_INTERVAL_MS: u64 = 1_000;
