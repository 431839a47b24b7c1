'use strict';
// The JavaScript link against the shared vectors in tests/vectors/link.json: the same frames,
// proofs and scripted scenarios the Python link is tested with (tests/protocol/test_vectors.py).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');

const { FrameDecoder, Kind, Link, LinkError, ReadSlab, encodeFrame } = require('../link.js');

const VECTORS_PATH =
  process.env.SI_LINK_VECTORS ||
  path.join(__dirname, '..', '..', '..', '..', 'tests', 'vectors', 'link.json');
const vectors = JSON.parse(fs.readFileSync(VECTORS_PATH, 'utf8'));
const RESULT_KEYS = ['wire', 'events', 'error', 'queued', 'outbound', 'inbound'];
const INSTANCE = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0';
const TOKEN = Buffer.from([...Array(32).keys()]).toString('hex');

const hex = (value) => Buffer.from(value, 'hex');

function eventJson(event) {
  switch (event.type) {
    case 'established': {
      const received = {};
      for (const [channel, offset] of Object.entries(event.received)) received[channel] = offset;
      return { type: 'established', peer: event.peer, received };
    }
    case 'data':
      return { type: 'data', channel: event.channel, hex: event.data.toString('hex') };
    case 'message':
      return { type: 'message', body: event.body };
    default:
      return { type: event.type, channel: event.channel };
  }
}

/** The JavaScript twin of tests/vectors/make_link_vectors.py's Pair. */
class Pair {
  constructor(spec) {
    this.spec = spec;
    this.links = { hub: this.make('hub', true), runner: this.make('runner', true) };
  }

  make(side, known) {
    const spec = this.spec[side];
    const pairs = (channels) => channels.map((channel) => [channel, spec.window]);
    return new Link(
      side,
      spec.instance || INSTANCE,
      hex(spec.token || TOKEN),
      pairs(spec.outbound),
      pairs(spec.inbound),
      {
        known,
      },
    );
  }

  feed(side, data) {
    try {
      return { events: this.links[side].receiveData(data).map(eventJson), error: false };
    } catch (error) {
      if (!(error instanceof LinkError)) throw error;
      return { events: [], error: true };
    }
  }

  run(step) {
    const link = this.links[step.side];
    switch (step.op) {
      case 'connect':
        for (const side of ['hub', 'runner']) {
          this.links[side].connectionMade(step.hello[side], hex(step.nonces[side]));
        }
        return {};
      case 'send':
        link.send(step.channel, hex(step.hex));
        return {};
      case 'send_json':
        link.sendJson(step.channel, step.body);
        return {};
      case 'end':
        link.end(step.channel);
        return {};
      case 'consume':
        link.consume(step.channel, step.n);
        return {};
      case 'message':
        return { queued: link.sendMessage(step.body) };
      case 'flush': {
        const wire = link.dataToSend();
        const other = step.side === 'hub' ? 'runner' : 'hub';
        const delivered = step.deliver === undefined ? wire : wire.subarray(0, step.deliver);
        const result = this.feed(other, delivered);
        if (step.deliver !== undefined) this.run({ op: 'cut' });
        return { wire: wire.toString('hex'), ...result };
      }
      case 'receive':
        return this.feed(step.side, hex(step.hex));
      case 'cut':
        for (const each of Object.values(this.links)) each.connectionLost();
        return {};
      case 'restart':
        this.links[step.side] = this.make(step.side, false);
        return {};
      case 'state': {
        const outbound = {};
        for (const [channel, s] of link.outbound) {
          outbound[channel] = {
            next: s.nextOffset,
            acked: s.acked,
            ended: s.ended,
            writable: s.writable(),
          };
        }
        const inbound = {};
        for (const [channel, s] of link.inbound) {
          inbound[channel] = { received: s.received, consumed: s.consumed, ended: s.ended };
        }
        return { outbound, inbound };
      }
      default:
        throw new Error(`unknown op ${step.op}`);
    }
  }
}

test('frames encode and decode', () => {
  for (const vector of vectors.frames) {
    const payload = hex(vector.payload);
    const encoded = encodeFrame(vector.kind, vector.channel, vector.offset, payload);
    assert.equal(encoded.toString('hex'), vector.hex);
    const [frame, ...rest] = new FrameDecoder().feed(encoded);
    assert.deepEqual(rest, []);
    assert.deepEqual(
      {
        kind: frame.kind,
        channel: frame.channel,
        offset: frame.offset,
        payload: frame.payload.toString('hex'),
      },
      {
        kind: vector.kind,
        channel: vector.channel,
        offset: vector.offset,
        payload: vector.payload,
      },
    );
  }
});

test('frames decode from any split of the byte stream', () => {
  const stream = Buffer.concat(vectors.frames.map((vector) => hex(vector.hex)));
  for (const size of [1, 3, 17, 4096]) {
    const decoder = new FrameDecoder();
    const frames = [];
    for (let start = 0; start < stream.length; start += size) {
      frames.push(...decoder.feed(stream.subarray(start, start + size)));
    }
    assert.deepEqual(
      frames.map((frame) => frame.payload.toString('hex')),
      vectors.frames.map((vector) => vector.payload),
    );
    assert.equal(decoder.buffered, 0);
  }
});

test('the decoder refuses what the vectors refuse', () => {
  for (const vector of vectors.decoder_errors) {
    assert.throws(() => new FrameDecoder().feed(hex(vector.hex)), LinkError, vector.why);
  }
});

test('AUTH carries the HMAC-SHA256 proof', () => {
  for (const vector of vectors.proofs) {
    const link = new Link(vector.role, vector.instance, hex(vector.token), [], []);
    link.connectionMade();
    link.dataToSend();
    const peer = vector.role === 'hub' ? 'runner' : 'hub';
    const hello = { role: peer, instance: vector.instance, version: 1, nonce: vector.nonce };
    link.receiveData(encodeFrame(Kind.HELLO, 0, 0, Buffer.from(JSON.stringify(hello))));
    const [auth] = new FrameDecoder().feed(link.dataToSend());
    assert.equal(auth.kind, Kind.AUTH);
    assert.equal(JSON.parse(auth.payload).proof, vector.proof);
  }
});

for (const scenario of vectors.scenarios) {
  test(`scenario: ${scenario.name}`, () => {
    const pair = new Pair(scenario.links);
    scenario.steps.forEach((step, number) => {
      const plain = {};
      const expected = {};
      for (const [key, value] of Object.entries(step))
        (RESULT_KEYS.includes(key) ? expected : plain)[key] = value;
      assert.deepEqual(pair.run(plain), expected, `step ${number}: ${JSON.stringify(plain)}`);
    });
  });
}

// A socket reading into a ReadSlab, in reads of the given sizes: what the decoder makes of it.
function readThroughSlab(stream, sizes, slab, slabs) {
  const decoder = new FrameDecoder();
  const frames = [];
  let start = 0;
  for (let index = 0; start < stream.length; index++) {
    const room = slab.next();
    slabs.add(room.buffer);
    const nbytes = Math.min(sizes[index % sizes.length], room.length, stream.length - start);
    stream.copy(room, 0, start, start + nbytes);
    frames.push(...decoder.feed(slab.filled(nbytes)));
    start += nbytes;
  }
  assert.equal(decoder.buffered, 0);
  return frames;
}

test('frames read into a slab are views of it, and whole across slabs', () => {
  const payloads = [];
  for (let n = 0; n < 40; n++) payloads.push(Buffer.alloc(10000 + n * 7, n));
  const stream = Buffer.concat(
    payloads.map((payload, n) => encodeFrame(Kind.DATA, 5, n * 20000, payload)),
  );
  const slab = new ReadSlab({ small: 16 * 1024, big: 64 * 1024, minRead: 1024 });
  const slabs = new Set();
  const frames = readThroughSlab(stream, [3000, 17, 9000, 4096], slab, slabs);
  assert.deepEqual(
    frames.map((frame) => frame.payload),
    payloads,
  );
  // Only a frame crossing into a new slab was copied; frames that spanned reads within one
  // slab are views of it.
  const copied = frames.filter((frame) => !slabs.has(frame.payload.buffer)).length;
  assert.ok(slabs.size > 4, `${slabs.size} slabs`);
  assert.ok(copied <= slabs.size - 1, `${copied} of ${frames.length} copied`);
});

test('the decoder joins only views that are next to each other in memory', () => {
  const memory = Buffer.from('0123456789abcdef'.repeat(4));
  const frame = encodeFrame(Kind.DATA, 5, 0, Buffer.from('hello, world'));
  const shared = Buffer.alloc(frame.length * 2);
  frame.copy(shared, 0);
  const decoder = new FrameDecoder();
  // Two views of one buffer, not adjacent (a gap between them): they must not be joined.
  assert.deepEqual(decoder.feed(shared.subarray(0, 10)), []);
  memory.copy(shared, 10, 0, 4); // bytes in the gap that are not part of the stream
  frame.copy(shared, 14, 10);
  const [decoded] = decoder.feed(shared.subarray(14, 14 + frame.length - 10));
  assert.equal(decoded.payload.toString(), 'hello, world');
});

test('a slab is big only while reads fill all the room they are given', () => {
  const slab = new ReadSlab({ small: 64, big: 1024, minRead: 16 });
  const lengths = new Set();
  const read = (nbytes) => {
    const room = slab.next();
    lengths.add(slab.slab.length);
    slab.filled(Math.min(nbytes, room.length));
  };
  for (let n = 0; n < 20; n++) read(4); // a trickle through several slabs: all small
  assert.deepEqual([...lengths], [64]);
  for (let n = 0; n < 4; n++) read(100000); // reads that fill their room: the stream is fast
  assert.equal(slab.slab.length, 1024);
  for (let n = 0; n < 300; n++) read(4); // slow again: the next slab is small
  assert.equal(slab.slab.length, 64);
});
