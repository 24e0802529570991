// In-page half of the browser test peer: runs one scenario with livekit-client (the UMD build,
// window.LivekitClient) and resolves with a plain JSON-able result. peer.mjs calls
// window.lkPeer.run(scenario, opts); see peer.mjs for the scenarios and the bench protocol.
import { DataPacket } from '@livekit/protocol';

const LK = window.LivekitClient;
const progress = (phase) => (window.lkProgress ? window.lkProgress(phase) : undefined);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const round1 = (x) => Math.round(x * 10) / 10;

// ---------------------------------------------------------------------------------------------
// Wire trace: counts every packet livekit-client sends and receives on its data channels, by
// DataPacket value case, and per stream-header topic the headers, how many were v2 single-packet
// (inline_content) and how many deflate-compressed. Tells v1 RPC packets (rpcRequest /
// rpcResponse) apart from v2 RPC streams (streamHeader on lk.rpc_request / lk.rpc_response).
// Installed before any data channel exists; enabled per run.

const wire = { enabled: false, sent: {}, recv: {}, sentTopics: {}, recvTopics: {}, undecoded: 0 };

function traceBytes(dir, data) {
  if (!wire.enabled) return;
  let bytes;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else return; // strings/blobs: livekit-client uses neither
  try {
    const pkt = DataPacket.fromBinary(bytes);
    const kind = pkt.value.case ?? 'none';
    const counts = dir === 'sent' ? wire.sent : wire.recv;
    counts[kind] = (counts[kind] ?? 0) + 1;
    if (kind === 'streamHeader') {
      const topics = dir === 'sent' ? wire.sentTopics : wire.recvTopics;
      const h = pkt.value.value;
      const e = (topics[h.topic] ??= { headers: 0, inline: 0, deflate: 0 });
      e.headers++;
      if (h.inlineContent !== undefined) e.inline++; // v2 single-packet stream
      if (h.compression === 1) e.deflate++; // DEFLATE_RAW
    }
  } catch {
    wire.undecoded += 1;
  }
}

{
  const origSend = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (data) {
    traceBytes('sent', data);
    return origSend.call(this, data);
  };
  const desc = Object.getOwnPropertyDescriptor(RTCDataChannel.prototype, 'onmessage');
  Object.defineProperty(RTCDataChannel.prototype, 'onmessage', {
    configurable: true,
    enumerable: desc.enumerable,
    get() {
      return desc.get.call(this);
    },
    set(fn) {
      const wrapped =
        typeof fn === 'function'
          ? function (ev) {
              traceBytes('recv', ev.data);
              return fn.call(this, ev);
            }
          : fn;
      desc.set.call(this, wrapped);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// ICE trace: keeps every RTCPeerConnection livekit-client makes, records the local candidates
// it gathers and, at the end, the selected candidate pair (out.ice).

const ice = { pcs: [] };

{
  const Orig = window.RTCPeerConnection;
  class TracedPC extends Orig {
    constructor(...args) {
      super(...args);
      const entry = { pc: this, gathered: [] };
      ice.pcs.push(entry);
      this.addEventListener('icecandidate', (ev) => {
        const c = ev.candidate;
        if (c && c.candidate) entry.gathered.push(`${c.protocol} ${c.address}:${c.port} ${c.type}`);
      });
    }
  }
  window.RTCPeerConnection = TracedPC;
}

async function iceReport() {
  const out = [];
  for (const e of ice.pcs) {
    const r = { state: e.pc.connectionState, gathered: e.gathered, selected: null };
    try {
      const stats = await e.pc.getStats();
      const byId = new Map();
      stats.forEach((v) => byId.set(v.id, v));
      for (const v of byId.values()) {
        if (v.type !== 'transport' || !v.selectedCandidatePairId) continue;
        const pair = byId.get(v.selectedCandidatePairId);
        const l = byId.get(pair?.localCandidateId);
        const rm = byId.get(pair?.remoteCandidateId);
        const fmt = (c) => (c ? `${c.protocol} ${c.address}:${c.port} ${c.candidateType}` : null);
        r.selected = { local: fmt(l), remote: fmt(rm) };
      }
    } catch (err) {
      r.error = String(err);
    }
    out.push(r);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers

class Deadline {
  constructor(atEpochMs) {
    this.at = atEpochMs;
  }
  left() {
    return this.at - Date.now();
  }
  // Polls check() every 10 ms until it returns a truthy value, which is returned.
  async until(what, check, maxMs = Infinity) {
    const stopAt = Math.min(this.at, Date.now() + maxMs);
    for (;;) {
      const v = check();
      if (v) return v;
      if (Date.now() >= stopAt) {
        const why = Date.now() >= this.at ? 'the scenario deadline' : `${maxMs} ms`;
        throw new Error(`timed out waiting for ${what} (${why})`);
      }
      await sleep(10);
    }
  }
  // Races a promise against the deadline.
  race(what, promise) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`timed out waiting for ${what} (the scenario deadline)`)),
        Math.max(0, this.left()),
      );
      promise.then(
        (v) => (clearTimeout(t), resolve(v)),
        (e) => (clearTimeout(t), reject(e)),
      );
    });
  }
}

function randomAscii(n) {
  const buf = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536)); // API cap
  let s = '';
  const CH = 4096;
  for (let i = 0; i < n; i += CH) {
    const part = buf.subarray(i, i + CH);
    s += String.fromCharCode(...part.map((b) => 0x21 + (b % 94))); // '!'..'~'
  }
  return s;
}

// Deterministic, incompressible bytes: xorshift32 from a seed (peer.mjs hashes the same ones).
function xorshiftBytes(n, seed) {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

function rpcErr(e) {
  if (e && typeof e.code === 'number') return { code: e.code, message: e.message, data: e.data ?? null };
  return { code: null, message: String(e?.message ?? e) };
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round1(sorted[i]);
}

function kindName(k) {
  return LK.ParticipantKind?.[k] ?? String(k);
}

function describeParticipant(p) {
  if (!p) return null;
  return {
    identity: p.identity,
    sid: p.sid,
    name: p.name,
    kind: p.kind,
    kind_name: kindName(p.kind),
    is_agent: p.isAgent,
    attributes: { ...p.attributes },
    client_protocol: p.clientProtocol,
    capabilities: p.capabilities ?? null,
    tracks: [...p.trackPublications.values()].map((t) => ({
      sid: t.trackSid,
      kind: t.kind,
      source: t.source,
      muted: t.isMuted,
      subscribed: t.isSubscribed,
    })),
  };
}

// Zero-crossing frequency (rising crossings, interpolated, DC removed) and RMS.
function analyse(x, rate) {
  let mean = 0;
  for (let i = 0; i < x.length; i++) mean += x[i];
  mean /= x.length || 1;
  let sq = 0;
  let first = -1;
  let last = -1;
  let count = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i] - mean;
    sq += v * v;
    if (i + 1 < x.length) {
      const a = v;
      const b = x[i + 1] - mean;
      if (a < 0 && b >= 0) {
        const exact = i + a / (a - b);
        if (first < 0) first = exact;
        last = exact;
        count++;
      }
    }
  }
  const rms = Math.sqrt(sq / (x.length || 1));
  const freq = count >= 2 ? ((count - 1) * rate) / (last - first) : 0;
  return { freq, rms };
}

const WORKLET = `
class Tap extends AudioWorkletProcessor {
  constructor() { super(); this.buf = new Float32Array(4800); this.n = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) {
        this.buf[this.n++] = ch[i];
        if (this.n === this.buf.length) { this.port.postMessage(this.buf.slice()); this.n = 0; }
      }
    }
    return true;
  }
}
registerProcessor('lk-tap', Tap);
`;

// ---------------------------------------------------------------------------------------------
// Scenarios. Each gets (ctx) with room, agent identity, options, deadline and the result object
// `res` it fills in as it goes (so a failure still reports what was seen). Each returns true on
// success or a string saying what failed.

const scenarios = {};

// Handlers that must exist before Room.connect().
const beforeConnect = {
  hello(ctx) {
    ctx.helloCalls = [];
    ctx.room.registerRpcMethod('frontend.hello', async (data) => {
      ctx.helloCalls.push({
        caller_identity: data.callerIdentity,
        payload: data.payload,
        request_id: data.requestId,
        response_timeout_ms: data.responseTimeout,
        at_ms: round1(now() - ctx.t0),
      });
      return `hello ${data.payload}`;
    });
  },
  chat(ctx) {
    ctx.streams = [];
    ctx.room.registerTextStreamHandler('lk.transcription', (reader, from) => {
      const entry = {
        from: from.identity,
        id: reader.info.id,
        topic: reader.info.topic,
        mime_type: reader.info.mimeType,
        size: reader.info.size ?? null,
        header_attributes: { ...(reader.info.attributes ?? {}) },
        attributes: null,
        text: null,
        error: null,
        done: false,
      };
      ctx.streams.push(entry);
      reader.readAll().then(
        (text) => {
          entry.text = text;
          entry.attributes = { ...(reader.info.attributes ?? {}) };
          entry.done = true;
        },
        (e) => {
          entry.error = String(e?.message ?? e);
          entry.done = true;
        },
      );
    });
  },
  bytes(ctx) {
    ctx.replies = [];
    ctx.room.registerTextStreamHandler('echo.bytes.sha256', async (reader, from) => {
      const entry = { from: from.identity, header_attributes: { ...(reader.info.attributes ?? {}) } };
      try {
        entry.text = await reader.readAll();
      } catch (e) {
        entry.error = String(e?.message ?? e);
      }
      entry.attributes = { ...(reader.info.attributes ?? {}) };
      ctx.replies.push(entry);
    });
  },
  throughput(ctx) {
    ctx.bench = {};
    if (ctx.o.direction === 'to-agent') {
      ctx.room.registerTextStreamHandler('bench.sink.done', async (reader, from) => {
        const text = await reader.readAll();
        ctx.bench.done = { from: from.identity, text, at: now() };
      });
    } else {
      ctx.room.registerByteStreamHandler('bench.source.data', async (reader, from) => {
        const b = ctx.bench;
        b.header_at = now();
        b.from = from.identity;
        b.name = reader.info.name;
        b.size = reader.info.size ?? null;
        b.received = 0;
        try {
          for await (const chunk of reader) b.received += chunk.byteLength;
        } catch (e) {
          b.error = String(e?.message ?? e);
        }
        b.end_at = now();
      });
    }
  },
};

scenarios.rpc = async ({ room, agent, o, dl, res }) => {
  const lp = room.localParticipant;
  const failures = [];
  res.sizes = [];
  for (const size of o.sizes) {
    progress(`rpc echo ${size} B`);
    const payload = randomAscii(size);
    const t = now();
    const entry = { size, ok: false };
    try {
      const reply = await dl.race(`echo of ${size} B`, lp.performRpc({ destinationIdentity: agent, method: 'echo', payload }));
      entry.ms = round1(now() - t);
      entry.ok = reply === payload;
      if (!entry.ok) entry.reply_size = reply.length;
    } catch (e) {
      entry.ms = round1(now() - t);
      entry.error = rpcErr(e);
    }
    res.sizes.push(entry);
    if (!entry.ok) failures.push(`echo ${size} B`);
  }
  if (o.nope) {
    progress('rpc nope');
    const t = now();
    const entry = { method: 'nope', expected_code: o.expectNopeCode };
    try {
      const reply = await dl.race('nope', lp.performRpc({ destinationIdentity: agent, method: 'nope', payload: 'x' }));
      entry.reply = reply;
      entry.code = null;
    } catch (e) {
      const err = rpcErr(e);
      entry.code = err.code;
      entry.message = err.message;
    }
    entry.ms = round1(now() - t);
    entry.ok = entry.code === o.expectNopeCode;
    res.nope = entry;
    if (!entry.ok) failures.push(`nope gave ${entry.code}`);
  }
  if (o.count > 0) {
    progress(`rpc bench ${o.count}x${o.concurrency}`);
    const payload = randomAscii(o.payloadSize);
    for (let i = 0; i < o.warmup; i++) {
      await dl.race('warm-up echo', lp.performRpc({ destinationIdentity: agent, method: 'echo', payload }));
    }
    const lat = [];
    const errors = {};
    let failed = 0;
    let next = 0;
    const t0 = now();
    const worker = async () => {
      while (next < o.count) {
        next++;
        const t = now();
        try {
          const reply = await lp.performRpc({ destinationIdentity: agent, method: 'echo', payload });
          if (reply !== payload) throw new Error('reply differs from payload');
          lat.push(now() - t);
        } catch (e) {
          failed++;
          const k = rpcErr(e).code ?? rpcErr(e).message;
          errors[k] = (errors[k] ?? 0) + 1;
        }
      }
    };
    await dl.race('the RPC benchmark', Promise.all(Array.from({ length: o.concurrency }, worker)));
    const wall = now() - t0;
    lat.sort((a, b) => a - b);
    res.bench = {
      count: o.count,
      concurrency: o.concurrency,
      payload_size: o.payloadSize,
      warmup: o.warmup,
      ok: lat.length,
      failed,
      errors,
      p50_ms: percentile(lat, 50),
      p95_ms: percentile(lat, 95),
      min_ms: lat.length ? round1(lat[0]) : null,
      max_ms: lat.length ? round1(lat[lat.length - 1]) : null,
      mean_ms: lat.length ? round1(lat.reduce((a, b) => a + b, 0) / lat.length) : null,
      wall_ms: round1(wall),
      calls_per_s: round1((lat.length * 1000) / wall),
    };
    if (failed) failures.push(`${failed} bench calls failed`);
  }
  return failures.length ? failures.join('; ') : true;
};

scenarios.chat = async (ctx) => {
  const { room, agent, o, dl, res } = ctx;
  const want = `echo: ${o.message}`;
  progress('chat send');
  const t = now();
  const info = await dl.race('sendText', room.localParticipant.sendText(o.message, { topic: 'lk.chat' }));
  res.sent = { message: o.message, stream_id: info.id, send_ms: round1(now() - t) };
  res.streams = ctx.streams;
  progress('chat wait');
  let found;
  try {
    found = await dl.until(`an lk.transcription stream "${want}" from ${agent}`, () =>
      ctx.streams.find((s) => s.done && s.from === agent && s.text === want),
    );
  } catch (e) {
    return String(e.message);
  }
  res.reply_ms = round1(now() - t);
  // Let any further streams of the same reply arrive (e.g. interim + final).
  await sleep(Math.min(o.graceMs, Math.max(0, dl.left() - 100)));
  res.matched_stream_id = found.id;
  return true;
};

scenarios.bytes = async (ctx) => {
  const { room, agent, o, dl, res } = ctx;
  const blob = xorshiftBytes(o.size, o.seed);
  const digest = await sha256Hex(blob);
  res.size = o.size;
  res.seed = o.seed;
  res.send_api = o.sendApi;
  res.browser_sha256 = digest;
  progress('bytes send');
  const t = now();
  if (o.sendApi === 'file') {
    const file = new File([blob], 'blob.bin', { type: 'application/octet-stream' });
    await dl.race('sendFile', room.localParticipant.sendFile(file, { topic: 'echo.bytes', destinationIdentities: [agent] }));
  } else {
    const w = await room.localParticipant.streamBytes({
      name: 'blob.bin',
      topic: 'echo.bytes',
      destinationIdentities: [agent],
      totalSize: o.size,
      mimeType: 'application/octet-stream',
    });
    await dl.race('streamBytes write', w.write(blob));
    await dl.race('streamBytes close', w.close());
  }
  res.send_ms = round1(now() - t);
  progress('bytes wait');
  let reply;
  try {
    reply = await dl.until(`a reply on echo.bytes.sha256 from ${agent}`, () =>
      ctx.replies.find((r) => r.from === agent),
    );
  } catch (e) {
    return String(e.message);
  }
  res.reply_ms = round1(now() - t);
  res.received_text = reply.text ?? null;
  res.attributes = reply.attributes;
  res.header_attributes = reply.header_attributes;
  if (reply.error) res.reply_error = reply.error;
  res.sha256_ok = reply.text === digest;
  res.name_ok = reply.attributes?.name === 'blob.bin';
  if (!res.sha256_ok) return 'received digest differs';
  if (!res.name_ok) return `attribute name is ${JSON.stringify(reply.attributes?.name)}`;
  return true;
};

scenarios.hello = async (ctx) => {
  const { dl, res } = ctx;
  progress('hello wait');
  try {
    await dl.until('a frontend.hello call', () => ctx.helloCalls.length > 0);
  } catch (e) {
    res.calls = ctx.helloCalls;
    return String(e.message);
  }
  // Give the response time to leave before we disconnect.
  await sleep(Math.min(500, Math.max(0, dl.left() - 100)));
  const c = ctx.helloCalls[0];
  res.caller_identity = c.caller_identity;
  res.payload = c.payload;
  res.response = `hello ${c.payload}`;
  res.calls = ctx.helloCalls;
  return c.caller_identity === ctx.agent ? true : `caller was ${c.caller_identity}`;
};

scenarios.state = async ({ room, agent, o, dl, res }) => {
  const p = () => room.remoteParticipants.get(agent);
  progress('state wait');
  const want = o.expect; // [[key, value]]
  let err = null;
  try {
    await dl.until(
      want.length ? `attributes ${want.map(([k, v]) => `${k}=${v}`).join(',')}` : 'attribute lk.agent.state',
      () => {
        const a = p()?.attributes ?? {};
        return want.length ? want.every(([k, v]) => a[k] === v) : 'lk.agent.state' in a || !o.waitState;
      },
      o.stateWaitMs,
    );
  } catch (e) {
    err = String(e.message);
  }
  res.agent_state = p()?.attributes['lk.agent.state'] ?? null;
  res.agent_name = p()?.attributes['lk.agent.name'] ?? null;
  return err ?? true;
};

scenarios.audio = async ({ room, agent, o, dl, res }) => {
  const lp = room.localParticipant;
  progress('audio publish mic');
  const t = now();
  await dl.race('setMicrophoneEnabled', lp.setMicrophoneEnabled(true));
  const micPub = lp.getTrackPublication(LK.Track.Source.Microphone);
  res.mic = {
    published_ms: round1(now() - t),
    track_sid: micPub?.trackSid ?? null,
    settings: micPub?.track?.mediaStreamTrack?.getSettings?.() ?? null,
  };
  progress('audio wait agent track');
  const pub = await dl.until(`a subscribed microphone track from ${agent}`, () => {
    const p = room.remoteParticipants.get(agent);
    const pub = p?.getTrackPublication(LK.Track.Source.Microphone);
    return pub?.track && pub.isSubscribed ? pub : null;
  });
  res.agent_track_sid = pub.trackSid;
  res.subscribed_ms = round1(now() - t);
  const track = pub.track;
  // Chrome feeds WebAudio silence from a remote WebRTC track unless an element plays it.
  let el = null;
  if (o.audioElement) {
    el = track.attach();
    el.muted = true;
    document.body.appendChild(el);
    try {
      await el.play();
    } catch (e) {
      res.element_play_error = String(e?.message ?? e);
    }
  }
  const ac = new AudioContext({ sampleRate: 48000 });
  await ac.resume();
  const url = URL.createObjectURL(new Blob([WORKLET], { type: 'application/javascript' }));
  await ac.audioWorklet.addModule(url);
  const src = ac.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
  const tap = new AudioWorkletNode(ac, 'lk-tap');
  const sink = ac.createGain();
  sink.gain.value = 0;
  src.connect(tap).connect(sink).connect(ac.destination);
  const rate = ac.sampleRate;
  const warmup = Math.round(o.warmupS * rate);
  const wanted = Math.round(o.seconds * rate);
  const blocks = [];
  let started = false;
  let skipped = 0;
  let collected = 0;
  let seen = 0;
  let firstSoundMs = null;
  tap.port.onmessage = (ev) => {
    const x = ev.data;
    seen += x.length;
    if (!started) {
      if (analyse(x, rate).rms * 32768 > o.nonSilentRms) {
        started = true;
        firstSoundMs = round1(now() - t);
      } else return;
    }
    if (skipped < warmup) {
      skipped += x.length;
      return;
    }
    if (collected < wanted) {
      blocks.push(x);
      collected += x.length;
    }
  };
  progress('audio wait sound');
  let err = null;
  try {
    await dl.until('non-silent audio from the agent', () => started);
    progress('audio measure');
    await dl.until(`${o.seconds} s of audio`, () => collected >= wanted);
  } catch (e) {
    err = String(e.message);
  }
  tap.port.onmessage = null;
  const x = new Float32Array(Math.min(collected, wanted));
  let off = 0;
  for (const b of blocks) {
    const n = Math.min(b.length, x.length - off);
    x.set(b.subarray(0, n), off);
    off += n;
  }
  const a = analyse(x, rate);
  res.sample_rate = rate;
  res.samples_seen = seen;
  res.first_sound_ms = firstSoundMs;
  res.measured_s = round1((x.length / rate) * 10) / 10;
  res.freq_hz = Math.round(a.freq * 100) / 100;
  res.rms = round1(a.rms * 32768); // int16 scale, like tests/python/echo_check.py
  res.rms_dbfs = a.rms > 0 ? round1(20 * Math.log10(a.rms * Math.SQRT2)) : null;
  res.agent_state = room.remoteParticipants.get(agent)?.attributes['lk.agent.state'] ?? null;
  await ac.close();
  if (el) track.detach(el);
  return err ?? true;
};

scenarios.throughput = async (ctx) => {
  const { room, agent, o, dl, res } = ctx;
  const lp = room.localParticipant;
  const b = ctx.bench;
  res.direction = o.direction;
  res.bytes = o.size;
  if (o.direction === 'to-agent') {
    res.api = o.api;
    const data = o.api === 'text' ? randomAscii(o.size) : xorshiftBytes(o.size, 7);
    progress('throughput send');
    const t = now();
    if (o.api === 'text') {
      await dl.race('sendText', lp.sendText(data, { topic: 'bench.sink', destinationIdentities: [agent] }));
    } else {
      const w = await lp.streamBytes({ name: 'bench.bin', topic: 'bench.sink', destinationIdentities: [agent], totalSize: o.size });
      for (let off = 0; off < o.size; off += o.writeSize) {
        await dl.race('streamBytes write', w.write(data.subarray(off, off + o.writeSize)));
      }
      await dl.race('streamBytes close', w.close());
    }
    res.send_ms = round1(now() - t);
    progress('throughput wait done');
    await dl.until('bench.sink.done', () => b.done);
    const ms = b.done.at - t;
    res.ms = round1(ms);
    res.agent_count = Number(b.done.text);
    res.mb_per_s = Math.round((o.size / 1e6 / (ms / 1000)) * 100) / 100;
    return res.agent_count === o.size ? true : `agent counted ${b.done.text} bytes`;
  }
  progress('throughput rpc');
  const t = now();
  const reply = await dl.race('bench.source', lp.performRpc({ destinationIdentity: agent, method: 'bench.source', payload: String(o.size) }));
  res.rpc_ms = round1(now() - t);
  res.rpc_reply = reply;
  progress('throughput receive');
  await dl.until('the end of the bench.source.data stream', () => b.end_at);
  const ms = b.end_at - t;
  res.ms = round1(ms);
  res.first_header_ms = round1(b.header_at - t);
  res.received = b.received;
  res.stream = { from: b.from, name: b.name, size: b.size, error: b.error ?? null };
  res.mb_per_s = Math.round((b.received / 1e6 / (ms / 1000)) * 100) / 100;
  if (b.error) return `stream failed: ${b.error}`;
  return b.received === o.size ? true : `received ${b.received} of ${o.size} bytes`;
};

// ---------------------------------------------------------------------------------------------

async function run(scenario, o) {
  const dl = new Deadline(o.deadline);
  const res = {};
  const timing = {};
  const ctx = { agent: o.agent, o: o.s, dl, res, t0: now() };
  let phase = 'setup';
  const setPhase = (p) => {
    phase = p;
    progress(p);
  };
  let room;
  try {
    if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
    wire.enabled = o.wire;
    LK.setLogLevel(o.logLevel);
    room = new LK.Room({
      adaptiveStream: false,
      dynacast: false,
      audioCaptureDefaults: o.micProcessing
        ? undefined
        : { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    ctx.room = room;
    room.on(LK.RoomEvent.Disconnected, (reason) => {
      ctx.disconnectReason = reason;
    });
    beforeConnect[scenario]?.(ctx);

    setPhase('connect');
    let t = now();
    await dl.race('Room.connect', room.connect(o.url, o.token, { autoSubscribe: true }));
    timing.connect_ms = round1(now() - t);

    setPhase('wait agent');
    t = now();
    await dl.until(`participant ${o.agent}`, () => room.remoteParticipants.get(o.agent), o.agentWaitMs);
    timing.agent_wait_ms = round1(now() - t);

    setPhase(scenario);
    t = now();
    const verdict = await scenarios[scenario](ctx);
    timing.scenario_ms = round1(now() - t);
    const out = {
      ok: verdict === true,
      ...(verdict === true ? {} : { error: verdict, phase }),
      ...res,
    };
    return finish(out);
  } catch (e) {
    return finish({ ok: false, error: String(e?.message ?? e), phase, ...res });
  }

  async function finish(out) {
    out.agent = room ? describeParticipant(room.remoteParticipants.get(o.agent)) : null;
    out.local = room
      ? {
          identity: room.localParticipant.identity,
          sid: room.localParticipant.sid,
          sdk_version: LK.version,
          client_protocol: LK.clientProtocol,
          protocol_version: LK.protocolVersion,
          server_version: room.serverInfo?.version ?? null,
          server_protocol: room.serverInfo?.protocol ?? null,
        }
      : null;
    if (o.wire) {
      out.wire = {
        sent: wire.sent,
        recv: wire.recv,
        sent_stream_topics: wire.sentTopics,
        recv_stream_topics: wire.recvTopics,
        undecoded: wire.undecoded,
      };
    }
    out.ice = await iceReport();
    out.timing = timing;
    if (ctx.disconnectReason !== undefined) out.disconnect_reason = ctx.disconnectReason;
    if (room) {
      try {
        await Promise.race([room.disconnect(), sleep(2000)]);
      } catch {}
    }
    return JSON.parse(JSON.stringify(out));
  }
}

window.lkPeer = { run, ready: true };
