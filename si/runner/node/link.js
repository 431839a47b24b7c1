'use strict';
// The hub <-> runner link, sans-IO: bytes in, events out, bytes to send.
//
// This is the JavaScript twin of si/protocol/link.py and speaks exactly the same protocol:
// the same 16-byte frame header, byte offsets per channel, cumulative ACKs that double as flow
// control, a replay buffer that survives reconnects, and the HELLO/AUTH handshake proving the
// instance's token with HMAC-SHA256. Both implementations are checked against the shared
// vectors in tests/vectors/link.json; change one, change the other and the vectors together.

const crypto = require('node:crypto');

const HEADER_SIZE = 16;
// Senders split bigger writes; receivers refuse bigger frames (a corrupt length field must not
// make us buffer gigabytes).
const MAX_PAYLOAD = 1 << 20;
// ReadSlab: its slabs' sizes (big while a stream is fast), and the least room a read is given.
const SMALL_SLAB = 64 * 1024;
const BIG_SLAB = 1 << 20;
const MIN_READ = 16 * 1024;
const PROTOCOL_VERSION = 1;
// Unacknowledged bytes a sender may have per channel (see DEFAULT_WINDOW in link.py).
const DEFAULT_WINDOW = 1 << 20;

const Kind = Object.freeze({ HELLO: 1, AUTH: 2, DATA: 3, END: 4, ACK: 5, MSG: 6 });
const KIND_NAMES = Object.freeze(['', 'HELLO', 'AUTH', 'DATA', 'END', 'ACK', 'MSG']);
const Channel = Object.freeze({ STDIN: 0, CONTROL: 3, MONITORING: 4, INPUT: 5, OUTPUT: 6 });

/** The peer broke the protocol or failed authentication: drop the connection. */
class LinkError extends Error {}

const TWO_32 = 2 ** 32;

function encodeHeader(kind, channel, length, offset) {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  header[0] = kind;
  header[1] = channel;
  header.writeUInt16BE(0, 2);
  header.writeUInt32BE(length, 4);
  // u64 as two u32: offsets stay below 2**53, so plain numbers are exact and BigInt is not needed.
  header.writeUInt32BE(Math.floor(offset / TWO_32), 8);
  header.writeUInt32BE(offset % TWO_32, 12);
  return header;
}

function encodeFrame(kind, channel, offset, payload = Buffer.alloc(0)) {
  return Buffer.concat([encodeHeader(kind, channel, payload.length, offset), payload]);
}

// Python's json.dumps(body, separators=(",", ":")) escapes every non-ASCII character; doing the
// same here makes the two implementations emit identical bytes for the same message.
function canonicalJson(body) {
  return JSON.stringify(body).replace(
    /[\u0080-\uffff]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'),
  );
}

/** Turns a byte stream into frames; feed it whatever the socket delivered. */
class FrameDecoder {
  constructor(maxPayload = MAX_PAYLOAD) {
    this.maxPayload = maxPayload;
    this.chunks = []; // received buffers not yet parsed, in order
    this.size = 0;
  }

  feed(data) {
    if (data.length) {
      const last = this.chunks[this.chunks.length - 1];
      if (last && adjacent(last, data)) {
        // Consecutive reads into one slab (see ReadSlab): one view, so a frame that spans
        // them is taken without a copy.
        this.chunks[this.chunks.length - 1] = Buffer.from(
          last.buffer,
          last.byteOffset,
          last.length + data.length,
        );
      } else {
        this.chunks.push(data);
      }
      this.size += data.length;
    }
    const frames = [];
    while (this.size >= HEADER_SIZE) {
      const header = this._peek(HEADER_SIZE);
      const length = header.readUInt32BE(4);
      if (length > this.maxPayload) {
        throw new LinkError(`frame payload of ${length} bytes exceeds ${this.maxPayload}`);
      }
      if (this.size < HEADER_SIZE + length) break;
      const kind = header[0];
      if (!KIND_NAMES[kind]) throw new LinkError(`unknown frame kind ${kind}`);
      const offset = header.readUInt32BE(8) * TWO_32 + header.readUInt32BE(12);
      const channel = header[1];
      this._take(HEADER_SIZE);
      frames.push({ kind, channel, offset, payload: this._take(length) });
    }
    return frames;
  }

  get buffered() {
    return this.size;
  }

  _peek(n) {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0];
  }

  // Copies only when a frame spans reads, so a large frame is assembled once, not per read.
  _take(n) {
    this.size -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const parts = [];
    let needed = n;
    while (needed > 0) {
      const chunk = this.chunks[0];
      if (chunk.length <= needed) {
        parts.push(chunk);
        this.chunks.shift();
        needed -= chunk.length;
      } else {
        parts.push(chunk.subarray(0, needed));
        this.chunks[0] = chunk.subarray(needed);
        needed = 0;
      }
    }
    return Buffer.concat(parts, n);
  }
}

function adjacent(first, second) {
  return first.buffer === second.buffer && first.byteOffset + first.length === second.byteOffset;
}

/**
 * Where a socket reads into: consecutive reads land side by side in one slab, each read may
 * take all of the slab that is left, and a new slab is begun when less than MIN_READ is.
 *
 * Node otherwise reads at most 64 KiB into a buffer of its own each time, so every DATA frame
 * of the hub's (up to 256 KiB) spanned reads and was copied together; reads in one slab are one
 * view to the FrameDecoder, and only a frame crossing into a new slab is copied. A slab is
 * large (BIG_SLAB) only while reads fill all the room they are given, which is a fast stream:
 * an idle runner's heartbeats walk through small slabs and touch a few pages, not a MiB. A
 * slab lives while any view of it does: a sequence keeping a few bytes of one input chunk
 * keeps that slab, as with Node's own pooled buffers.
 */
class ReadSlab {
  constructor({ small = SMALL_SLAB, big = BIG_SLAB, minRead = MIN_READ } = {}) {
    this.sizes = { small, big };
    this.minRead = minRead;
    this.fast = false;
    this.slab = Buffer.allocUnsafe(small);
    this.used = 0;
  }

  /** The buffer for the next read (net.Socket's onread.buffer). */
  next() {
    if (this.slab.length - this.used < this.minRead) {
      this.slab = Buffer.allocUnsafe(this.fast ? this.sizes.big : this.sizes.small);
      this.used = 0;
    }
    return this.slab.subarray(this.used);
  }

  /** The read filled nbytes of the buffer next() gave: those bytes, kept. */
  filled(nbytes) {
    const room = this.slab.length - this.used; // what next() offered: only it changes the slab
    const data = this.slab.subarray(this.used, this.used + nbytes);
    this.used += nbytes;
    if (nbytes === room) this.fast = true;
    else if (nbytes < this.minRead) this.fast = false;
    return data;
  }
}

/** What one side sends on one channel. */
class Outbound {
  constructor(window, known) {
    this.window = window;
    this.known = known; // false: positions are unknown until the peer reports them
    this.nextOffset = 0; // offset after the last byte the application queued
    this.acked = 0; // the peer consumed everything before this offset
    this.ended = false; // END queued
    this.replay = []; // [offset, payload] of every DATA frame not yet fully acknowledged
  }

  inFlight() {
    return this.nextOffset - this.acked;
  }

  writable() {
    if (!this.known) return 0; // nothing is safe until the handshake says what the peer holds
    return Math.max(0, this.window - this.inFlight());
  }
}

/** What one side receives on one channel. */
class Inbound {
  constructor(window, known) {
    this.known = known;
    this.received = 0; // every byte before this offset was taken, in order
    this.consumed = 0; // the application took every byte before this offset
    this.acked = 0; // the last consumed offset reported to the peer
    this.ended = false;
    this.window = window; // what the peer may send ahead; paces our ACKs
  }
}

/**
 * The link state of one instance on one side; it outlives connections.
 *
 * outbound / inbound: Maps (or [channel, window] pairs) of the channels this side sends and
 * receives. known = false when this side lost its state (a restarted hub): positions are then
 * taken from the peer at the first handshake.
 *
 * Events returned by receiveData():
 *   {type: 'established', peer, received}   received: {channel: next offset}
 *   {type: 'data', channel, data}
 *   {type: 'ended', channel}
 *   {type: 'window', channel}               the peer consumed: blocked writers may go on
 *   {type: 'message', body}                 unnumbered MSG frame
 */
class Link {
  constructor(role, instanceId, token, outbound, inbound, { known = true } = {}) {
    this.role = role;
    this.instanceId = instanceId;
    this.token = Buffer.from(token);
    this.outbound = new Map();
    for (const [channel, window] of outbound)
      this.outbound.set(channel, new Outbound(window, known));
    this.inbound = new Map();
    for (const [channel, window] of inbound) this.inbound.set(channel, new Inbound(window, known));
    this.decoder = new FrameDecoder();
    this.pending = [];
    this.nonce = Buffer.alloc(0);
    this.peerHello = null;
    this.sentAuth = false;
    this.established = false;
    this.localHello = {};
  }

  // -- connection lifecycle ----------------------------------------------------------------

  /** A new connection is up: forget the old one's bytes and start a handshake. */
  connectionMade(hello = {}, nonce = crypto.randomBytes(16)) {
    this.decoder = new FrameDecoder();
    this.pending = [];
    this.nonce = Buffer.from(nonce);
    this.peerHello = null;
    this.sentAuth = false;
    this.established = false;
    this.localHello = {
      ...hello,
      role: this.role,
      instance: this.instanceId,
      version: PROTOCOL_VERSION,
      nonce: this.nonce.toString('hex'),
    };
    this._queueJson(Kind.HELLO, this.localHello);
  }

  /** The connection is gone; data stays in the replay buffers for the next one. */
  connectionLost() {
    this.established = false;
    this.pending = [];
  }

  // -- application side --------------------------------------------------------------------

  writable(channel) {
    return this.outbound.get(channel).writable();
  }

  /** Queue data on channel; it is kept until the peer acknowledges it. Respect writable(). */
  send(channel, data) {
    const out = this.outbound.get(channel);
    if (out.ended) throw new LinkError(`channel ${channel} already ended`);
    for (let start = 0; start < data.length; start += MAX_PAYLOAD) {
      const payload = data.length > MAX_PAYLOAD ? data.subarray(start, start + MAX_PAYLOAD) : data;
      out.replay.push([out.nextOffset, payload]);
      if (this.established) {
        this.pending.push(
          encodeHeader(Kind.DATA, channel, payload.length, out.nextOffset),
          payload,
        );
      }
      out.nextOffset += payload.length;
    }
  }

  /** One JSON message as one frame (message channels deliver whole frames). */
  sendJson(channel, body) {
    this.send(channel, Buffer.from(canonicalJson(body)));
  }

  end(channel) {
    const out = this.outbound.get(channel);
    if (out.ended) return;
    out.ended = true;
    if (this.established) this.pending.push(encodeHeader(Kind.END, channel, 0, out.nextOffset));
  }

  /** The application took nbytes more of channel; acknowledge when worthwhile. */
  consume(channel, nbytes) {
    const inbound = this.inbound.get(channel);
    inbound.consumed += nbytes;
    if (inbound.consumed > inbound.received) {
      throw new LinkError(`consumed past what was received on channel ${channel}`);
    }
    this._maybeAck(channel, inbound);
  }

  /** An unnumbered message, sent now or never (returns false when not connected). */
  sendMessage(body) {
    if (!this.established) return false;
    this._queueJson(Kind.MSG, body);
    return true;
  }

  /** Everything queued for the socket since the last call, as one buffer. */
  dataToSend() {
    return Buffer.concat(this.takePending());
  }

  /** The same as a list of buffers, for a socket that writes them without copying. */
  takePending() {
    const pending = this.pending;
    this.pending = [];
    return pending;
  }

  // -- network side ------------------------------------------------------------------------

  /** Feed bytes read from the connection; returns what happened, in order. Throws LinkError. */
  receiveData(data) {
    const events = [];
    for (const frame of this.decoder.feed(data)) this._handle(frame, events);
    return events;
  }

  _handle(frame, events) {
    switch (frame.kind) {
      case Kind.DATA:
        this._requireEstablished();
        this._onData(frame, events);
        break;
      case Kind.ACK:
        this._requireEstablished();
        this._onAck(frame.channel, frame.offset, events);
        break;
      case Kind.END:
        this._requireEstablished();
        this._onEnd(frame, events);
        break;
      case Kind.MSG:
        this._requireEstablished();
        events.push({ type: 'message', body: parseJson(frame) });
        break;
      case Kind.HELLO:
        this._onHello(parseJson(frame));
        break;
      case Kind.AUTH:
        this._onAuth(parseJson(frame), events);
        break;
    }
  }

  _requireEstablished() {
    if (!this.established) throw new LinkError('data before the handshake completed');
  }

  _inbound(channel) {
    const inbound = this.inbound.get(channel);
    if (!inbound)
      throw new LinkError(`frame on channel ${channel}, which this side does not receive`);
    return inbound;
  }

  _onData(frame, events) {
    const inbound = this._inbound(frame.channel);
    const start = frame.offset;
    let payload = frame.payload;
    const end = start + payload.length;
    if (inbound.ended) throw new LinkError(`data after the end of channel ${frame.channel}`);
    if (end <= inbound.received) return; // a replay of bytes we already have
    if (start > inbound.received) {
      throw new LinkError(
        `gap on channel ${frame.channel}: expected offset ${inbound.received}, got ${start}`,
      );
    }
    if (start < inbound.received) payload = payload.subarray(inbound.received - start);
    inbound.received = end;
    events.push({ type: 'data', channel: frame.channel, data: payload });
  }

  _onEnd(frame, events) {
    const inbound = this._inbound(frame.channel);
    if (inbound.ended) return;
    if (frame.offset !== inbound.received) {
      throw new LinkError(
        `end of channel ${frame.channel} at ${frame.offset}, but ${inbound.received} received`,
      );
    }
    inbound.ended = true;
    events.push({ type: 'ended', channel: frame.channel });
  }

  _onAck(channel, offset, events) {
    const out = this.outbound.get(channel);
    if (!out) throw new LinkError(`ack on channel ${channel}, which this side does not send`);
    if (offset > out.nextOffset)
      throw new LinkError(`ack beyond what was sent on channel ${channel}`);
    if (offset <= out.acked) return;
    out.acked = offset;
    const replay = out.replay;
    let done = 0;
    while (done < replay.length && replay[done][0] + replay[done][1].length <= offset) done++;
    if (done) replay.splice(0, done);
    events.push({ type: 'window', channel });
  }

  _maybeAck(channel, inbound) {
    // Acknowledge once a quarter of the window is consumed, or when the reader caught up:
    // few ACKs on a fast stream, and a slow trickle is never left waiting for credit. A sender
    // with three quarters of its window out hears of every consumed byte at once.
    const unreported = inbound.consumed - inbound.acked;
    if (unreported <= 0 || !this.established) return;
    if (
      unreported >= Math.floor(inbound.window / 4) ||
      inbound.consumed === inbound.received ||
      inbound.received - inbound.acked >= Math.floor((inbound.window * 3) / 4)
    ) {
      inbound.acked = inbound.consumed;
      this.pending.push(encodeHeader(Kind.ACK, channel, 0, inbound.consumed));
    }
  }

  // -- handshake ---------------------------------------------------------------------------

  _proof(role, nonceHex) {
    const message = `si-link/${role}/${this.instanceId}/${nonceHex}`;
    return crypto.createHmac('sha256', this.token).update(message).digest('hex');
  }

  _onHello(hello) {
    if (!isObject(hello)) throw new LinkError('malformed HELLO');
    if (hello.version !== PROTOCOL_VERSION) {
      throw new LinkError(`peer speaks protocol ${hello.version}, we speak ${PROTOCOL_VERSION}`);
    }
    if (hello.instance !== this.instanceId) {
      throw new LinkError(`peer is instance ${hello.instance}, expected ${this.instanceId}`);
    }
    if (hello.role === this.role || typeof hello.nonce !== 'string') {
      throw new LinkError('malformed HELLO');
    }
    this.peerHello = hello;
    const inbound = {};
    for (const [channel, state] of this.inbound) {
      if (state.known) {
        inbound[channel] = {
          received: state.received,
          consumed: state.consumed,
          ended: state.ended,
        };
      }
    }
    const outbound = {};
    for (const [channel, state] of this.outbound) {
      if (state.known)
        outbound[channel] = { base: state.acked, next: state.nextOffset, ended: state.ended };
    }
    this._queueJson(Kind.AUTH, { proof: this._proof(this.role, hello.nonce), inbound, outbound });
    this.sentAuth = true;
  }

  _onAuth(auth, events) {
    if (this.peerHello === null || !this.sentAuth || !isObject(auth)) {
      throw new LinkError('AUTH before HELLO');
    }
    const expected = Buffer.from(this._proof(this.peerHello.role, this.nonce.toString('hex')));
    const proof = typeof auth.proof === 'string' ? Buffer.from(auth.proof) : null;
    if (
      proof === null ||
      proof.length !== expected.length ||
      !crypto.timingSafeEqual(proof, expected)
    ) {
      throw new LinkError("the peer does not hold this instance's token");
    }
    const peerIn = positions(auth.inbound);
    const peerOut = positions(auth.outbound);
    for (const [channel, inbound] of this.inbound) {
      if (!inbound.known) {
        const base = positionInt(peerOut.get(channel), 'base');
        inbound.received = inbound.consumed = inbound.acked = base;
        inbound.ended = false;
        inbound.known = true;
      }
    }
    this.established = true;
    for (const [channel, out] of this.outbound) {
      const reported = peerIn.get(channel);
      let resume;
      if (!out.known) {
        // We lost our state: continue numbering where the peer is. What the application queued
        // before this (numbered from 0) moves behind that, unless the peer's channel already
        // ended: then it can never be delivered.
        resume = positionInt(reported, 'received');
        const peerEnded = reported ? Boolean(reported.ended) : false;
        const queued = peerEnded ? [] : out.replay;
        out.replay = queued.map(([offset, payload]) => [resume + offset, payload]);
        out.nextOffset = resume + (peerEnded ? 0 : out.nextOffset);
        out.acked = positionInt(reported, 'consumed');
        out.ended = out.ended || peerEnded;
        out.known = true;
      } else if (reported === undefined) {
        resume = out.acked; // the peer lost its state; it takes our base from AUTH
      } else {
        resume = positionInt(reported, 'received');
        if (resume > out.nextOffset)
          throw new LinkError(`peer claims bytes never sent on channel ${channel}`);
        const consumed = positionInt(reported, 'consumed');
        if (consumed > out.acked) this._onAck(channel, consumed, events);
      }
      this._resend(channel, out, resume);
    }
    const received = {};
    for (const [channel, inbound] of this.inbound) received[channel] = inbound.received;
    events.push({ type: 'established', peer: { ...this.peerHello }, received });
    // Report what we consumed while disconnected so the peer's window opens.
    for (const [channel, inbound] of this.inbound) {
      if (inbound.consumed > inbound.acked) {
        inbound.acked = inbound.consumed;
        this.pending.push(encodeHeader(Kind.ACK, channel, 0, inbound.consumed));
      }
    }
  }

  _resend(channel, out, resume) {
    for (let [offset, payload] of out.replay) {
      const end = offset + payload.length;
      if (end <= resume) continue;
      if (offset < resume) {
        payload = payload.subarray(resume - offset);
        offset = resume;
      }
      this.pending.push(encodeHeader(Kind.DATA, channel, payload.length, offset), payload);
    }
    if (out.ended) this.pending.push(encodeHeader(Kind.END, channel, 0, out.nextOffset));
  }

  _queueJson(kind, body) {
    const payload = Buffer.from(canonicalJson(body));
    this.pending.push(encodeHeader(kind, 0, payload.length, 0), payload);
  }
}

// -- helpers -------------------------------------------------------------------------------

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(frame) {
  try {
    return JSON.parse(frame.payload.toString('utf8'));
  } catch {
    throw new LinkError(`malformed ${KIND_NAMES[frame.kind]} payload`);
  }
}

function positions(value) {
  if (!isObject(value)) throw new LinkError('malformed AUTH positions');
  const result = new Map();
  for (const [key, entry] of Object.entries(value)) {
    if (!isObject(entry) || !/^\s*[+-]?\d+\s*$/.test(key)) {
      throw new LinkError('malformed AUTH positions');
    }
    result.set(Number.parseInt(key, 10), entry);
  }
  return result;
}

function positionInt(entry, key) {
  if (entry === undefined) return 0;
  const value = key in entry ? entry[key] : 0;
  if (!Number.isSafeInteger(value) || value < 0)
    throw new LinkError(`malformed AUTH position '${key}'`);
  return value;
}

module.exports = {
  Channel,
  DEFAULT_WINDOW,
  FrameDecoder,
  HEADER_SIZE,
  Kind,
  Link,
  LinkError,
  MAX_PAYLOAD,
  PROTOCOL_VERSION,
  ReadSlab,
  canonicalJson,
  encodeFrame,
  encodeHeader,
};
