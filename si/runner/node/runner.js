'use strict';
// The Node.js runner: one detached process per instance of a JavaScript sequence.
//
//     node runner.js <instance dir>
//
// Started exactly like the Python runner (si/runner/process.py): its own session, fd 0 =
// /dev/null, fd 1/2 = the instance's stdout/stderr files, fd 3 = a listening Unix socket. It
// records who it is in runner.json, serves the link to whichever hub connects and proves the
// token (a newer connection replaces an older one, so a restarted hub just dials again), runs
// the sequence, and on exit writes output.tail and exit.json so that a hub that comes back
// later still serves the output nobody read. No npm dependencies: only Node's own modules.

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { Readable } = require('node:stream');
const { pathToFileURL } = require('node:url');

const { AppContext, Logger, SegmentWriter } = require('./context.js');
const { Channel, DEFAULT_WINDOW, Link, LinkError, ReadSlab } = require('./link.js');
const {
  BINARY,
  InputStream,
  encodeValue,
  encoderFor,
  encodeRaw,
  isIterable,
  isReadable,
  mediaType,
} = require('./streams.js');

// The message codes, exit codes and instance-directory file names, as the Python side defines
// them (si/protocol/codes.py, si/protocol/instance_dir.py), from the file written from those.
const CONTRACT = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'protocol', 'contract.json'), 'utf8'),
);
const FILES = CONTRACT.files;

const {
  COMPLETED: EXIT_COMPLETED,
  INVALID_PATH: EXIT_INVALID_PATH,
  FAILED_ON_START: EXIT_FAILED_ON_START,
  FAILED_DURING_EXECUTION: EXIT_FAILED_DURING_EXECUTION,
  KILLED: EXIT_KILLED,
  STOPPED: EXIT_STOPPED,
} = CONTRACT.exitCodes;
const { PING, MONITORING, SEQUENCE_STOPPED, ALIVE, PANG, STOP, KILL, MONITORING_RATE, EVENT } =
  CONTRACT.codes;

// How long an older hub connection may take to reach its end once a newer hub connected.
const OLD_CONNECTION_GRACE_MS = 2000;

// Output is gathered into batches of about this size before a frame is sent: per-frame costs
// are paid per batch, not per line, while a slow generator is still flushed at once (the flush
// runs whenever the sequence yields to the event loop).
const OUTPUT_BATCH = 64 * 1024;
// Messages (events, stop notices) a runner may hold for an absent hub; beyond this emit drops.
const MONITORING_WINDOW = 1 << 20;
// How long a finishing runner waits for its last bytes to leave the socket.
const DRAIN_TIMEOUT_MS = 500;
const HEARTBEAT_MS = 1000;
const SCHEMA_VERSION = 1;

class SequenceLoadError extends Error {
  constructor(exitCode, message) {
    super(message);
    this.exitCode = exitCode;
  }
}

// -- files ---------------------------------------------------------------------------------

/**
 * Write `body` plus the schema version so readers see the old file or the new, never half.
 * `durable`: fsync first, so that a machine crash cannot leave an empty file behind the name.
 */
function writeJsonAtomic(file, body, durable = true) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ schema: SCHEMA_VERSION, ...body }, null, 1));
    if (durable) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** pid + start time (field 22 of /proc/self/stat) + boot id: an identity pid reuse cannot fake. */
function processIdentity() {
  const stat = fs.readFileSync('/proc/self/stat', 'latin1');
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  let bootId = '';
  try {
    bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // not Linux: the pid and start time still identify the process
  }
  return { pid: process.pid, start_time: Number(fields[19]), boot_id: bootId };
}

// -- the sequence --------------------------------------------------------------------------

/**
 * `import(url)`. Code compiled into a startup snapshot has no dynamic-import callback (it fails
 * with ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), so a runner booted from one imports through a
 * function compiled now with Node's default loader. (Modules the sequence itself loads are
 * compiled at run time and import as usual.)
 */
async function importModule(url) {
  if (!bootedFromSnapshot) return import(url);
  const vm = require('node:vm');
  const emitWarning = process.emitWarning;
  process.emitWarning = () => {}; // "USE_MAIN_CONTEXT_DEFAULT_LOADER is experimental", once
  let load;
  try {
    load = vm.compileFunction('return import(url)', ['url'], {
      importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
    });
  } finally {
    process.emitWarning = emitWarning;
  }
  return load(url);
}

// Set by the snapshot's main function (snapshot.js) before anything else runs.
let bootedFromSnapshot = false;

/**
 * Load the sequence's main file as STH's Node runner does; returns its functions and the
 * optional topic declaration that may lead an exported array. Throws SequenceLoadError.
 */
async function loadSequence(sequenceDir, entry) {
  const file = path.resolve(sequenceDir, entry);
  let isFile = false;
  try {
    isFile = fs.statSync(file).isFile();
  } catch {
    // reported below
  }
  if (!isFile) {
    throw new SequenceLoadError(
      EXIT_INVALID_PATH,
      `Sequence entrypoint path ${entry} is invalid. Check \`main\` field in package.json`,
    );
  }
  // The package's own node_modules resolve from the file's directory upwards, as require does.
  process.chdir(sequenceDir);
  let exported;
  try {
    try {
      // Its own require, not the runner's: a runner booted from a startup snapshot has only
      // the built-in modules in its own (see snapshot.js).
      exported = require('node:module').createRequire(file)(file);
    } catch (error) {
      if (!error || error.code !== 'ERR_REQUIRE_ESM') throw error;
      exported = await importModule(pathToFileURL(file).href); // an ES module package
    }
  } catch (error) {
    process.stderr.write(`${(error && error.stack) || error}\n`);
    const summary = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new SequenceLoadError(
      EXIT_FAILED_ON_START,
      `Sequence failed on start: ${summary.split('\n')[0]}`,
    );
  }
  // `export default` compiled by TypeScript or an ES module: take the default export.
  if (
    exported &&
    typeof exported === 'object' &&
    !Array.isArray(exported) &&
    'default' in exported
  ) {
    exported = exported.default;
  }
  const parts = Array.isArray(exported) ? [...exported] : [exported];
  let declaration = null;
  if (parts.length && parts[0] && typeof parts[0] === 'object') declaration = parts.shift();
  if (!parts.length || !parts.every((part) => typeof part === 'function')) {
    throw new SequenceLoadError(
      EXIT_FAILED_ON_START,
      `Sequence failed on start: ${entry} must export a function or an array of functions`,
    );
  }
  return { functions: parts, declaration };
}

/** One buffer of a batch of strings (encoded once) and buffers. */
function joinBatch(parts) {
  if (parts.every((part) => typeof part === 'string')) return Buffer.from(parts.join(''));
  if (parts.length === 1) return parts[0];
  return Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : part)));
}

/** What one function of a chain hands the next: a stream the next can read, pipe or iterate. */
function asStream(result) {
  if (!isIterable(result) || isReadable(result)) return result;
  const stream = Readable.from(result, { objectMode: true });
  if (result.contentType) stream.contentType = result.contentType; // the output rule reads it
  return stream;
}

// -- the runner ----------------------------------------------------------------------------

class Runner {
  constructor(instanceDir, spawn) {
    this.instanceDir = instanceDir;
    this.spawn = spawn;
    this.instanceId = spawn.instance_id;
    this.link = new Link(
      'runner',
      this.instanceId,
      Buffer.from(spawn.token, 'hex'),
      [
        [Channel.MONITORING, MONITORING_WINDOW],
        [Channel.OUTPUT, DEFAULT_WINDOW],
      ],
      [
        [Channel.STDIN, DEFAULT_WINDOW],
        [Channel.CONTROL, DEFAULT_WINDOW],
        [Channel.INPUT, DEFAULT_WINDOW],
      ],
    );
    this.socket = null;
    this.input = new InputStream((n) => this.consumed(Channel.INPUT, n));
    // POST /stdin arrives here; the sequence reads it as process.stdin (STH's Node runner).
    this.stdin = new InputStream((n) => this.consumed(Channel.STDIN, n), BINARY, {
      objectMode: false,
    });
    this.context = null;
    this.batch = [];
    this.batchSize = 0;
    this.flushScheduled = false;
    this.ackFlushScheduled = false;
    this.windowWaiters = [];
    this.ending = false;
    this.finishing = false;
    this.stopRequested = false;
    this.heartbeatTimer = null;
    this.heartbeatBusy = false;
    this.waiting = null; // a newer hub's connection, until the current one has ended
    this.waitingData = [];
  }

  // -- connection ------------------------------------------------------------------------

  /**
   * A hub connected. If an older connection is still open it is read to its end first:
   * bytes the old hub wrote before it died are still in that socket, and the handshake on
   * the new connection must report them as received.
   */
  attach(accepted) {
    const socket = readingIntoSlabs(accepted, (data) => this.receive(socket, data));
    readPastFailedWrites(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.detach(socket));
    socket.on('error', () => {}); // 'close' follows; the hub dials again
    if (!this.socket) {
      this.activate(socket);
      return;
    }
    if (this.waiting) this.waiting.destroy(); // a newer hub supersedes a waiting one
    this.waiting = socket;
    this.waitingData = [];
    const old = this.socket;
    const timer = setTimeout(() => {
      if (this.socket === old && this.waiting) old.destroy(); // it did not end in time
    }, OLD_CONNECTION_GRACE_MS);
    timer.unref();
  }

  activate(socket) {
    this.socket = socket;
    this.link.connectionMade({ pid: process.pid });
    this.flushSocket();
  }

  detach(socket) {
    if (socket === this.waiting) {
      this.waiting = null;
      return;
    }
    if (socket !== this.socket) return;
    this.socket = null;
    this.link.connectionLost();
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting && !waiting.destroyed) {
      this.activate(waiting);
      for (const data of this.waitingData) this.receive(waiting, data);
    }
    this.waitingData = [];
  }

  receive(socket, data) {
    if (socket === this.waiting) {
      this.waitingData.push(data); // its handshake waits for the old connection to end
      return;
    }
    if (socket !== this.socket) return;
    let events;
    try {
      events = this.link.receiveData(data);
    } catch (error) {
      if (!(error instanceof LinkError)) throw error;
      process.stderr.write(`dropping hub connection: ${error.message}\n`);
      socket.destroy();
      return;
    }
    for (const event of events) {
      if (event.type === 'data') this.onData(event.channel, event.data);
      else if (event.type === 'window' && event.channel === Channel.OUTPUT) this.windowOpened();
      else if (event.type === 'ended' && event.channel === Channel.INPUT) this.input.end();
      else if (event.type === 'ended' && event.channel === Channel.STDIN) this.stdin.end();
      // 'established' needs nothing: the link resends what the hub lacks; 'message': the hub
      // sends no unnumbered messages a runner must act on.
    }
    this.flushSocket();
  }

  /** Write what the link queued; a large batch goes out without being copied together. */
  flushSocket() {
    const pending = this.link.takePending();
    const socket = this.socket;
    if (!pending.length || !socket || socket.destroyed) return;
    socket.cork();
    for (const buffer of pending) socket.write(buffer);
    socket.uncork();
  }

  consumed(channel, nbytes) {
    this.link.consume(channel, nbytes);
    this.flushSocket();
  }

  onData(channel, data) {
    if (channel === Channel.INPUT) {
      this.input.feed(data);
    } else if (channel === Channel.CONTROL) {
      this.link.consume(channel, data.length);
      let message;
      try {
        message = JSON.parse(data.toString('utf8'));
      } catch {
        process.stderr.write('ignoring a malformed control message\n');
        return;
      }
      this.onControl(message);
    } else if (channel === Channel.STDIN) {
      this.stdin.feed(data);
    }
  }

  onControl(message) {
    if (!Array.isArray(message)) return;
    const [code, body = {}] = message;
    if (code === KILL) {
      if (this.context) this.context.runKillHandlers();
      // STH: a kill after a stop request ends the instance as stopped.
      if (this.stopRequested) this.finish(EXIT_STOPPED, 'Instance stopped');
      else this.finish(EXIT_KILLED, 'Instance killed');
    } else if (code === STOP) {
      this.stop(body);
    } else if (code === EVENT && this.context) {
      this.context.dispatchEvent(body.eventName || '', body.message);
    } else if (code === MONITORING_RATE) {
      const rate = Number(body.monitoringRate);
      this.startHeartbeat(rate > 0 ? 1000 / rate : HEARTBEAT_MS);
    }
  }

  async stop(body) {
    const timeout = Number.isFinite(body.timeout) ? body.timeout : 7000;
    const canCallKeepalive = Boolean(body.canCallKeepalive);
    this.stopRequested = true;
    if (this.context) {
      this.context.keepAliveRequested = false;
      try {
        await this.context.runStopHandlers(timeout, canCallKeepalive);
      } catch (error) {
        process.stderr.write(`stop handler failed: ${(error && error.stack) || error}\n`);
      }
      if (canCallKeepalive && this.context.keepAliveRequested) return;
    }
    this.sendMonitoring([SEQUENCE_STOPPED, {}]);
    this.finish(EXIT_STOPPED, 'Instance stopped');
  }

  // -- to the hub ------------------------------------------------------------------------

  sendMonitoring(message) {
    if (this.link.writable(Channel.MONITORING) <= 0) {
      process.stderr.write(`hub absent too long: dropping message ${message[0]}\n`);
      return;
    }
    this.link.sendJson(Channel.MONITORING, message);
    this.flushSocket();
  }

  /**
   * Tell the hub a topic this instance provides or requires (STH's PANG). Recorded first in
   * declared.json, as the Python runner does: a sequence may end before any hub connected (a
   * fast producer started on a warm spare), and then the message alone would be lost with
   * the runner, while the hub reads the file once it sees the runner gone.
   */
  declareTopic(key, name, contentType) {
    const file = path.join(this.instanceDir, FILES.declared);
    let declared = {};
    try {
      declared = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch {
      // none yet
    }
    const declaration = { [key]: String(name), contentType: String(contentType) };
    delete declared.schema;
    writeJsonAtomic(file, { ...declared, [key]: declaration });
    this.sendMonitoring([PANG, declaration]);
  }

  emitEvent(eventName, message) {
    this.sendMonitoring([EVENT, { eventName, message }]);
  }

  sendAlive(milliseconds) {
    this.sendMonitoring([ALIVE, { keepAlive: milliseconds }]);
  }

  startHeartbeat(intervalMs) {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => this.heartbeat(), intervalMs);
  }

  async heartbeat() {
    if (this.heartbeatBusy) return; // a slow monitoring handler: skip beats, never pile up
    this.heartbeatBusy = true;
    try {
      const health = this.context ? await this.context.health() : { healthy: true };
      if (this.link.sendMessage([MONITORING, health])) this.flushSocket();
    } finally {
      this.heartbeatBusy = false;
    }
  }

  // -- output ----------------------------------------------------------------------------

  windowOpened() {
    this.flushBatch();
    const waiters = this.windowWaiters;
    this.windowWaiters = [];
    for (const resolve of waiters) resolve();
  }

  flushBatch() {
    this.flushScheduled = false;
    if (!this.batch.length || this.link.writable(Channel.OUTPUT) <= 0) return;
    const data = joinBatch(this.batch);
    this.batch = [];
    this.batchSize = 0;
    this.link.send(Channel.OUTPUT, data);
    this.flushSocket();
  }

  /** Queue encoded output (a string or bytes); true when the batch is full and must be written. */
  addOutput(data) {
    if (!data || !data.length) return false;
    this.batch.push(data);
    this.batchSize += data.length;
    if (this.batchSize >= OUTPUT_BATCH) return true;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushBatch());
    }
    return false;
  }

  /** Write the batch, waiting while the OUTPUT window is full: the source is not pulled then. */
  async writeBatchWhenPossible() {
    while (this.batch.length) {
      if (this.link.writable(Channel.OUTPUT) <= 0) {
        await new Promise((resolve) => this.windowWaiters.push(resolve));
        continue;
      }
      this.flushBatch();
    }
    // Let control messages and acknowledgements in between batches of a tight generator.
    await new Promise(setImmediate);
  }

  async pumpOutput(result) {
    if (isReadable(result) || isIterable(result)) {
      let encode = null;
      for await (const item of result) {
        if (this.ending) break;
        encode = encode || encoderFor(result);
        const data =
          encode === encodeRaw && typeof item === 'string'
            ? this.input.rawOf(item) || item
            : encode(item);
        if (this.addOutput(data)) await this.writeBatchWhenPossible();
      }
    } else {
      this.addOutput(encodeValue(result));
    }
    await this.endOutput();
  }

  async endOutput() {
    await this.writeBatchWhenPossible();
    this.link.end(Channel.OUTPUT);
    this.flushSocket();
  }

  // -- lifecycle -------------------------------------------------------------------------

  async run(sequence) {
    const { functions, declaration } = sequence;
    const writer = new SegmentWriter(path.join(this.instanceDir, FILES.log), {
      segmentBytes: Number(this.spawn.log_segment_bytes) || undefined,
      keep: Number(this.spawn.log_keep) || undefined,
    });
    const logger = new Logger(writer, this.instanceId);
    this.context = new AppContext(this, { ...(this.spawn.app_config || {}) }, logger);
    if (declaration && declaration.requires && declaration.contentType) {
      this.input.setContentType(declaration.contentType);
      this.declareTopic('requires', declaration.requires, declaration.contentType);
    }
    Object.defineProperty(process, 'stdin', {
      value: this.stdin,
      configurable: true,
      enumerable: true,
    });
    const args = this.spawn.args || [];
    try {
      let stream = this.input;
      let result;
      for (let index = 0; index < functions.length; index++) {
        result = functions[index].call(this.context, stream, ...args);
        if (result && typeof result.then === 'function') result = await result;
        if (index < functions.length - 1) {
          if (result === undefined || result === null) {
            throw new Error(
              `function ${index} of the sequence returned nothing: the chain ended prematurely`,
            );
          }
          stream = asStream(result);
        }
      }
      if (this.ending) return; // context.end() already ended the output
      if (result && result.topic && result.contentType && mediaType(result.contentType)) {
        this.declareTopic('provides', result.topic, result.contentType);
      }
      await this.pumpOutput(result);
    } catch (error) {
      this.fail(error);
      return;
    }
    this.finish(EXIT_COMPLETED, 'Instance completed');
  }

  /** context.end(): stop pulling output, end it, complete the instance. */
  async endSequence() {
    if (this.ending) return;
    this.ending = true;
    await this.endOutput();
    this.finish(EXIT_COMPLETED, 'Instance completed');
  }

  fail(error) {
    process.stderr.write(`${(error && error.stack) || error}\n`);
    this.finish(EXIT_FAILED_DURING_EXECUTION, 'Sequence failed during execution');
  }

  /** Record how the instance ended and what output the hub had not consumed, then exit. */
  finish(code, reason) {
    if (this.finishing) return;
    this.finishing = true;
    clearInterval(this.heartbeatTimer);
    try {
      this.recordExit(code, reason);
    } catch (error) {
      // Exit all the same: the keeper's wait.json still tells the hub how the runner ended.
      process.stderr.write(`cannot record the exit: ${(error && error.stack) || error}\n`);
    }
    this.drainThenExit(code);
  }

  recordExit(code, reason) {
    const output = this.link.outbound.get(Channel.OUTPUT);
    const base = output.acked;
    const unconsumed = output.replay.map(([offset, payload]) =>
      payload.subarray(Math.max(0, base - offset)),
    );
    fs.writeFileSync(path.join(this.instanceDir, FILES.output_tail), Buffer.concat(unconsumed), {
      mode: 0o600,
    });
    writeJsonAtomic(path.join(this.instanceDir, FILES.exit), {
      code,
      reason,
      output: { base, end: output.nextOffset, ended: output.ended },
      time: Date.now() / 1000,
    });
  }

  /**
   * Exit once a connected hub has what was written: the handshake done (a hub that dialled as
   * the sequence finished then gets PING and output over the link, not from output.tail) and
   * the socket drained. Bounded: a hub that does not answer is not waited for.
   */
  drainThenExit(code) {
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    const check = () => {
      const socket = this.socket;
      const delivered =
        !socket || socket.destroyed || (this.link.established && socket.writableLength === 0);
      if (delivered || Date.now() >= deadline) process.exit(code);
      setTimeout(check, 2);
    };
    check();
  }
}

/**
 * The hub's connections arrive paused (see readingIntoSlabs), on the listener the keeper left
 * on fd 3.
 */
function listenOnFd3() {
  return net.createServer({ pauseOnConnect: true }).listen({ fd: 3 });
}

/**
 * A socket on the accepted connection's handle that reads into ReadSlabs and hands each read to
 * the runner. net.Server cannot give its connections an `onread`, so the connection is
 * accepted paused, before anything was read from it, and its handle is wrapped again.
 */
function readingIntoSlabs(accepted, onData) {
  const slab = new ReadSlab();
  const socket = new net.Socket({
    handle: accepted._handle,
    readable: true,
    writable: true,
    onread: { buffer: () => slab.next(), callback: (nbytes) => onData(slab.filled(nbytes)) },
  });
  socket.resume(); // reads go to onData; flowing, the socket still emits 'end' and 'close'
  return socket;
}

/**
 * Keep reading a hub connection after a write to it failed. A write fails because the hub died,
 * and what it wrote before dying is still in the socket: it answered its client once the kernel
 * took those bytes, and the next hub resumes from what this runner counts as received. Node
 * destroys a socket whose write failed, unread bytes and all; here the failure only stops the
 * writes (the link keeps their bytes for the next hub) and the socket lives until its end is
 * read, or for OLD_CONNECTION_GRACE_MS. Wraps Socket#_writeGeneric, which Node does not
 * document: every write of a connected socket goes through it.
 */
function readPastFailedWrites(socket) {
  const writeGeneric = socket._writeGeneric;
  let failed = false;
  socket._writeGeneric = function (writev, data, encoding, callback) {
    if (failed) {
      callback();
      return;
    }
    writeGeneric.call(this, writev, data, encoding, (error) => {
      if (error && !failed) {
        failed = true;
        setTimeout(() => socket.destroy(), OLD_CONNECTION_GRACE_MS).unref();
      }
      callback();
    });
  };
}

/**
 * Run as the runner of the instance directory argv[2]. `server`: the listener on fd 3 when it is
 * listening already (a spare, which set it up before its assignment); connections wait in its
 * backlog until the event loop runs, which is after this has attached the runner.
 */
async function main(argv, server = listenOnFd3()) {
  const instanceDir = path.resolve(argv[2]);
  process.argv = argv; // as a runner started on the instance directory has it
  const spawn = JSON.parse(fs.readFileSync(path.join(instanceDir, FILES.spawn), 'utf8'));
  // Not fsynced (a few ms of every start): after a machine crash the runner it names is gone
  // whatever the file holds, and a hub marks the instance lost either way.
  writeJsonAtomic(
    path.join(instanceDir, FILES.runner),
    { ...processIdentity(), socket: spawn.socket, token: spawn.token, protocol: 1 },
    false,
  );
  const runner = new Runner(instanceDir, spawn);
  process.on('uncaughtException', (error) => runner.fail(error));
  process.on('unhandledRejection', (error) => runner.fail(error));
  for (const signal of ['SIGTERM', 'SIGINT'])
    process.on(signal, () => runner.finish(EXIT_KILLED, 'Instance killed'));
  server.on('connection', (socket) => runner.attach(socket));
  runner.startHeartbeat(HEARTBEAT_MS);
  // One turn of the event loop before the sequence loads (a CommonJS one loads without
  // yielding): a hub that dialled already has its HELLO answered, so the handshake's round
  // trips overlap the load. ~2 ms of a paced start, 4 alternating runs.
  await new Promise((resolve) => setImmediate(resolve));
  let sequence;
  try {
    sequence = await loadSequence(spawn.sequence_dir, spawn.entry);
  } catch (error) {
    if (!(error instanceof SequenceLoadError)) throw error;
    runner.finish(error.exitCode, error.message);
    return;
  }
  runner.sendMonitoring([PING, { pid: process.pid }]);
  runner.run(sequence);
}

// -- a warm spare ---------------------------------------------------------------------------

// The keeper's control socket of a spare (si/runner/keeper.py, "spares").
const SPARE_CONTROL_FD = 4;

/**
 * `node runner.js --spare`: booted ahead of time by the keeper, with the runner loaded, so that
 * a start pays for none of Node's own start. The keeper has given it every descriptor a runner
 * has (fd 1/2 the files, fd 3 the listening socket, all at a spare's paths) and, on fd 4, a
 * socket on which it writes one line, `{"instance_dir": ...}`, once it has moved those files
 * and that socket into the instance's directory; the spare answers `ok` (a spare that cannot
 * answer is not given the instance). Blocks until then; returns null when the
 * keeper closed the socket first (it exits or retires its spares), and the spare then exits.
 */
function awaitAssignment(fd = SPARE_CONTROL_FD) {
  const buffer = Buffer.alloc(4096);
  let received = Buffer.alloc(0);
  try {
    while (!received.includes(10)) {
      const count = fs.readSync(fd, buffer);
      if (count === 0) return null;
      received = Buffer.concat([received, buffer.subarray(0, count)]);
    }
    fs.writeSync(fd, 'ok\n'); // the keeper hands the instance over only on this answer
  } catch {
    return null;
  } finally {
    try {
      fs.closeSync(fd); // a runner holds exactly the descriptors a cold-started one does
    } catch {
      // not open: there is nothing to hold
    }
  }
  const assignment = JSON.parse(received.subarray(0, received.indexOf(10)).toString('utf8'));
  return assignment.instance_dir;
}

/**
 * Do ahead of the assignment the one-time work the first start would otherwise pay for; the
 * listener on fd 3 is the instance's once the keeper has renamed it, so it can listen already.
 *
 * Node's CommonJS loader sets itself up on its first `require` of a file (compiling its own
 * code as it goes): a spare that had not loaded one paid that inside the start, 2-6 ms of a
 * paced start (POST /start answered in 31-34 ms before, 26-29 ms after, alternating runs on a
 * 2-core machine), for ~1 ms of its boot. So it loads an empty file the way loadSequence
 * loads a sequence. Warming the link up as well (a handshake between two in-memory links)
 * saved ~1 ms more but cost ~4 ms of every boot, which bursts and back-to-back starts pay
 * while the pool refills: left out. A failure here only means a colder start.
 */
function warmUp() {
  try {
    crypto.createHmac('sha256', Buffer.alloc(32)).update('warm').digest();
    require('node:module').createRequire(RUNNER_JS)('./warm.js');
  } catch (error) {
    process.stderr.write(`spare warm-up failed: ${(error && error.message) || error}\n`);
  }
  return listenOnFd3();
}

/**
 * NODE_EXTRA_CA_CERTS, read when TLS is first used rather than at Node's boot. Node parses
 * that bundle at every start, before any code runs (the system bundle this machine names
 * costs ~30 ms of each start, against 10 ms for the rest of `node -e 0`), yet a runner opens no
 * TLS connection unless its sequence does. So the keeper hands the path over as
 * SI_NODE_EXTRA_CA_CERTS, and every TLS context that names no CAs of its own gets Node's roots
 * plus that bundle, as Node would have given it. The tls module is patched before the sequence
 * loads (~10 ms, in a spare's boot), so `https`, `fetch` and ES modules all see it. Child
 * processes of the sequence see NODE_EXTRA_CA_CERTS as it was set.
 */
function deferExtraCaCerts() {
  const file = process.env.SI_NODE_EXTRA_CA_CERTS;
  if (!file) return;
  delete process.env.SI_NODE_EXTRA_CA_CERTS;
  process.env.NODE_EXTRA_CA_CERTS = file;
  const tls = require('node:tls');
  const createSecureContext = tls.createSecureContext;
  let trusted; // read on the first context that needs it
  tls.createSecureContext = function secureContextWithExtraCas(options) {
    if (options && options.ca !== undefined) return createSecureContext.call(this, options);
    if (trusted === undefined) {
      try {
        trusted = [...tls.rootCertificates, fs.readFileSync(file, 'utf8')];
      } catch (error) {
        process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${error.message}`);
        trusted = null;
      }
    }
    if (trusted === null) return createSecureContext.call(this, options);
    return createSecureContext.call(this, { ...options, ca: trusted });
  };
}

function start(argv, server) {
  main(argv, server).catch((error) => {
    process.stderr.write(`${(error && error.stack) || error}\n`);
    process.exit(70); // the runner itself failed before it could record anything
  });
}

/**
 * The runner's own start: `args` are the command line's arguments after the script,
 * `[<instance dir>]` or `["--spare"]`. `fromSnapshot`: booted from a startup snapshot, whose
 * process.argv has no script path (snapshot.js).
 */
function entry(args, fromSnapshot = false) {
  bootedFromSnapshot = fromSnapshot;
  deferExtraCaCerts();
  if (args[0] === '--spare') {
    const server = warmUp();
    const instanceDir = awaitAssignment();
    if (instanceDir === null) process.exit(0);
    start([process.argv[0], RUNNER_JS, instanceDir], server);
  } else {
    start([process.argv[0], RUNNER_JS, args[0]]);
  }
}

// This file's path, also where a snapshot-booted runner says its script is.
const RUNNER_JS = path.join(__dirname, 'runner.js');

if (require.main === module) entry(process.argv.slice(2));

module.exports = {
  Runner,
  awaitAssignment,
  entry,
  loadSequence,
  main,
  readPastFailedWrites,
  readingIntoSlabs,
};
