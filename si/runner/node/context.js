'use strict';
// `this` of a JavaScript sequence: STH's AppContext over the si runner.

const fs = require('node:fs');
const util = require('node:util');

const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];

// The instance log's rotation, as the Python runner does it (si/segments.py): a directory of
// segment files, each named by the stream offset of its first byte; a new segment is started
// once the current one holds `segmentBytes`, and only the newest `keep` are kept.
const NAME_DIGITS = 20;
const DEFAULT_SEGMENT_BYTES = 1 << 20;
const DEFAULT_KEEP = 5;

class SegmentWriter {
  constructor(directory, { segmentBytes = DEFAULT_SEGMENT_BYTES, keep = DEFAULT_KEEP } = {}) {
    this.directory = directory;
    this.segmentBytes = segmentBytes;
    this.keep = Math.max(1, keep);
    fs.mkdirSync(directory, { recursive: true, mode: 0o700 });
    const segments = this.segments();
    if (segments.length) {
      const last = segments[segments.length - 1];
      this.start = last;
      this.offset = last + fs.statSync(this.path(last)).size;
    } else {
      this.start = this.offset = 0;
    }
    this.fd = this.open(this.start);
  }

  segments() {
    return fs
      .readdirSync(this.directory)
      .filter((name) => /^\d+$/.test(name))
      .map(Number)
      .sort((a, b) => a - b);
  }

  path(start) {
    return `${this.directory}/${String(start).padStart(NAME_DIGITS, '0')}`;
  }

  open(start) {
    return fs.openSync(this.path(start), 'a', 0o600);
  }

  write(data) {
    if (this.offset - this.start >= this.segmentBytes) this.rotate();
    fs.writeSync(this.fd, data);
    this.offset += data.length;
  }

  rotate() {
    fs.closeSync(this.fd);
    this.start = this.offset;
    this.fd = this.open(this.start);
    for (const old of this.segments().slice(0, -this.keep))
      fs.rmSync(this.path(old), { force: true });
  }
}

/**
 * The sequence's logger: one JSON object per line in the instance's log (<instance dir>/log/),
 * the shape the Python runner writes (ts, level, msg, from: "Sequence", Sequence: {id}) plus
 * STH's `data` for any further arguments.
 */
class Logger {
  constructor(writer, instanceId) {
    this.writer = writer;
    this.instanceId = instanceId;
    for (const level of LEVELS) this[level.toLowerCase()] = (...args) => this.write(level, args);
    this.log = this.info;
  }

  write(level, args) {
    const [first, ...rest] = args;
    const entry = { ts: Date.now(), level, msg: typeof first === 'string' ? first : '' };
    const data = typeof first === 'string' ? rest : args;
    entry.from = 'Sequence';
    entry.Sequence = { id: this.instanceId };
    if (data.length) entry.data = data;
    this.writer.write(Buffer.from(safeJson(entry) + '\n'));
  }
}

function safeJson(entry) {
  try {
    return JSON.stringify(entry);
  } catch {
    // Circular or BigInt data: log what can be shown rather than lose the line.
    return JSON.stringify({ ...entry, data: entry.data.map((item) => util.inspect(item)) });
  }
}

class AppContext {
  /**
   * runner: what the context asks of (emit, keepAlive, end, destroy); see runner.js.
   */
  constructor(runner, config, logger) {
    this._runner = runner;
    this.config = config;
    this.logger = logger;
    this.instanceId = runner.instanceId;
    // How long STH's runner lingers after the output ended; kept for sequences that read it.
    this.exitTimeout = 10000;
    this._handlers = new Map();
    this._stopHandlers = [];
    this._killHandlers = [];
    this._monitoringHandlers = [];
    this.keepAliveRequested = false;
  }

  // -- events ------------------------------------------------------------------------------

  /** Call callback(message) for every event `eventName` from the API or other instances. */
  on(eventName, callback) {
    if (!this._handlers.has(eventName)) this._handlers.set(eventName, []);
    this._handlers.get(eventName).push(callback);
    return this;
  }

  /** Send an event to the hub (its event readers and the other instances). */
  emit(eventName, message) {
    this._runner.emitEvent(eventName, message);
    return this;
  }

  dispatchEvent(eventName, message) {
    for (const callback of [...(this._handlers.get(eventName) || [])]) {
      Promise.resolve()
        .then(() => callback.call(this, message))
        .catch((error) => this._runner.fail(error));
    }
  }

  // -- stop, kill, keep-alive, health ------------------------------------------------------

  /** Ask the hub not to kill this instance after a stop request. */
  keepAlive(milliseconds = 0) {
    this.keepAliveRequested = true;
    this._runner.sendAlive(milliseconds);
    return this;
  }

  /** handler(timeout ms, canCallKeepalive), awaited on a stop request. */
  addStopHandler(handler) {
    this._stopHandlers.push(handler);
    return this;
  }

  /** handler(), called synchronously when the instance is killed. */
  addKillHandler(handler) {
    this._killHandlers.push(handler);
    return this;
  }

  /** handler(report) -> {healthy, ...}; healthy only when every handler says so. */
  addMonitoringHandler(handler) {
    this._monitoringHandlers.push(handler);
    return this;
  }

  async runStopHandlers(timeout, canCallKeepalive) {
    for (const handler of [...this._stopHandlers])
      await handler.call(this, timeout, canCallKeepalive);
  }

  runKillHandlers() {
    for (const handler of [...this._killHandlers]) {
      try {
        handler.call(this);
      } catch (error) {
        process.stderr.write(`kill handler failed: ${error && error.stack}\n`);
      }
    }
  }

  /** The heartbeat's report: each handler gets the report so far and may add to it. */
  async health() {
    let report = { healthy: true };
    for (const handler of [...this._monitoringHandlers]) {
      try {
        const result = await handler.call(this, report);
        if (result && typeof result === 'object') {
          report = { ...report, ...result, healthy: report.healthy && result.healthy !== false };
        }
      } catch {
        report = { ...report, healthy: false };
      }
    }
    return report;
  }

  // -- ending ------------------------------------------------------------------------------

  /** The sequence is done: its output ends and the instance completes. */
  end() {
    this._runner.endSequence();
    return this;
  }

  /** The sequence failed: the instance ends as errored (exit 23). */
  destroy(error) {
    this._runner.fail(error || new Error('destroyed by the sequence'));
    return this;
  }
}

module.exports = { AppContext, Logger, SegmentWriter };
