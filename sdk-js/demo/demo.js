// The RTN demo page (served by `loadtest lab`, see docs/lab.md): a call
// through the edge network with @rtn/sdk. Camera and microphone are encoded
// with WebCodecs (VP8, Opus), sent as RTN media datagrams, decoded and shown
// for every other participant; a chat box; a panel with the edge in use,
// its round trip, the SDK's counters and reconnect events, and for every
// other participant their edge and the overlay path from this page's edge
// to theirs.
//
// Who is on which edge: each page announces its edge to the others with a
// chat message `{"rtnDemo":"presence","edge":<id>}` (after joining, after
// every reconnect and when somebody joins; the chat does not show these).
// The paths are the lab's: `GET /routes?edge=<id>`, every 2 s.
//
// The lab's web server plays "the app's own server": `GET /config` says
// which controller and channel, `GET /token?channel=&user=` mints a token.
//
// Media packets. One RTN media payload is at most `track.maxPayload` bytes
// (1,000; 975 with end-to-end encryption), so encoded frames are split into
// parts, each carrying this page's own 15-byte header:
//
//   offset  size  field
//   0       1     flags: bit 0 = keyframe (video; always set for audio)
//   1       4     frame id, big-endian, +1 per encoded frame of the track
//   5       1     part index, 0-based
//   6       1     part count (1..=255; a larger frame is dropped)
//   7       8     codec timestamp, µs, signed big-endian (the
//                 EncodedVideoChunk/EncodedAudioChunk timestamp)
//   15      ..    bytes [index*P, index*P + P) of the encoded frame,
//                 P = maxPayload - 15
//
// A receiver reassembles a frame when all its parts arrived and feeds it to
// its decoder; incomplete frames are dropped when newer ones complete. A
// video decoder that missed a frame waits for the next keyframe (one every
// 2 s, and one whenever somebody joins).
//
// URL parameters (for tests, and for links): name=, channel=, autojoin=1,
// media=0 (no camera/microphone), e2ee=<key id>:<64 hex digits>,
// edges=lab (dial the lab's edges from `GET /lab/state`, with their
// certificate digests, instead of asking the controller: needs the lab's
// --lab-control; for when the controller does not allow this origin), with
// edges=lab also edge=<id> (that edge only: pages on different edges).
// `window.rtnDemo` exposes counters, events and the client, and `edges`
// (user -> edge id, as announced) and `paths` (user -> edge ids from this
// page's edge to theirs); `window.rtnSdk` is the SDK module.

/* global window, document, navigator, location, fetch, performance, setInterval, clearInterval, setTimeout, clearTimeout,
   console, TextDecoder, URLSearchParams, VideoEncoder, VideoDecoder, VideoFrame, AudioEncoder, AudioDecoder,
   AudioData, EncodedVideoChunk, EncodedAudioChunk, AudioContext, MediaStreamTrackProcessor */

const HEADER_LEN = 15;
const VIDEO_W = 320;
const VIDEO_H = 240;
const VIDEO_FPS = 15;
const KEYFRAME_EVERY = 2 * VIDEO_FPS;
const PENDING_FRAMES = 16;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const demo = {
  counters: { framesEncoded: 0, framesDecoded: {}, audioEncoded: 0, audioDecoded: 0, packetsSent: 0, packetsReceived: 0 },
  /** Every SDK event but media: {type, at (performance.now()), ...}. */
  events: [],
  /** performance.now() marks: config, token, connected, joined, firstMedia. */
  marks: {},
  /** Errors seen (strings). */
  errors: [],
  client: undefined,
  room: undefined,
  ready: false,
  /** Other participants' edges, as they announced them: user -> edge id. */
  edges: {},
  /** The overlay path from this page's edge to each other participant's:
   * user -> [edge ids] (`[mine]` on the same edge). */
  paths: {},
};
window.rtnDemo = demo;

function notice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = false;
}

function logEvent(text, bad = false) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (bad) li.className = 'bad';
  const list = $('events');
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

function fail(what, e) {
  const text = `${what}: ${e && e.code ? `${e.code}: ` : ''}${e && e.message ? e.message : e}`;
  demo.errors.push(text);
  logEvent(text, true);
  console.error(text, e);
}

// ---- the SDK -------------------------------------------------------------

let sdk;
try {
  sdk = await import('/sdk/rtn.js');
  window.rtnSdk = sdk;
} catch (e) {
  notice('The SDK bundle (/sdk/rtn.js) did not load. Build it once: cd sdk-js && npm ci && npm run build\n' +
    `(${e && e.message ? e.message : e})`);
  throw e;
}
const { Client, ChannelKey } = sdk;

const missing = ['WebTransport', 'VideoEncoder', 'VideoDecoder', 'AudioEncoder', 'AudioDecoder'].filter((n) => !(n in window));
if (!('WebTransport' in window)) {
  notice('This browser has no WebTransport: use a Chromium-based browser or Firefox, on https:// or http://localhost.');
} else if (missing.length) {
  notice(`No ${missing.join(', ')} in this browser: chat works, camera and microphone do not.`);
}

// ---- packets -------------------------------------------------------------

/** Split one encoded frame into packets for `track`. */
function packetize(data, frameId, key, timestampUs, maxPayload) {
  const room = maxPayload - HEADER_LEN;
  const count = Math.max(1, Math.ceil(data.length / room));
  if (count > 255) return [];
  const out = [];
  for (let i = 0; i < count; i++) {
    const part = data.subarray(i * room, Math.min(data.length, (i + 1) * room));
    const p = new Uint8Array(HEADER_LEN + part.length);
    const v = new DataView(p.buffer);
    p[0] = key ? 1 : 0;
    v.setUint32(1, frameId >>> 0);
    p[5] = i;
    p[6] = count;
    v.setBigInt64(7, BigInt(Math.round(timestampUs)));
    p.set(part, HEADER_LEN);
    out.push(p);
  }
  return out;
}

/** Reassembles frames of one (user, track). */
class Assembler {
  constructor() {
    this.pending = new Map();
  }

  /** A complete frame {id, key, timestamp, data}, or undefined. */
  push(payload) {
    if (payload.length < HEADER_LEN) return undefined;
    const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const id = v.getUint32(1);
    const index = payload[5];
    const count = payload[6];
    if (count === 0 || index >= count) return undefined;
    let f = this.pending.get(id);
    if (!f) {
      f = { id, key: (payload[0] & 1) === 1, timestamp: Number(v.getBigInt64(7)), count, parts: new Array(count), got: 0 };
      this.pending.set(id, f);
      if (this.pending.size > PENDING_FRAMES) this.pending.delete(this.pending.keys().next().value);
    }
    if (f.count !== count || f.parts[index]) return undefined;
    f.parts[index] = payload.subarray(HEADER_LEN);
    f.got++;
    if (f.got < f.count) return undefined;
    this.pending.delete(id);
    // Older incomplete frames will not be decoded any more.
    for (const old of this.pending.keys()) if (((id - old) | 0) > 0) this.pending.delete(old);
    const len = f.parts.reduce((n, p) => n + p.length, 0);
    const data = new Uint8Array(len);
    let at = 0;
    for (const p of f.parts) {
      data.set(p, at);
      at += p.length;
    }
    return { id, key: f.key, timestamp: f.timestamp, data };
  }
}

// ---- sending -------------------------------------------------------------

const local = { stream: undefined, videoEncoder: undefined, audioEncoder: undefined, timers: [], forceKey: true, frameNo: 0, reader: undefined, audioNode: undefined };
let audioCtx;

async function sendFrame(track, state, chunk, key) {
  const data = new Uint8Array(chunk.byteLength);
  chunk.copyTo(data);
  const id = state.frameId++;
  for (const p of packetize(data, id, key, chunk.timestamp, track.maxPayload)) {
    try {
      await track.send(p);
      demo.counters.packetsSent++;
    } catch (e) {
      // NOT_CONNECTED while reconnecting: real-time media is dropped.
      if (e.code !== 'NOT_CONNECTED') fail('media send', e);
      return;
    }
  }
}

async function startMedia(room) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: VIDEO_W, height: VIDEO_H, frameRate: VIDEO_FPS },
    audio: { channelCount: 1, echoCancellation: true },
  });
  local.stream = stream;
  const video = $('local');
  video.srcObject = stream;
  await video.play().catch(() => {});

  const [cam, mic] = await Promise.all([room.publishTrack('cam', 'video'), room.publishTrack('mic', 'audio')]);

  // Video: the camera drawn on a canvas 15 times a second, VP8.
  const camState = { frameId: 0 };
  const venc = new VideoEncoder({
    output: (chunk) => {
      demo.counters.framesEncoded++;
      void sendFrame(cam, camState, chunk, chunk.type === 'key');
    },
    error: (e) => fail('video encoder', e),
  });
  venc.configure({ codec: 'vp8', width: VIDEO_W, height: VIDEO_H, bitrate: 250_000, framerate: VIDEO_FPS, latencyMode: 'realtime' });
  local.videoEncoder = venc;
  const canvas = document.createElement('canvas');
  canvas.width = VIDEO_W;
  canvas.height = VIDEO_H;
  const ctx = canvas.getContext('2d');
  local.timers.push(setInterval(() => {
    if (venc.state !== 'configured' || video.readyState < 2 || venc.encodeQueueSize > 2) return;
    ctx.drawImage(video, 0, 0, VIDEO_W, VIDEO_H);
    const frame = new VideoFrame(canvas, { timestamp: Math.round(performance.now() * 1000) });
    const keyFrame = local.forceKey || local.frameNo % KEYFRAME_EVERY === 0;
    local.forceKey = false;
    local.frameNo++;
    try {
      venc.encode(frame, { keyFrame });
    } finally {
      frame.close();
    }
  }, 1000 / VIDEO_FPS));

  // Audio: Opus, 20 ms frames.
  const micState = { frameId: 0 };
  const aenc = new AudioEncoder({
    output: (chunk) => {
      demo.counters.audioEncoded++;
      void sendFrame(mic, micState, chunk, true);
    },
    error: (e) => fail('audio encoder', e),
  });
  local.audioEncoder = aenc;
  const encodeAudio = (data) => {
    if (aenc.state === 'unconfigured') {
      aenc.configure({ codec: 'opus', sampleRate: data.sampleRate, numberOfChannels: data.numberOfChannels, bitrate: 32_000 });
    }
    if (aenc.state === 'configured') aenc.encode(data);
    data.close();
  };
  const track = stream.getAudioTracks()[0];
  if (track && 'MediaStreamTrackProcessor' in window) {
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    local.reader = reader;
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        encodeAudio(value);
      }
    })().catch((e) => fail('microphone', e));
  } else if (track) {
    // Without MediaStreamTrackProcessor: PCM from a ScriptProcessorNode.
    const src = audioCtx.createMediaStreamSource(stream);
    const node = audioCtx.createScriptProcessor(2048, 1, 1);
    const mute = audioCtx.createGain();
    mute.gain.value = 0;
    node.onaudioprocess = (ev) => {
      const pcm = ev.inputBuffer.getChannelData(0);
      encodeAudio(new AudioData({
        format: 'f32-planar', sampleRate: audioCtx.sampleRate, numberOfFrames: pcm.length, numberOfChannels: 1,
        timestamp: Math.round(ev.playbackTime * 1e6), data: new Float32Array(pcm),
      }));
    };
    src.connect(node).connect(mute).connect(audioCtx.destination);
    local.audioNode = node;
  }
}

function stopMedia() {
  for (const t of local.timers) clearInterval(t);
  local.timers = [];
  for (const enc of [local.videoEncoder, local.audioEncoder]) {
    if (enc && enc.state !== 'closed') enc.close();
  }
  if (local.reader) void local.reader.cancel().catch(() => {});
  if (local.audioNode) local.audioNode.disconnect();
  if (local.stream) for (const t of local.stream.getTracks()) t.stop();
  Object.assign(local, { stream: undefined, videoEncoder: undefined, audioEncoder: undefined, reader: undefined, audioNode: undefined });
  $('local').srcObject = null;
}

// ---- receiving -----------------------------------------------------------

const peers = new Map();

function peer(user) {
  let p = peers.get(user);
  if (p) return p;
  const fig = document.createElement('figure');
  fig.className = 'tile';
  const canvas = document.createElement('canvas');
  canvas.width = VIDEO_W;
  canvas.height = VIDEO_H;
  const cap = document.createElement('figcaption');
  cap.textContent = user;
  fig.append(canvas, cap);
  $('tiles').append(fig);
  p = { user, fig, canvas, ctx2d: canvas.getContext('2d'), video: new Assembler(), audio: new Assembler(), vdec: undefined, adec: undefined, needKey: true, lastId: -1, playhead: 0 };
  demo.counters.framesDecoded[user] = 0;
  peers.set(user, p);
  return p;
}

function dropPeer(user) {
  const p = peers.get(user);
  if (!p) return;
  for (const d of [p.vdec, p.adec]) if (d && d.state !== 'closed') d.close();
  p.fig.remove();
  peers.delete(user);
}

function onVideo(p, payload) {
  const f = p.video.push(payload);
  if (!f || !('VideoDecoder' in window)) return;
  if (!p.vdec || p.vdec.state === 'closed') {
    p.vdec = new VideoDecoder({
      output: (frame) => {
        p.ctx2d.drawImage(frame, 0, 0, p.canvas.width, p.canvas.height);
        frame.close();
        demo.counters.framesDecoded[p.user] = (demo.counters.framesDecoded[p.user] || 0) + 1;
      },
      error: (e) => {
        fail(`video decoder (${p.user})`, e);
        p.needKey = true;
      },
    });
    p.vdec.configure({ codec: 'vp8', optimizeForLatency: true });
    p.needKey = true;
  }
  // A delta frame after a missing one cannot be decoded: wait for a key.
  if (!f.key && (p.needKey || f.id !== ((p.lastId + 1) >>> 0))) {
    p.needKey = true;
    return;
  }
  p.needKey = false;
  p.lastId = f.id;
  p.vdec.decode(new EncodedVideoChunk({ type: f.key ? 'key' : 'delta', timestamp: f.timestamp, data: f.data }));
}

function onAudio(p, payload) {
  const f = p.audio.push(payload);
  if (!f || !('AudioDecoder' in window)) return;
  if (!p.adec || p.adec.state === 'closed') {
    p.adec = new AudioDecoder({
      output: (data) => {
        demo.counters.audioDecoded++;
        play(p, data);
      },
      error: (e) => fail(`audio decoder (${p.user})`, e),
    });
    p.adec.configure({ codec: 'opus', sampleRate: 48_000, numberOfChannels: 1 });
  }
  p.adec.decode(new EncodedAudioChunk({ type: 'key', timestamp: f.timestamp, data: f.data }));
}

/** Schedule decoded audio on the AudioContext, 60 ms behind real time. */
function play(p, data) {
  try {
    if (!audioCtx || audioCtx.state === 'closed') return;
    const n = data.numberOfFrames;
    const buf = audioCtx.createBuffer(1, n, data.sampleRate);
    const pcm = new Float32Array(n);
    data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
    buf.copyToChannel(pcm, 0);
    const src = audioCtx.createBufferSource();
    src.buffer = buf;
    src.connect(audioCtx.destination);
    const now = audioCtx.currentTime;
    if (p.playhead < now + 0.02 || p.playhead > now + 0.5) p.playhead = now + 0.06;
    src.start(p.playhead);
    p.playhead += buf.duration;
  } finally {
    data.close();
  }
}

// ---- the call ------------------------------------------------------------

let statsTimer;

function showStats() {
  const c = demo.client;
  if (!c) return;
  const e = c.edge();
  const s = c.getStats();
  $('edge').textContent = e ? `${e.id !== undefined ? `edge ${e.id} ` : ''}${e.addr}` : 'reconnecting...';
  $('rtt').textContent = s.rttMs !== undefined ? `${s.rttMs.toFixed(1)} ms (smoothed ${(s.smoothedRttMs ?? 0).toFixed(1)}, min ${(s.minRttMs ?? 0).toFixed(1)})` : '-';
  $('media-stats').textContent = `sent ${s.mediaSent}, received ${s.mediaReceived}, lost ${s.mediaLost}, late ${s.mediaLate}`;
  $('msg-stats').textContent = `sent ${s.messagesSent}, acked ${s.messagesAcked}, delivered ${s.messagesDelivered}, replayed ${s.messagesReplayed}`;
  $('reconnects').textContent = `${s.reconnects} (goaways ${s.goaways}, edge switches ${s.edgeSwitches})`;
  const k = demo.counters;
  const decoded = Object.entries(k.framesDecoded).map(([u, n]) => `${u} ${n}`).join(', ') || 'none';
  $('codec-stats').textContent = `video frames encoded ${k.framesEncoded}, decoded ${decoded}; audio encoded ${k.audioEncoded}, decoded ${k.audioDecoded}`;
}

// ---- who is on which edge, and the path there -------------------------------

/** Other participants (user ids), in the order they joined. */
const members = new Set();
let pathsTimer;
let announceTimer;
let refreshing = false;

/** This page's edge id, when the SDK knows it. */
function myEdge() {
  const e = demo.client && demo.client.edge();
  return e && e.id !== undefined ? e.id : undefined;
}

/** Tell the others which edge this page is on (soon, once for a burst). */
function announce() {
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    const edge = myEdge();
    if (!demo.room || edge === undefined) return;
    demo.room.sendMessage(JSON.stringify({ rtnDemo: 'presence', edge })).catch((e) => {
      if (demo.room) fail('presence', e);
    });
  }, 100);
}

/** A presence announcement's edge id, or undefined for a chat message. */
function presenceOf(text) {
  if (!text.startsWith('{')) return undefined;
  try {
    const m = JSON.parse(text);
    if (m && m.rtnDemo === 'presence') return Number.isInteger(m.edge) ? m.edge : null;
  } catch {
    // A chat message that looks like JSON.
  }
  return undefined;
}

async function refreshPaths() {
  const me = myEdge();
  if (refreshing || !demo.client) return;
  refreshing = true;
  try {
    let routes;
    let trouble;
    if (me !== undefined && Object.values(demo.edges).some((e) => e !== me)) {
      try {
        routes = await getJson(`/routes?edge=${me}`);
      } catch (e) {
        trouble = e.message;
      }
    }
    const city = (id) => (routes && routes.cities[id]) || `edge ${id}`;
    const lines = [];
    const paths = {};
    for (const user of members) {
      const edge = demo.edges[user];
      if (edge === undefined) {
        lines.push(`${user}: edge unknown`);
      } else if (edge === me) {
        paths[user] = [me];
        lines.push(`${user} (edge ${edge}): same edge`);
      } else {
        const path = routes && routes.paths[edge];
        if (path) {
          paths[user] = path;
          lines.push(`${user} (edge ${edge}): ${path.map(city).join(' -> ')} (${path.length - 1} hop${path.length === 2 ? '' : 's'})`);
        } else {
          lines.push(`${user} (edge ${edge}): ${trouble ? `no route table (${trouble})` : me === undefined ? 'this page\'s edge unknown' : 'no path'}`);
        }
      }
    }
    demo.paths = paths;
    $('paths').textContent = lines.join('\n') || 'nobody else here';
  } finally {
    refreshing = false;
  }
}

function addMessage(from, text, mine) {
  const li = document.createElement('li');
  if (mine) li.className = 'mine';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  li.append(who, document.createTextNode(text));
  const list = $('messages');
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function onEvent(e) {
  if (e.type === 'media') {
    demo.counters.packetsReceived++;
    if (demo.marks.firstMedia === undefined) demo.marks.firstMedia = performance.now();
    const p = peer(e.user);
    if (e.track === 'cam') onVideo(p, e.payload);
    else if (e.track === 'mic') onAudio(p, e.payload);
    return;
  }
  const rec = { ...e, at: performance.now() };
  if (e.error) rec.error = { code: e.error.code, message: e.error.message, e2ee: e.error.e2ee };
  if (e.type === 'message') rec.text = new TextDecoder().decode(e.payload);
  demo.events.push(rec);
  switch (e.type) {
    case 'message': {
      const edge = presenceOf(rec.text);
      if (edge === undefined) {
        addMessage(e.from, rec.text, false);
      } else if (edge !== null) {
        members.add(e.from);
        demo.edges[e.from] = edge;
        void refreshPaths();
      }
      break;
    }
    case 'member-joined':
      logEvent(`${e.user} joined`);
      members.add(e.user);
      local.forceKey = true;
      announce();
      break;
    case 'member-left':
      logEvent(e.hidden ? `${e.user} stopped publishing (large channel)` : `${e.user} left`);
      members.delete(e.user);
      delete demo.edges[e.user];
      delete demo.paths[e.user];
      dropPeer(e.user);
      break;
    case 'track-available':
      local.forceKey = true;
      break;
    case 'reconnecting':
      $('state').textContent = 'reconnecting';
      logEvent(`reconnecting: ${e.reason}`, true);
      break;
    case 'reconnected':
      $('state').textContent = 'connected';
      logEvent(`reconnected to ${e.edge}`);
      local.forceKey = true;
      for (const p of peers.values()) p.needKey = true;
      announce();
      void refreshPaths();
      break;
    case 'channel-lost':
      logEvent(`channel ${e.channel} lost: ${e.error.code}`, true);
      break;
    case 'message-refused':
      logEvent(`message ${e.seq} refused: ${e.error.code}`, true);
      break;
    case 'undecryptable':
      logEvent(`cannot decrypt ${e.user}: ${e.error.e2ee ?? e.error.code}`, true);
      break;
    case 'error':
      logEvent(`error: ${e.error.code}: ${e.error.message}`, true);
      break;
    case 'closed':
      $('state').textContent = 'closed';
      break;
  }
}

async function getJson(url) {
  const r = await fetch(url);
  const body = await r.text();
  if (!r.ok) throw new Error(`${url}: ${r.status} ${body}`);
  return JSON.parse(body);
}

async function join(name, channel, withMedia) {
  demo.marks.start = performance.now();
  const cfg = await getJson('/config');
  demo.config = cfg;
  demo.marks.config = performance.now();
  const tr = await fetch(`/token?channel=${encodeURIComponent(channel)}&user=${encodeURIComponent(name)}`);
  const token = await tr.text();
  if (!tr.ok) throw new Error(`token: ${tr.status} ${token}`);
  demo.marks.token = performance.now();
  $('state').textContent = 'connecting';
  let where = { controller: cfg.controller };
  if (params.get('edges') === 'lab') {
    const { edges } = await getJson('/lab/state');
    const only = params.get('edge');
    const alive = edges.filter((e) => e.alive && (only === null || String(e.id) === only)).map((e) => ({ addr: e.addr, server_name: 'localhost', cert_sha256: e.cert_sha256, id: e.id }));
    where = { edges: alive, probeCandidates: true };
  }
  const client = await Client.connect(where);
  demo.client = client;
  demo.marks.connected = performance.now();
  client.on('*', onEvent);
  const e2ee = params.get('e2ee');
  const room = await client.join(token, channel, { subscribeAll: true, e2ee: e2ee ? ChannelKey.parse(e2ee) : undefined });
  demo.room = room;
  demo.marks.joined = performance.now();
  $('state').textContent = 'connected';
  $('me-label').textContent = `${name} (me)`;
  logEvent(`joined ${channel} as ${name}`);
  statsTimer = setInterval(showStats, 500);
  showStats();
  announce();
  pathsTimer = setInterval(() => void refreshPaths(), 2000);
  void refreshPaths();
  $('chat-input').disabled = false;
  $('chat-send').disabled = false;
  if (withMedia) {
    try {
      await startMedia(room);
      demo.marks.media = performance.now();
    } catch (e) {
      fail('camera/microphone', e);
    }
  }
  demo.ready = true;
}

async function leave() {
  clearInterval(statsTimer);
  clearInterval(pathsTimer);
  clearTimeout(announceTimer);
  stopMedia();
  for (const u of [...peers.keys()]) dropPeer(u);
  const c = demo.client;
  demo.client = undefined;
  demo.room = undefined;
  demo.ready = false;
  if (c) await c.close();
  $('state').textContent = 'not connected';
  $('edge').textContent = '-';
  $('paths').textContent = '-';
  members.clear();
  demo.edges = {};
  demo.paths = {};
  $('join').disabled = false;
  $('leave').disabled = true;
  $('chat-input').disabled = true;
  $('chat-send').disabled = true;
}

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('name').value.trim();
  const channel = $('channel').value.trim();
  const withMedia = $('use-media').checked;
  if (!name || !channel) return;
  $('join').disabled = true;
  $('leave').disabled = false;
  // Created on the click: browsers let a page play sound after a gesture.
  if (!audioCtx && 'AudioContext' in window) audioCtx = new AudioContext({ latencyHint: 'interactive' });
  join(name, channel, withMedia).catch((e) => {
    fail('join', e);
    $('state').textContent = 'failed';
    void leave();
  });
});

$('leave').addEventListener('click', () => void leave());

$('chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('chat-input');
  const text = input.value;
  if (!text || !demo.room) return;
  input.value = '';
  demo.room.sendMessage(text).then(() => addMessage(params.get('name') || $('name').value, text, true), (e) => fail('send', e));
});

if (params.get('name')) $('name').value = params.get('name');
if (params.get('channel')) $('channel').value = params.get('channel');
if (params.get('media') === '0') $('use-media').checked = false;
if (params.get('autojoin') === '1') $('join').click();
