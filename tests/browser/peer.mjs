#!/usr/bin/env node
// Real-browser test peer: livekit-client (the JavaScript SDK) in headless Chromium, driven from
// Node with puppeteer-core, for lk-go's integration tests and benchmark.
//
// usage: node peer.mjs SCENARIO WS_URL TOKEN AGENT_IDENTITY [options]
//
// Starts a tiny HTTP server on 127.0.0.1:0 (page.html, page.js and livekit-client's browser
// build from node_modules), launches Chromium (--chromium PATH, else $CHROMIUM_PATH, else
// /usr/bin/chromium), opens the page, joins the room with Room.connect(WS_URL, TOKEN), waits up
// to --agent-wait-ms (10000) for the remote participant AGENT_IDENTITY ("the agent"), runs the
// scenario inside the page, prints ONE JSON line on stdout, closes the browser and exits: 0 when
// every check passed, 1 otherwise (the line then has "ok": false and an "error" string), 2 for
// bad usage. The whole run, browser start included, is bounded by --timeout-ms (30000); past it
// the line is {"ok": false, "error": "timeout ...", "phase": ...}. Browser console output and
// diagnostics go to stderr, prefixed "[browser]" / "[peer]".
//
// Every line has: ok, scenario, the scenario's fields, agent (identity, sid, kind, kind_name,
// is_agent, attributes, client_protocol, capabilities, tracks), local (identity, sdk_version,
// client_protocol, server_version), ice (per RTCPeerConnection: the local candidates gathered
// and the selected pair), timing (browser_launch_ms, page_load_ms, connect_ms, agent_wait_ms,
// scenario_ms, close_ms, total_ms) and browser (version).
//
// Scenarios (what the agent must do is the contract lk-go's agents and py_agent.py implement):
//   rpc     performRpc(agent, 'echo', payload) for each of --sizes (default 5,15000,100000;
//           random printable ASCII): sizes[] = {size, ok (reply === payload), ms, error?
//           {code, message}}. Then method 'nope': nope = {code, message, ok (code ==
//           --expect-nope-code, default 1400)}. With --count N: N echo calls of --payload-size
//           (16) bytes, --concurrency C (1) in flight, after --warmup (3) calls: bench = {ok,
//           failed, errors, p50_ms, p95_ms, min_ms, max_ms, mean_ms, calls_per_s}; --count makes
//           --sizes default to none and skips 'nope' unless --sizes/--nope are given. Includes
//           the wire trace (see --wire).
//   chat    Registers a text stream handler on lk.transcription, then sendText(--message
//           (default "hello from the browser"), {topic: 'lk.chat'}) to everyone. streams[] = every
//           lk.transcription stream: {from, id, header_attributes, attributes (after readAll, so
//           trailer attributes merged), text}. Passes when one stream from the agent reads
//           "echo: " + message; waits --grace-ms (300) more for further streams.
//   bytes   Registers a text stream handler on echo.bytes.sha256, sends --size (100000) bytes
//           (xorshift32 from --seed 1) on topic echo.bytes, name blob.bin, to the agent, with
//           streamBytes (--send-api stream, default) or sendFile (--send-api file). Passes when
//           the agent's reply text is the lowercase hex SHA-256 (checked in the browser and in
//           Node) and its attribute name is "blob.bin".
//   hello   Registers RPC method frontend.hello BEFORE connecting (returns "hello " + payload)
//           and waits for the agent to call it: caller_identity, payload, calls[]. Passes when
//           the agent called. Expect 1-3 s: livekit-server announces participants that publish
//           nothing to the others in batches every 3 s (subscriberUpdateInterval), so the agent
//           learns of this browser late (and never of one that leaves within that window).
//   audio   Publishes the fake microphone (setMicrophoneEnabled(true); Chromium's fake capture
//           plays a generated WAV: 48 kHz mono s16, --wav-hz 440, peak --wav-amplitude 8000,
//           10 s, looping), subscribes to the agent's microphone track, plays it in a muted
//           <audio> element and taps it with an AudioWorklet. After the first block with RMS >
//           --non-silent-rms (100, int16 scale) and --warmup-s (0.5) it measures --seconds (5):
//           freq_hz (zero crossings), rms (int16 scale), rms_dbfs, agent_state (lk.agent.state).
//           Echo cancellation, noise suppression and AGC are off unless --mic-processing.
//           --no-audio-element skips the <audio> element (to show that WebAudio then gets
//           only silence).
//           Passes when the audio was measured (the test judges freq/rms).
//   state   Reports agent_state and agent_name (the participant itself is in "agent"). Waits
//           (up to --state-wait-ms, default: the deadline) until lk.agent.state is set, or
//           until every --expect KEY=VALUE (repeatable) holds. --no-wait-state reports at once.
//   throughput  --direction to-agent|from-agent, --size BYTES (default 1000000); mb_per_s =
//           BYTES / 1e6 / seconds. See the bench protocol below.
//
// Bench protocol (agent side; py_agent.py implements it):
//   to-agent:   the browser sends one stream of BYTES on topic "bench.sink" to the agent: a byte
//               stream (streamBytes, name bench.bin, total size set, written in --write-size
//               pieces of 65536; --api bytes, default) or a text stream (sendText of BYTES
//               random ASCII; --api text). When the stream ends the agent replies to the sender
//               with a text stream on "bench.sink.done" whose text is the number of bytes it
//               received (UTF-8 bytes for text), in decimal. Time: from opening the stream
//               to the reply.
//   from-agent: the browser calls RPC "bench.source" on the agent with payload = BYTES in
//               decimal; the agent returns at once (any payload; py_agent returns BYTES) and
//               then sends the caller one byte stream of BYTES bytes on "bench.source.data".
//               Time: from the RPC call to the stream's end; also rpc_ms and first_header_ms.
//
// Other options: --log-level (livekit-client's: trace|debug|info|warn|error|silent; default
// warn), --wire (count sent/received data-channel packets by DataPacket case and stream-header
// topics: tells RPC v1 packets from v2 streams; on for rpc and hello), --no-wire,
// --chromium-flag FLAG (repeatable, appended), --drop-flag PREFIX (repeatable: leave out the
// default flags starting with PREFIX; for finding out which flags matter), --keep-profile.

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const T_START = Date.now();
const SCENARIOS = ['rpc', 'chat', 'bytes', 'hello', 'audio', 'state', 'throughput'];

const log = (...a) => process.stderr.write(`[peer] ${a.join(' ')}\n`);
let printed = false;
function emit(obj) {
  if (printed) return;
  printed = true;
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// --- arguments -------------------------------------------------------------------------------

function usage(msg) {
  emit({ ok: false, error: `usage: ${msg}; see the header of peer.mjs` });
  process.exit(2);
}

const FLAGS_BOOL = new Set(['wire', 'no-wire', 'mic-processing', 'no-wait-state', 'keep-profile', 'nope', 'no-audio-element']);
const FLAGS_MULTI = new Set(['expect', 'chromium-flag', 'drop-flag']);

function parseArgs(argv) {
  const pos = [];
  const opt = { expect: [], 'chromium-flag': [], 'drop-flag': [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      pos.push(a);
      continue;
    }
    let [k, v] = a.slice(2).split(/=(.*)/s, 2);
    if (FLAGS_BOOL.has(k)) {
      opt[k] = true;
      continue;
    }
    if (v === undefined) {
      if (i + 1 >= argv.length) usage(`--${k} needs a value`);
      v = argv[++i];
    }
    if (FLAGS_MULTI.has(k)) opt[k].push(v);
    else opt[k] = v;
  }
  return { pos, opt };
}

const { pos, opt } = parseArgs(process.argv.slice(2));
if (pos.length !== 4) usage('node peer.mjs SCENARIO WS_URL TOKEN AGENT_IDENTITY [options]');
const [scenario, url, token, agent] = pos;
if (!SCENARIOS.includes(scenario)) usage(`unknown scenario ${scenario} (one of ${SCENARIOS.join(', ')})`);

const num = (k, d) => {
  if (opt[k] === undefined) return d;
  const n = Number(opt[k]);
  if (!Number.isFinite(n)) usage(`--${k} must be a number`);
  return n;
};
const timeoutMs = num('timeout-ms', 30000);
const count = num('count', 0);
const sizes =
  opt.sizes !== undefined
    ? opt.sizes.split(',').filter((s) => s.trim() !== '').map(Number)
    : count > 0
      ? []
      : [5, 15000, 100000];
if (sizes.some((n) => !Number.isInteger(n) || n < 0)) usage('--sizes must be a comma-separated list of byte counts');

const s = {
  // rpc
  sizes,
  nope: opt.nope || !(count > 0) || opt.sizes !== undefined,
  expectNopeCode: num('expect-nope-code', 1400),
  count,
  concurrency: Math.max(1, num('concurrency', 1)),
  payloadSize: num('payload-size', 16),
  warmup: num('warmup', 3),
  // chat
  message: opt.message ?? 'hello from the browser',
  graceMs: num('grace-ms', 300),
  // bytes
  size: num('size', scenario === 'throughput' ? 1000000 : 100000),
  seed: num('seed', 1),
  sendApi: opt['send-api'] ?? 'stream',
  // audio
  seconds: num('seconds', 5),
  warmupS: num('warmup-s', 0.5),
  nonSilentRms: num('non-silent-rms', 100),
  micProcessing: !!opt['mic-processing'],
  audioElement: !opt['no-audio-element'],
  // state
  expect: opt.expect.map((kv) => {
    const i = kv.indexOf('=');
    if (i < 1) usage('--expect takes KEY=VALUE');
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
  waitState: !opt['no-wait-state'],
  stateWaitMs: num('state-wait-ms', Infinity),
  // throughput
  direction: opt.direction ?? 'to-agent',
  api: opt.api ?? 'bytes',
  writeSize: num('write-size', 65536),
};
if (!['stream', 'file'].includes(s.sendApi)) usage('--send-api is stream or file');
if (!['to-agent', 'from-agent'].includes(s.direction)) usage('--direction is to-agent or from-agent');
if (!['bytes', 'text'].includes(s.api)) usage('--api is bytes or text');
const wireOn = opt['no-wire'] ? false : opt.wire || scenario === 'rpc' || scenario === 'hello';

// --- fake microphone -------------------------------------------------------------------------

function writeWav(path, { hz, amplitude, seconds = 10, rate = 48000 }) {
  const n = Math.round(seconds * rate);
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    buf.writeInt16LE(Math.round(amplitude * Math.sin((2 * Math.PI * hz * i) / rate)), 44 + i * 2);
  }
  writeFileSync(path, buf);
}

// --- static server ---------------------------------------------------------------------------

const SERVED = {
  '/page.html': join(HERE, 'page.html'),
  '/page.js': join(HERE, 'page.js'),
};
const SERVED_DIRS = [
  '/node_modules/livekit-client/dist/',
  '/node_modules/@livekit/protocol/dist/',
  '/node_modules/@bufbuild/protobuf/dist/',
];
const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.map': 'application/json' };

function startServer() {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    let file = SERVED[path];
    if (!file && SERVED_DIRS.some((d) => path.startsWith(d))) file = join(HERE, path);
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = readFileSync(file);
      const ext = path.slice(path.lastIndexOf('.'));
      res.writeHead(200, { 'content-type': MIME[ext] ?? 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// --- browser ---------------------------------------------------------------------------------

function chromiumFlags(profileDir, wavPath) {
  const flags = [
    '--headless=new',
    '--no-sandbox', // we run as root in a container
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-extensions',
    '--disable-breakpad',
    '--password-store=basic',
    '--use-mock-keychain',
    // Timers and media keep running at full rate in a page nobody looks at.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    // WebRTC on loopback: gather 127.0.0.1 host candidates, with real IPs rather than mDNS names.
    '--allow-loopback-in-peer-connection',
    // No IPv6 host candidates: with them, Chromium pairs its IPv6 address with the server's as
    // soon as the server offers one (no rtc.ips.includes), i.e. traffic off 127.0.0.1.
    '--force-fieldtrials=WebRTC-IPv6Default/Disabled/',
    // Chromium honours only the LAST --disable-features / --enable-features: keep one of each.
    '--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints',
    // Media: auto-accept getUserMedia, fake devices, the microphone plays our WAV.
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wavPath}`,
    '--autoplay-policy=no-user-gesture-required',
    `--user-data-dir=${profileDir}`,
  ];
  const kept = flags.filter((f) => !opt['drop-flag'].some((p) => f.startsWith(p)));
  return [...kept, ...opt['chromium-flag']];
}

// --- main ------------------------------------------------------------------------------------

const timing = {};
let phase = 'start';
let browser;
let server;
let profileDir;

async function cleanup() {
  try {
    if (browser) await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 3000))]);
  } catch {}
  try {
    browser?.process()?.kill('SIGKILL');
  } catch {}
  try {
    server?.close();
  } catch {}
  if (profileDir && !opt['keep-profile']) {
    try {
      rmSync(profileDir, { recursive: true, force: true });
    } catch {}
  }
}

const hardTimer = setTimeout(async () => {
  timing.total_ms = Date.now() - T_START;
  emit({ ok: false, scenario, error: `timeout after ${timeoutMs} ms`, phase, timing });
  await cleanup();
  process.exit(1);
}, timeoutMs);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, async () => {
    clearTimeout(hardTimer);
    timing.total_ms = Date.now() - T_START;
    emit({ ok: false, scenario, error: `terminated by ${sig}`, phase, timing });
    await cleanup();
    process.exit(1);
  });
}

async function main() {
  const { default: puppeteer } = await import('puppeteer-core');
  profileDir = mkdtempSync(join(tmpdir(), 'lk-browser-peer-'));
  const wavPath = join(profileDir, 'mic.wav');
  writeWav(wavPath, { hz: num('wav-hz', 440), amplitude: num('wav-amplitude', 8000) });
  const userData = join(profileDir, 'profile');

  server = await startServer();
  const pageUrl = `http://127.0.0.1:${server.address().port}/page.html`;

  phase = 'launch browser';
  let t = Date.now();
  const args = chromiumFlags(userData, wavPath);
  log('chromium flags:', args.join(' '));
  browser = await puppeteer.launch({
    executablePath: opt.chromium ?? process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    args,
    pipe: true,
    protocolTimeout: timeoutMs + 10000,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  timing.browser_launch_ms = Date.now() - t;
  const version = await browser.version();

  phase = 'load page';
  t = Date.now();
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[browser] ${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[browser] pageerror: ${e?.message ?? e}\n`));
  page.on('requestfailed', (r) => process.stderr.write(`[browser] request failed: ${r.url()} ${r.failure()?.errorText}\n`));
  await page.exposeFunction('lkProgress', (p) => {
    phase = p;
    log('phase:', p);
  });
  await page.goto(pageUrl, { waitUntil: 'load', timeout: Math.max(1000, T_START + timeoutMs - Date.now()) });
  await page.waitForFunction(() => window.lkPeer?.ready === true, { timeout: Math.max(1000, T_START + timeoutMs - Date.now()) });
  timing.page_load_ms = Date.now() - t;

  phase = 'run';
  const hardDeadline = T_START + timeoutMs;
  const margin = Math.min(3000, timeoutMs / 5);
  const result = await page.evaluate((sc, o) => window.lkPeer.run(sc, o), scenario, {
    url,
    token,
    agent,
    deadline: hardDeadline - margin,
    agentWaitMs: num('agent-wait-ms', 10000),
    logLevel: opt['log-level'] ?? 'warn',
    micProcessing: s.micProcessing,
    wire: wireOn,
    s: { ...s, stateWaitMs: Number.isFinite(s.stateWaitMs) ? s.stateWaitMs : 1e12 },
  });

  if (scenario === 'bytes') {
    // Cross-check the in-browser digest with Node's (same xorshift32 stream).
    const blob = Buffer.alloc(s.size);
    let x = s.seed >>> 0 || 1;
    for (let i = 0; i < s.size; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      blob[i] = x & 0xff;
    }
    result.node_sha256 = createHash('sha256').update(blob).digest('hex');
    if (result.ok && result.node_sha256 !== result.browser_sha256) {
      result.ok = false;
      result.error = 'browser and Node digests differ';
    }
  }

  const { timing: pageTiming, ...rest } = result;
  Object.assign(timing, pageTiming);
  timing.total_ms = Date.now() - T_START;
  const out = { ok: rest.ok, scenario, ...rest, browser: { version }, timing };
  return out;
}

let code = 1;
try {
  const out = await main();
  phase = 'close';
  const tClose = Date.now();
  await cleanup();
  out.timing.close_ms = Date.now() - tClose;
  out.timing.total_ms = Date.now() - T_START;
  clearTimeout(hardTimer);
  emit(out);
  code = out.ok ? 0 : 1;
} catch (e) {
  clearTimeout(hardTimer);
  timing.total_ms = Date.now() - T_START;
  emit({ ok: false, scenario, error: String(e?.message ?? e), phase, timing });
  await cleanup();
}
process.exit(code);
