#!/usr/bin/env node
// Self-test of the browser test peer against the Python reference agent (py_agent.py), on a
// livekit-server of its own: the same steps an lk-go integration test takes, with
// py_agent.py standing in for lk-go.
//
// usage: node selftest.mjs [--repeat N] [--only NAME,NAME] [--no-ips-include]
//                          [--peer-arg ARG]... [--out FILE]
//
// Picks free loopback ports, writes a copy of $LK_GO_ROOT/xtask/livekit.yaml ($LK_GO_ROOT
// defaults to ../..) with those ports, with rtc.ips.includes [127.0.0.1/32] (left out with
// --no-ips-include, for experiments) and with room timeouts long enough for one agent to serve
// many browser runs, starts $LIVEKIT_SERVER_BIN (default
// $LK_GO_ROOT/target/livekit/bin/livekit-server) and waits for GET / = 200. For each agent profile it starts py_agent.py ($PYTHON, default
// $LK_GO_ROOT/target/pyenv/bin/python) in a room of its own and waits for its "ready" line; then runs
// every case N times (`node peer.mjs ...`, extra --peer-arg ARGs appended), checks the exit code
// and the case's own checks, and prints one line per run on stderr. Every peer JSON line goes to
// --out (default selftest-results.jsonl in a temp dir, named at the end). Ends with the line
// "N passed, N failed" and exits 0 only if every run passed. Kills what it started.
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mintToken } from './token.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = process.env.LK_GO_ROOT ?? resolve(HERE, '../..');
const SERVER_BIN = process.env.LIVEKIT_SERVER_BIN ?? join(ROOT, 'target/livekit/bin/livekit-server');
const PYTHON = process.env.PYTHON ?? join(ROOT, 'target/pyenv/bin/python');

const args = process.argv.slice(2);
const opt = { repeat: 2, only: null, ipsInclude: true, peerArgs: [], out: null };
for (let i = 0; i < args.length; i++) {
  let a = args[i];
  if (a.startsWith('--peer-arg=')) {
    opt.peerArgs.push(a.slice('--peer-arg='.length));
    continue;
  }
  if (a === '--repeat') opt.repeat = Number(args[++i]);
  else if (a === '--only') opt.only = args[++i].split(',');
  else if (a === '--no-ips-include') opt.ipsInclude = false;
  else if (a === '--peer-arg') opt.peerArgs.push(args[++i]);
  else if (a === '--out') opt.out = args[++i];
  else {
    console.error(`unknown argument ${a}`);
    process.exit(2);
  }
}

const near = (x, want, tol) => typeof x === 'number' && Math.abs(x - want) <= tol;

// name, agent profile, peer scenario + args, extra check on the JSON line (returns an error or null)
const CASES = [
  ['state', 'tone660', ['state'], (r) => (r.agent_state === 'listening' && r.agent?.kind_name === 'AGENT' ? null : 'agent state/kind')],
  ['hello', 'tone660', ['hello'], (r) => (r.payload === 'agent' ? null : 'payload')],
  ['rpc', 'tone660', ['rpc'], (r) => (r.sizes.length === 3 && r.nope?.code === 1400 ? null : 'sizes/nope')],
  ['rpc-bench', 'tone660', ['rpc', '--count', '200', '--concurrency', '4'], (r) => (r.bench?.ok === 200 ? null : 'bench')],
  ['chat', 'tone660', ['chat'], () => null],
  ['bytes-stream', 'tone660', ['bytes'], () => null],
  ['bytes-file', 'tone660', ['bytes', '--send-api', 'file'], () => null],
  ['tput-to-agent-bytes', 'tone660', ['throughput', '--direction', 'to-agent', '--size', '2000000'], () => null],
  ['tput-to-agent-text', 'tone660', ['throughput', '--direction', 'to-agent', '--api', 'text', '--size', '1000000'], () => null],
  ['tput-from-agent', 'tone660', ['throughput', '--direction', 'from-agent', '--size', '2000000'], () => null],
  ['audio-tone', 'tone660', ['audio'], (r) => (near(r.freq_hz, 660, 3) && r.rms > 3000 ? null : `freq ${r.freq_hz} rms ${r.rms}`)],
  ['audio-echo', 'echo', ['audio', '--wav-hz', '440'], (r) => (near(r.freq_hz, 440, 3) && r.rms > 3000 ? null : `freq ${r.freq_hz} rms ${r.rms}`)],
];
const PROFILES = { tone660: ['--audio', 'tone', '--tone-hz', '660'], echo: ['--audio', 'echo'] };

function freeTcpPort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}
function freeUdpPort() {
  return new Promise((res, rej) => {
    const s = createSocket('udp4');
    s.once('error', rej);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const children = [];
function start(cmd, argv, logFile) {
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  child.stderr.on('data', (d) => appendFileSync(logFile, d));
  return child;
}
async function killAll() {
  const alive = () => children.filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of alive()) c.kill('SIGTERM');
  const until = Date.now() + 5000;
  while (alive().length && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  for (const c of alive()) c.kill('SIGKILL');
}
process.on('exit', () => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
process.on('SIGINT', () => killAll().then(() => process.exit(130)));

async function waitHttp200(url, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const r = await fetch(url);
      if (r.status === 200) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer 200 within ${ms} ms`);
}

function firstLine(child, ms) {
  return new Promise((res, rej) => {
    let buf = '';
    const t = setTimeout(() => rej(new Error('no ready line')), ms);
    child.stdout.on('data', (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(t);
        res(buf.slice(0, i));
      }
    });
    child.once('exit', (code) => rej(new Error(`exited ${code} before ready`)));
  });
}

function runPeer(argv) {
  return new Promise((res) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [join(HERE, 'peer.mjs'), ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => res({ code, out, err, ms: Date.now() - t0 }));
  });
}

let passed = 0;
let failed = 0;
let code = 0;
try {
  const work = mkdtempSync(join(tmpdir(), 'lk-browser-selftest-'));
  const outFile = opt.out ?? join(work, 'selftest-results.jsonl');
  const port = await freeTcpPort();
  const tcpPort = await freeTcpPort();
  const udpPort = await freeUdpPort();
  let yaml = readFileSync(join(ROOT, 'xtask/livekit.yaml'), 'utf8')
    .replace(/^port: \d+$/m, `port: ${port}`)
    .replace(/^  tcp_port: \d+$/m, `  tcp_port: ${tcpPort}`)
    .replace(/^  udp_port: \d+$/m, `  udp_port: ${udpPort}`)
    .replace(/^  empty_timeout: \d+$/m, '  empty_timeout: 600')
    .replace(/^  departure_timeout: \d+$/m, '  departure_timeout: 600');
  if (opt.ipsInclude) yaml = yaml.replace(/^rtc:\n/m, 'rtc:\n  ips:\n    includes:\n      - 127.0.0.1/32\n');
  const cfg = join(work, 'livekit.yaml');
  writeFileSync(cfg, yaml);
  const serverLog = join(work, 'server.log');
  start(SERVER_BIN, ['--config', cfg], serverLog);
  const url = `ws://127.0.0.1:${port}`;
  await waitHttp200(`http://127.0.0.1:${port}/`, 15000);
  console.error(`server ${url} (tcp ${tcpPort}, udp ${udpPort}), logs in ${work}`);

  const cases = CASES.filter(([name]) => !opt.only || opt.only.includes(name));
  const agents = {};
  for (const prof of new Set(cases.map((c) => c[1]))) {
    const room = `selftest-${prof}`;
    const token = mintToken({ identity: 'agent', room, kind: 'agent' });
    const child = start(PYTHON, [join(HERE, 'py_agent.py'), url, token, ...PROFILES[prof]], join(work, `agent-${prof}.log`));
    const ready = await firstLine(child, 20000);
    console.error(`agent ${prof}: ${ready}`);
    agents[prof] = room;
  }

  let n = 0;
  for (let rep = 1; rep <= opt.repeat; rep++) {
    for (const [name, prof, peerArgs, check] of cases) {
      const identity = `browser-${name}-${rep}-${++n}`;
      const token = mintToken({ identity, room: agents[prof] });
      const r = await runPeer([peerArgs[0], url, token, 'agent', ...peerArgs.slice(1), ...opt.peerArgs]);
      appendFileSync(join(work, `peer-${name}-${rep}.stderr`), r.err);
      const lines = r.out.split('\n').filter((l) => l.trim());
      let verdict = null;
      let json = null;
      if (lines.length !== 1) verdict = `stdout had ${lines.length} lines`;
      else {
        try {
          json = JSON.parse(lines[0]);
        } catch {
          verdict = 'stdout is not JSON';
        }
      }
      if (!verdict && r.code !== 0) verdict = `exit ${r.code}: ${json?.error}`;
      if (!verdict) verdict = check(json);
      appendFileSync(outFile, JSON.stringify({ case: name, rep, exit: r.code, wall_ms: r.ms, result: json }) + '\n');
      if (verdict) failed++;
      else passed++;
      const t = json?.timing ?? {};
      console.error(
        `${verdict ? 'FAIL' : 'ok  '} ${name} #${rep}: ${r.ms} ms wall (launch ${t.browser_launch_ms}, page ${t.page_load_ms}, ` +
          `connect ${t.connect_ms}, scenario ${t.scenario_ms})${verdict ? ` -- ${verdict}` : ''}`,
      );
    }
  }
  console.error(`results: ${outFile}`);
  console.log(`${passed} passed, ${failed} failed`);
  code = failed ? 1 : 0;
} catch (e) {
  console.error(`selftest: ${e?.stack ?? e}`);
  code = 1;
} finally {
  await killAll();
}
process.exit(code);
