'use strict';
// Input decoding and output encoding of the Node.js runner, without a hub.

const assert = require('node:assert/strict');
const { Readable } = require('node:stream');
const { test } = require('node:test');

const { InputStream, encodeValue, encoderFor } = require('../streams.js');

/** Feed `chunks` (strings or Buffers) to a new InputStream; returns its items and consumption. */
async function decode(chunks, contentType = null) {
  let consumed = 0;
  const input = new InputStream((n) => (consumed += n), contentType);
  for (const chunk of chunks) input.feed(Buffer.from(chunk));
  input.end();
  const items = [];
  for await (const item of input) items.push(item);
  return { items, consumed, contentType: input.contentType };
}

test('the header block may arrive in pieces, and data may follow it in the same chunk', async () => {
  const { items, consumed, contentType } = await decode([
    'Content-Ty',
    'pe: text/plain\r',
    '\n\r\nab',
    'c',
  ]);
  assert.equal(contentType, 'text/plain');
  assert.deepEqual(items, ['ab', 'c']);
  assert.equal(consumed, 31);
});

test('text keeps characters split between chunks whole', async () => {
  const euro = Buffer.from('€'); // three bytes
  const { items } = await decode([
    Buffer.concat([Buffer.from('Content-Type: text/plain\r\n\r\n'), euro.subarray(0, 1)]),
    euro.subarray(1),
  ]);
  assert.equal(items.join(''), '€');
});

test('binary chunks arrive as the Buffers that came', async () => {
  const { items } = await decode(['Content-Type: application/octet-stream\r\n\r\n', '\x00\x01']);
  assert.ok(items.every(Buffer.isBuffer));
  assert.deepEqual(Buffer.concat(items), Buffer.from([0, 1]));
});

test('NDJSON values are parsed per line across chunks; blank lines and null are skipped', async () => {
  const { items } = await decode([
    'Content-Type: application/x-ndjson; charset=utf-8\r\n\r\n{"a":',
    '1}\n\n"x"\nnull\n[2]',
  ]);
  assert.deepEqual(items, [{ a: 1 }, 'x', [2]]);
});

test('a declared type needs no header block', async () => {
  const { items } = await decode(['1\n2\n'], 'text/x-ndjson');
  assert.deepEqual(items, [1, 2]);
});

test('an unsupported type or a missing header block fails the reader', async () => {
  await assert.rejects(
    decode(['Content-Type: application/xml\r\n\r\n<a/>']),
    /unsupported input content type/,
  );
  await assert.rejects(decode(['x'.repeat(9000)]), /Content-Type header block/);
  await assert.rejects(decode(['Content-Type: application/x-ndjson\r\n\r\n{oops}\n']), SyntaxError);
});

test('input is consumed only as it is read', async () => {
  let consumed = 0;
  const input = new InputStream((n) => (consumed += n), 'application/octet-stream');
  for (let n = 0; n < 10; n++) input.feed(Buffer.alloc(100));
  await new Promise(setImmediate);
  assert.equal(consumed, 0);
  const reader = input[Symbol.asyncIterator]();
  await reader.next();
  assert.ok(consumed <= 200, `consumed ${consumed} after one read`);
});

test('output encoding follows the source', () => {
  const text = (encode, item) => String(encode(item));
  assert.equal(text(encoderFor((async function* () {})()), 'a'), '"a"\n');
  assert.equal(text(encoderFor(Readable.from([1])), { n: 1 }), '{"n":1}\n');
  // STH pipes any Node Readable raw, object mode too: Readable.from of strings is the strings.
  assert.equal(text(encoderFor(Readable.from(['a'])), 'line\n'), 'line\n');
  // ... except a scramjet DataStream of objects, known by its class names.
  class DataStream extends Readable {}
  class StringStream extends DataStream {}
  class BufferStream extends DataStream {}
  class Mapped extends DataStream {}
  assert.equal(text(encoderFor(new Mapped({ objectMode: true })), 'a'), '"a"\n');
  assert.equal(text(encoderFor(new StringStream({ objectMode: true })), 'a'), 'a');
  assert.equal(text(encoderFor(new BufferStream()), Buffer.from('b')), 'b');
  assert.equal(text(encoderFor(new Readable({ read() {} })), 'raw'), 'raw');
  const declared = Object.assign((async function* () {})(), { contentType: 'text/plain' });
  assert.equal(text(encoderFor(declared), 'raw'), 'raw');
  assert.equal(encoderFor(declared)(undefined), null);
  assert.equal(encoderFor([])(undefined), null);
});

test('a value returned once', () => {
  assert.equal(encodeValue(undefined), null);
  assert.equal(encodeValue(null), null);
  assert.equal(encodeValue(42), '42');
  assert.equal(encodeValue(false), 'false');
  assert.equal(encodeValue('text'), 'text');
  assert.deepEqual(encodeValue(Buffer.from([1])), Buffer.from([1]));
  assert.equal(encodeValue({ a: 1 }), '{"a":1}\n');
});

test('a text chunk read back as it came is written from its own bytes', async () => {
  const input = new InputStream(() => {}, 'text/plain');
  const ascii = Buffer.from('x'.repeat(8191) + '\n');
  const accented = Buffer.from('é'.repeat(4096));
  input.feed(ascii);
  input.feed(accented);
  input.end();
  const items = [];
  for await (const item of input) items.push(item);
  assert.equal(items.length, 2);
  assert.equal(input.rawOf(items[1]), null); // not ASCII: its UTF-16 length is not its size
  assert.equal(input.rawOf('y'.repeat(8192)), null);
  assert.equal(input.rawOf(items[0]), ascii); // the very buffer, not a copy
  assert.equal(input.rawOf(items[0]), null); // matched once, then forgotten
});
