// Squall's in-container proxy for Node.js actions: OpenWhisk's /init and /run, and each activation's logs.
//
// The contract (start, endpoints, statuses, logs) is written out at the top of python_proxy.py; this file
// implements it for Node.js 18 with built-in modules only.
//
// Node.js cannot point its own fds 1 and 2 at pipes it reads, so the output of the action is collected in one of
// two ways; either way the server (HTTP on the Unix socket, and the action in its event loop, as in OpenWhisk's
// Node.js runtime) asks the collector for each activation's lines over a message channel.
//   `node node_proxy.js`: a launcher starts the server as its child with fds 1 and 2 on pipes and collects from
//       them; two Node.js starts. When either process ends, the other one follows.
//   `sh -c 'mkfifo -m 600 /tmp/.o /tmp/.e && exec "$@" 1<>/tmp/.o 2<>/tmp/.e' sh node node_proxy.js` with
//       SQUALL_PROXY_LOG_FIFOS=/tmp/.o:/tmp/.e: one process, whose fds 1 and 2 are the FIFOs (opened read-write,
//       so that opening them never blocks); a worker thread collects from them. One Node.js start: the faster
//       cold start.
'use strict';

const ROLE = 'SQUALL_PROXY_ROLE';
const NONCE = 'SQUALL_PROXY_NONCE';
const FIFOS = 'SQUALL_PROXY_LOG_FIFOS';
const DEFAULT_SOCKET = '/run/squall/proxy.sock';
const DEFAULT_LOG_LIMIT = 10 * 1024 * 1024;
const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX';
const MAX_LINE = 16 * 1024; // docker's split size for a line without a newline
const LOG_WAIT_MS = 10000; // the sentinels come back within milliseconds; this only bounds a broken reader
const JAVA_TRIM = /^[\x00-\x20]+|[\x00-\x20]+$/g; // Scala's String.trim, which OpenWhisk applies to log lines
const SOFAR_WAIT_MS = 30; // for the side door: lets the output already written reach the collector
const HANDOVER_MS = 2000; // how long an action's process.exit() waits for the invoker to take its lines
const realExit = process.exit.bind(process); // the proxy's own exits, never delayed by the hand-over
const LOG_FAILURE = 'There was an issue while collecting your logs. Data might be missing.';

function truncatedMessage(limit) {
  return `Logs were truncated because the total bytes size exceeds the limit of ${limit} bytes.`;
}

function parseLimit(text, fallback) {
  const n = Number.parseInt(String(text), 10);
  return Number.isFinite(n) && String(n) === String(text).trim() ? Math.max(0, n) : fallback;
}

// --- collecting the output of the action, in either launch form ----------------------------------------------

function makeNonce() {
  return Math.random().toString(16).slice(2, 14) + process.pid.toString(16);
}

function launcher() {
  const { spawn } = require('child_process');
  const nonce = makeNonce();
  const env = Object.assign({}, process.env, { [ROLE]: 'server', [NONCE]: nonce });
  const limit = parseLimit(process.env.SQUALL_LOG_LIMIT_BYTES, DEFAULT_LOG_LIMIT);
  let logs = null;
  let ended = null; // the child's exit code once it is gone: the launcher follows once its lines were taken
  // The side door before the server's socket (the invoker locks the directory once that appears), served here:
  // this process outlives a server that spins or exits.
  const door = sideDoor(
    (reply) => (logs ? logs.sofar(reply) : reply(['', false])),
    () => ended !== null && realExit(ended),
  );
  listenAt(door, `${process.env.SQUALL_PROXY_SOCKET || DEFAULT_SOCKET}.logs`, () => {
    // Node.js options given to the launcher (e.g. --max-old-space-size) are meant for the action: pass them on.
    const child = spawn(process.execPath, [...process.execArgv, __filename], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env,
      serialization: 'json', // 'advanced' costs ~100 µs more per small message
    });
    logs = new LogCollector(limit, nonce, [child.stdout, child.stderr]);
    collect(logs, {
      send: (msg) => child.connected && child.send(msg),
      onMessage: (handler) => child.on('message', handler),
    });
    child.on('exit', (code) => {
      ended = code === null ? 1 : code;
      setTimeout(() => realExit(ended), HANDOVER_MS);
    });
    const stop = () => {
      child.kill('SIGKILL');
      realExit(0);
    };
    process.on('SIGTERM', stop); // as PID 1, SIGTERM is ignored without a handler
    process.on('SIGINT', stop);
  });
}

function singleProcess(fifos) {
  const { Worker } = require('worker_threads');
  const nonce = makeNonce();
  const limit = parseLimit(process.env.SQUALL_LOG_LIMIT_BYTES, DEFAULT_LOG_LIMIT);
  const served = new Int32Array(new SharedArrayBuffer(4)); // set by the worker once the side door answered
  const worker = new Worker(__filename, { workerData: { fifos: fifos.split(':'), limit, nonce, served } });
  worker.on('error', (error) => {
    process._rawDebug(`squall proxy: the log collector failed: ${error && error.stack ? error.stack : error}`);
    realExit(70);
  });
  worker.on('exit', () => realExit(70));
  process.on('SIGTERM', () => realExit(0)); // as PID 1, SIGTERM is ignored without a handler
  // The side door is bound here, before the server's socket (the invoker locks the directory once that appears;
  // waiting for the worker instead would delay every cold start by its boot), and its listening descriptor is
  // shared with the worker, which accepts on it too: while this thread spins in the action, the worker answers.
  const asked = new Map();
  let asks = 0;
  const door = sideDoor((reply) => {
    asks += 1;
    asked.set(asks, reply);
    worker.postMessage({ op: 'sofar', id: asks });
  });
  worker.on('message', (msg) => {
    const reply = msg && msg.op === 'sofar' && asked.get(msg.id);
    if (reply) {
      asked.delete(msg.id);
      reply([msg.frag, msg.truncated]);
    }
  });
  const opened = new Promise((resolve) => {
    listenAt(door, `${process.env.SQUALL_PROXY_SOCKET || DEFAULT_SOCKET}.logs`, () => {
      worker.postMessage({ op: 'door', fd: door._handle.fd });
      resolve();
    });
  });
  server(
    nonce,
    { send: (msg) => worker.postMessage(msg), onMessage: (handler) => worker.on('message', handler) },
    opened,
    (ms) => Atomics.wait(served, 0, 0, ms),
  );
}

// The worker thread of singleProcess: the FIFOs are read through the thread's own event loop, which keeps
// draining them while the main thread is blocked writing to a full one.
function fifoCollector(data) {
  const fs = require('fs');
  const net = require('net');
  const { parentPort } = require('worker_threads');
  const sources = data.fifos.map((path) => {
    const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    return new net.Socket({ fd, readable: true, writable: false });
  });
  const logs = new LogCollector(data.limit, data.nonce, sources);
  const channel = { send: (msg) => parentPort.postMessage(msg), onMessage: (handler) => parentPort.on('message', handler) };
  collect(logs, channel);
  const served = () => {
    Atomics.store(data.served, 0, 1);
    Atomics.notify(data.served, 0);
  };
  channel.onMessage((msg) => {
    if (msg && msg.op === 'door') sideDoor((reply) => logs.sofar(reply), served).listen({ fd: msg.fd });
  });
}

// The collector's side of the channel: {op: 'limit', bytes}, {op: 'logs', epoch} → {op: 'logs', epoch, ...} and
// {op: 'sofar', id} → {op: 'sofar', id, frag, truncated}.
function collect(logs, channel) {
  logs.streams.forEach((s, i) => s.source.on('data', (chunk) => logs.feed(i, chunk)));
  channel.onMessage((msg) => {
    if (msg && msg.op === 'limit') {
      logs.limit = msg.bytes;
    } else if (msg && msg.op === 'logs') {
      logs.request(msg.epoch, (frag, truncated) => channel.send({ op: 'logs', epoch: msg.epoch, frag, truncated }));
    } else if (msg && msg.op === 'sofar') {
      logs.sofar(([frag, truncated]) => channel.send({ op: 'sofar', id: msg.id, frag, truncated }));
    }
  });
}

// The side door: POST /logs, answered with the current activation's lines so far (`sofar`), outside the thread
// that runs the action. After a timeout the invoker asks it for what the action printed, even while the action
// spins (OpenWhisk's loggingTimeout.js and initforever.js) and the server can answer nothing. Plain `net` and a
// minimal HTTP/1.1 reading: `http` would cost the collector's start a few milliseconds of CPU.
function sideDoor(sofar, served = () => {}) {
  const net = require('net');
  return net.createServer((conn) => {
    let buf = Buffer.alloc(0);
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end).split('\r\n');
        const [method, target] = head[0].split(' ');
        const length = Number((head.find((h) => /^content-length:/i.test(h)) || ':0').split(':')[1]) || 0;
        if (buf.length < end + 4 + length) return;
        buf = buf.subarray(end + 4 + length);
        const reply = (status, payload) =>
          conn.write(
            `HTTP/1.1 ${status} ${status === 200 ? 'OK' : 'Error'}\r\nContent-Type: application/json\r\n` +
              `Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`,
            () => status === 200 && served(),
          );
        if (String(target).split('?')[0] !== '/logs') reply(404, errorBody(`no such endpoint: ${target}`));
        else if (method !== 'POST') reply(405, errorBody(`${method} is not allowed on ${target}`));
        else sofar(([frag, truncated]) => reply(200, `{"logs":[${frag}],"truncated":${truncated}}`));
      }
    });
  });
}

function isoNow(base) {
  const ns = base + process.hrtime.bigint();
  const iso = new Date(Number(ns / 1000000n)).toISOString();
  return `${iso.slice(0, 19)}.${String(ns % 1000000000n).padStart(9, '0')}Z`;
}

class LogCollector {
  constructor(limit, nonce, sources) {
    this.limit = limit;
    // The nonce keeps an action from ending its own log by printing the sentinel; the epoch tells this
    // activation's sentinels from late ones of an activation whose collection timed out.
    this.marker = Buffer.from(`${SENTINEL}-${nonce}-`);
    this.base = BigInt(Date.now()) * 1000000n - process.hrtime.bigint(); // wall clock + monotonic ns
    this.epoch = 0;
    this.parts = [];
    this.used = 0;
    this.truncated = false;
    this.sealed = new Map(); // epoch -> [frag, truncated], until the server asks
    this.waiting = new Map(); // epoch -> {callback, timer}
    this.streams = ['stdout', 'stderr'].map((name, i) => ({
      name,
      source: sources[i],
      partial: null, // the start of a line whose newline has not been read yet
      done: false, // this activation's sentinel was read; what follows belongs to the next one
      held: [],
    }));
  }

  request(epoch, callback) {
    const ready = this.sealed.get(epoch);
    if (ready) {
      this.sealed.delete(epoch);
      callback(ready[0], ready[1]);
      return;
    }
    const timer = setTimeout(() => {
      if (this.epoch === epoch) this.seal(LOG_FAILURE);
    }, LOG_WAIT_MS);
    this.waiting.set(epoch, { callback, timer });
  }

  feed(index, data) {
    const s = this.streams[index];
    const buf = s.partial ? Buffer.concat([s.partial, data]) : data;
    s.partial = null;
    const end = buf.length;
    let pos = 0;
    while (pos < end) {
      if (s.done) {
        s.held.push(buf.subarray(pos));
        return;
      }
      if (this.truncated) {
        // only the sentinel matters now: find it without splitting lines
        const at = buf.indexOf(this.marker, pos);
        if (at < 0) {
          s.partial = Buffer.from(buf.subarray(Math.max(pos, end - this.marker.length)));
          return;
        }
        pos = at;
      }
      const newline = buf.indexOf(10, pos);
      if (newline < 0) {
        this.keepPartial(s, buf.subarray(pos));
        return;
      }
      this.line(s, buf, pos, newline);
      pos = newline + 1;
    }
  }

  keepPartial(s, rest) {
    // Cut a line without a newline into MAX_LINE pieces, but keep enough of its end that a sentinel arriving
    // right behind it is never cut.
    const keep = this.marker.length + 24;
    let start = 0;
    while (rest.length - start > MAX_LINE + keep) {
      this.line(s, rest, start, start + MAX_LINE);
      start += MAX_LINE;
    }
    s.partial = Buffer.from(rest.subarray(start));
  }

  line(s, buf, start, end) {
    const at = buf.indexOf(this.marker, start);
    if (at < 0 || at >= end) {
      this.emit(s, buf, start, end);
      return;
    }
    if (at > start) this.emit(s, buf, start, at); // output without a final newline, then the sentinel
    const digits = buf.toString('latin1', at + this.marker.length, end);
    if (/^\d+$/.test(digits) && Number(digits) === this.epoch) {
      s.done = true;
      s.source.pause(); // what follows belongs to the next activation: let it wait in the pipe
      if (this.streams.every((t) => t.done)) this.seal(null);
    }
  }

  emit(s, buf, start, end) {
    for (let from = start; from < end || from === start; from += MAX_LINE) {
      if (this.truncated) return;
      const text = buf.toString('utf8', from, Math.min(end, from + MAX_LINE)).replace(JAVA_TRIM, '');
      const encoded = JSON.stringify(`${isoNow(this.base)} ${s.name}: ${text}`);
      const weight = Buffer.byteLength(encoded) - 1; // without its quotes, plus a newline
      if (this.used + weight > this.limit) {
        this.truncated = true;
        return;
      }
      this.used += weight;
      this.parts.push(encoded);
    }
  }

  // The current activation's lines so far, once the output already in the pipes is read: the action may be stuck
  // for good, so no sentinel is awaited (OpenWhisk, too, reads a failed container's log without them).
  sofar(callback) {
    setTimeout(() => {
      const parts = this.parts.slice();
      for (const s of this.streams) {
        if (s.partial && s.partial.length && !this.truncated) {
          parts.push(JSON.stringify(`${isoNow(this.base)} ${s.name}: ${s.partial.toString('utf8').replace(JAVA_TRIM, '')}`));
        }
      }
      if (this.truncated) parts.push(JSON.stringify(`${isoNow(this.base)} stderr: ${truncatedMessage(this.limit)}`));
      callback([parts.join(','), this.truncated]);
    }, SOFAR_WAIT_MS);
  }

  seal(failure) {
    if (this.truncated) this.parts.push(JSON.stringify(`${isoNow(this.base)} stderr: ${truncatedMessage(this.limit)}`));
    if (failure) this.parts.push(JSON.stringify(`${isoNow(this.base)} stderr: ${failure}`));
    const epoch = this.epoch;
    const result = [this.parts.join(','), this.truncated];
    this.parts = [];
    this.used = 0;
    this.truncated = false;
    this.epoch += 1;
    const waiter = this.waiting.get(epoch);
    if (waiter) {
      this.waiting.delete(epoch);
      clearTimeout(waiter.timer);
      waiter.callback(result[0], result[1]);
    } else {
      this.sealed.set(epoch, result);
    }
    this.streams.forEach((s, i) => {
      s.done = false;
      const held = s.held;
      s.held = [];
      held.forEach((chunk) => this.feed(i, chunk));
      s.source.resume();
    });
  }
}

// --- server: HTTP on the Unix socket, and the action -------------------------------------------------------

function server(nonce, channel, doorOpened, awaitHandOver = () => {}) {
  const fs = require('fs');
  const http = require('http');
  const socketPath = process.env.SQUALL_PROXY_SOCKET || DEFAULT_SOCKET;
  for (const name of [ROLE, NONCE, FIFOS, 'SQUALL_PROXY_SOCKET', 'SQUALL_LOG_LIMIT_BYTES']) delete process.env[name];

  // Blocking writes keep a flooding action from queueing its output in memory: it waits for the collector.
  for (const stream of [process.stdout, process.stderr]) {
    if (stream._handle && typeof stream._handle.setBlocking === 'function') stream._handle.setBlocking(true);
  }
  // The sentinels go through the original writers, after anything the action queued on the same streams.
  const writeOut = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  const marker = `${SENTINEL}-${nonce}-`;
  const action = new Action();
  const pendingLogs = new Map();
  let logEpoch = 0;

  channel.onMessage((msg) => {
    const resolve = msg && msg.op === 'logs' && pendingLogs.get(msg.epoch);
    if (resolve) {
      pendingLogs.delete(msg.epoch);
      resolve(msg);
    }
  });
  action.onLimit = (bytes) => channel.send({ op: 'limit', bytes });

  function fetchLogs() {
    const epoch = logEpoch++;
    const line = `${marker}${epoch}\n`;
    writeOut(line);
    writeErr(line);
    return new Promise((resolve) => {
      pendingLogs.set(epoch, resolve);
      channel.send({ op: 'logs', epoch });
    }).then((msg) => [200, `{"logs":[${msg.frag}],"truncated":${msg.truncated ? 'true' : 'false'}}`]);
  }

  const routes = { '/init': (body) => action.init(body), '/run': (body) => action.run(body), '/logs': fetchLogs };
  // One request at a time, whatever the connection: a run's /logs, pipelined after its /run, waits for it.
  let queue = Promise.resolve();

  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      const path = req.url.split('?')[0];
      const route = routes[path];
      queue = queue
        .then(() => {
          if (!route) return [404, errorBody(`no such endpoint: ${req.url}`)];
          if (req.method !== 'POST') return [405, errorBody(`${req.method} is not allowed on ${req.url}`)];
          return route(body);
        })
        .catch((err) => [500, errorBody(`proxy error: ${err && err.stack ? err.stack : err}`)])
        .then(([status, payload]) => {
          res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) });
          res.end(payload);
        });
    });
  });
  // The invoker keeps one connection per container for as long as the container lives.
  noTimeouts(srv);
  // An action's process.exit() (OpenWhisk's initexit.js) would take the lines it printed with it: first the
  // invoker is told the action ended (its connection closes now), then the exit waits until the side door has
  // answered (singleProcess: the worker serves it while this thread waits; the launcher waits by itself).
  const conns = new Set();
  srv.on('connection', (socket) => {
    conns.add(socket);
    socket.on('close', () => conns.delete(socket));
  });
  let handingOver = false;
  process.exit = function exit(code) {
    if (!handingOver) {
      handingOver = true;
      for (const socket of conns) socket.destroy();
      awaitHandOver(HANDOVER_MS);
    }
    return realExit(code);
  };
  // An exception nothing catches (thrown in a timer or a callback, or a rejection nobody handles) ends the process,
  // as in OpenWhisk's runtime; its report goes to the action's stderr like Node.js's own, and the lines go with
  // the hand-over above.
  process.on('uncaughtException', (error) => {
    writeErr(`${error && error.stack ? error.stack : `Uncaught ${String(error)}`}\n`);
    process.exit(1);
  });

  // After the side door (singleProcess; the launcher opens it before it starts this process): the invoker locks
  // the socket directory once this socket appears.
  Promise.resolve(doorOpened).then(() => listenAt(srv, socketPath, () => {}));
}

function noTimeouts(srv) {
  srv.keepAliveTimeout = 0;
  srv.requestTimeout = 0;
  srv.headersTimeout = 0;
  srv.timeout = 0;
}

// Bind and listen under a temporary name, then rename: the socket appears only once it accepts.
function listenAt(srv, socketPath, then) {
  const fs = require('fs');
  const temporary = `${socketPath}.${process.pid}.tmp`;
  try {
    fs.unlinkSync(temporary);
  } catch (_) {
    // not there: the usual case
  }
  srv.listen(temporary, () => {
    fs.chmodSync(temporary, 0o666);
    fs.renameSync(temporary, socketPath);
    then();
  });
}

function errorBody(message) {
  return JSON.stringify({ error: String(message) });
}

class Action {
  constructor() {
    this.handler = undefined;
    this.stopped = false; // OpenWhisk's Node.js runtime: no more init or run after a failed init or a throw
    this.runEnv = new Set();
    this.onLimit = () => {};
  }

  async init(body) {
    if (this.handler !== undefined) return [403, errorBody('Cannot initialize the action more than once.')];
    if (this.stopped) return [403, errorBody('System not ready, status is stopped.')];
    let message;
    try {
      message = JSON.parse(body);
    } catch (e) {
      return [400, errorBody(`Error unmarshaling request: ${e.message}`)];
    }
    const value = message && typeof message.value === 'object' && message.value ? message.value : {};
    const main = typeof value.main === 'string' && value.main ? value.main : 'main';
    if (typeof value.code !== 'string' || !value.code) return [403, errorBody('Missing main/no code to execute.')];
    this.exportInitEnv(value.env);
    try {
      this.handler = await initializeHandler(value, main);
      return [200, '{"ok":true}'];
    } catch (error) {
      console.error('Error during initialization:', error);
      this.stopped = true;
      const detail = error && error.stack ? String(error.stack) : error;
      return [502, errorBody(`Initialization has failed due to: ${detail}`)];
    }
  }

  exportInitEnv(env) {
    if (!env || typeof env !== 'object') return;
    for (const key of Object.keys(env)) {
      const val = env[key];
      const text = typeof val !== 'object' || val === null ? (val ? val.toString() : '') : JSON.stringify(val);
      if (key === 'SQUALL_LOG_LIMIT_BYTES') this.onLimit(parseLimit(text, DEFAULT_LOG_LIMIT));
      else process.env[key] = text;
    }
  }

  async run(body) {
    if (this.stopped) return [403, errorBody('System not ready, status is stopped.')];
    if (this.handler === undefined) return [500, errorBody('no action defined yet')];
    let message;
    try {
      message = JSON.parse(body);
    } catch (e) {
      return [400, errorBody(`Error unmarshaling request: ${e.message}`)];
    }
    if (!message || typeof message !== 'object') return [400, errorBody('Error unmarshaling request: not an object')];
    let value = message.value;
    if (value === null || value === undefined) {
      value = {};
    } else if (typeof value !== 'object') {
      const msg = `Internal system error: the argument must be a dictionary but has type '${typeof value}'.`;
      return [403, errorBody(msg)];
    }
    this.exportRunEnv(message);
    let result;
    try {
      result = this.handler(value);
    } catch (error) {
      console.error(error);
      this.stopped = true;
      return [502, errorBody(`An error has occurred: ${error}`)];
    }
    try {
      result = await result;
    } catch (error) {
      // A rejected Promise is an application error, serialized as OpenWhisk's runtime does.
      result = { error: error ? serializeError(error) : {} };
    }
    if (result === undefined) result = {};
    if (typeof result !== 'object') {
      console.error(`Result must be of type object but has type "${typeof result}":`, result);
      return [502, errorBody('The action did not return a dictionary.')];
    }
    let text;
    try {
      text = JSON.stringify(result);
    } catch (error) {
      console.error(error);
      return [502, errorBody('The action did not return a dictionary.')];
    }
    return text === undefined ? [502, errorBody('The action did not return a dictionary.')] : [200, text];
  }

  exportRunEnv(message) {
    const exported = new Set();
    for (const key of Object.keys(message)) {
      if (key === 'value' || typeof message[key] !== 'string') continue;
      const name = `__OW_${key.toUpperCase()}`;
      process.env[name] = message[key];
      exported.add(name);
    }
    for (const name of this.runEnv) if (!exported.has(name)) delete process.env[name];
    if (!exported.has('__OW_API_KEY')) delete process.env.__OW_API_KEY;
    this.runEnv = exported;
  }
}

async function initializeHandler(value, main) {
  const fs = require('fs');
  const path = require('path');
  if (value.binary) {
    const dir = fs.mkdtempSync(path.join(process.cwd(), 'action-'));
    try {
      unzip(Buffer.from(value.code, 'base64'), dir);
    } catch (error) {
      console.error(`Cannot extract the action archive: ${error && error.message ? error.message : error}`);
      throw 'There was an error uncompressing the action archive.';
    }
    const parts = splitMainHandler(main);
    if (parts === undefined) throw 'Name of main function is not valid.';
    const [index, name] = parts;
    process.chdir(dir);
    if (index === undefined && !fs.existsSync('package.json') && !fs.existsSync('index.js')) {
      throw 'Zipped actions must contain either package.json or index.js at the root.';
    }
    const exported = require(index === undefined ? dir : path.join(dir, index));
    return assertFunction(new Function('exported', `return exported.${name}`)(exported), main);
  }
  const vm = require('vm');
  const { createRequire } = require('module');
  const filename = path.join(process.cwd(), 'action.js');
  // OpenWhisk evaluates the code in a function that returns `main`, falling back to (module.)exports.main.
  const body =
    `${value.code}\n;try { return ${main}; } catch (e) { if (e.name === 'ReferenceError') ` +
    `{ return module.exports.${main} || exports.${main}; } throw e; }`;
  const factory = vm.compileFunction(body, ['exports', 'require', 'module', '__filename', '__dirname'], { filename });
  const mod = { exports: {} };
  const handler = factory.call(mod.exports, mod.exports, createRequire(filename), mod, filename, process.cwd());
  return assertFunction(handler, main);
}

function assertFunction(handler, name) {
  if (typeof handler !== 'function') throw `Action entrypoint '${name}' is not a function.`;
  return handler;
}

// "index.main" → ["index", "main"]; "main" → [undefined, "main"] (openwhisk-runtime-nodejs runner.js).
function splitMainHandler(handler) {
  const matches = handler.match(/^([^.]+)$|^([^.]+)\.(.+)$/);
  return matches ? [matches[2], matches[3] || matches[1]] : undefined;
}

// serialize-error, as OpenWhisk's runtime uses it: own enumerable properties plus name/message/stack/code,
// circular references as "[Circular]", functions dropped.
function serializeError(value) {
  if (typeof value === 'function') return `[Function: ${value.name || 'anonymous'}]`;
  if (typeof value !== 'object' || value === null) return value;
  return destroyCircular(value, []);
}

function destroyCircular(from, seen) {
  const to = Array.isArray(from) ? [] : {};
  seen.push(from);
  for (const [key, val] of Object.entries(from)) {
    if (typeof val === 'function') continue;
    if (!val || typeof val !== 'object') to[key] = val;
    else if (!seen.includes(val)) to[key] = destroyCircular(val, seen.slice());
    else to[key] = '[Circular]';
  }
  for (const prop of ['name', 'message', 'stack', 'code']) {
    if (typeof from[prop] === 'string') to[prop] = from[prop];
  }
  return to;
}

// A zip reader for stored and deflated entries (Node.js 18 has no unzip), refusing paths out of `dir`.
function unzip(buf, dir) {
  const fs = require('fs');
  const path = require('path');
  const zlib = require('zlib');
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('not a zip archive');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  if (count === 0xffff || p === 0xffffffff) throw new Error('zip64 archives are not supported');
  const root = path.resolve(dir);
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error('corrupt central directory');
    const flags = buf.readUInt16LE(p + 8);
    const method = buf.readUInt16LE(p + 10);
    const compressedSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLength = buf.readUInt16LE(p + 28);
    const mode = buf.readUInt32LE(p + 38) >>> 16;
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLength);
    p += 46 + nameLength + buf.readUInt16LE(p + 30) + buf.readUInt16LE(p + 32);
    if (flags & 1) throw new Error(`${name} is encrypted`);
    const target = path.resolve(root, name);
    if (target !== root && !target.startsWith(root + path.sep)) throw new Error(`${name} points outside the archive`);
    if (name.endsWith('/')) {
      fs.mkdirSync(target, { recursive: true });
      continue;
    }
    if ((mode & 0o170000) === 0o120000) continue; // symbolic links are not extracted
    if (buf.readUInt32LE(local) !== 0x04034b50) throw new Error(`corrupt entry ${name}`);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const data = buf.subarray(start, start + compressedSize);
    let content;
    if (method === 0) content = data;
    else if (method === 8) content = zlib.inflateRawSync(data);
    else throw new Error(`${name} uses compression method ${method}`);
    if (content.length !== size) throw new Error(`${name} has the wrong size`);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, content, { mode: mode & 0o777 || 0o644 });
  }
}

const threads = require('worker_threads');
if (!threads.isMainThread) {
  fifoCollector(threads.workerData);
} else if (process.env[ROLE] === 'server') {
  process.on('disconnect', () => realExit(1)); // the launcher is gone
  server(process.env[NONCE], { send: (msg) => process.send(msg), onMessage: (handler) => process.on('message', handler) });
} else if (process.env[FIFOS]) {
  singleProcess(process.env[FIFOS]);
} else {
  launcher();
}
