'use strict';
// The sequence's input stream and the encoding of its output, as STH's runner has them.

const { Readable } = require('node:stream');
const { StringDecoder } = require('node:string_decoder');

const TEXT = 'text/plain';
const BINARY = 'application/octet-stream';
const NDJSON = 'application/x-ndjson';
const NDJSON_TYPES = [NDJSON, 'text/x-ndjson'];
// InputStream.rawOf: how many text chunks it remembers, and the smallest worth remembering.
const RECENT_CHUNKS = 4;
const RECENT_MIN_BYTES = 4096;
// A header block longer than this is not a header block: refuse rather than buffer forever.
const MAX_HEADER_BLOCK = 8192;
const HEADER_END = Buffer.from('\r\n\r\n');

/** The media type si understands for a Content-Type value, or null. */
function mediaType(contentType) {
  const media = String(contentType).split(';')[0].trim().toLowerCase();
  if (media.endsWith('x-ndjson')) return NDJSON; // STH's JS runner accepts any *x-ndjson
  if (media === TEXT || media === BINARY) return media;
  return null;
}

/**
 * The input of a sequence: an object-mode Readable fed with the raw bytes of the INPUT channel.
 *
 * Unless the type is declared (a topic declaration), the bytes start with a header block
 * `Content-Type: <type>\r\n\r\n`. Chunks are then, as in STH's Node runner: text/plain UTF-8
 * strings as they arrive (not split into lines), application/octet-stream Buffers, and
 * application/x-ndjson one parsed value per line (JSON null cannot travel in a Node stream and
 * is skipped). `contentType` tells the type once known.
 *
 * With objectMode false (stdin) it is a plain byte stream of application/octet-stream.
 *
 * onConsumed(n) is called when n raw bytes were decoded for the sequence: that acknowledgement
 * is what lets the hub send more, so a sequence that stops reading stops its input.
 */
class InputStream extends Readable {
  constructor(onConsumed, contentType = null, { objectMode = true } = {}) {
    // One decoded chunk buffered ahead of the reader: the window, not this buffer, does the
    // buffering, and consumption is reported as the sequence reads. (A byte stream, for stdin,
    // keeps Node's usual 16 KiB.)
    super(objectMode ? { objectMode, highWaterMark: 1 } : {});
    this.onConsumed = onConsumed;
    this.contentType = null;
    this.raw = []; // buffers from the link, not yet decoded
    this.rawEnded = false;
    this.wanted = false;
    this.done = false;
    this.header = Buffer.alloc(0);
    this.text = new StringDecoder('utf8');
    this.partial = '';
    this.recent = []; // [text, raw] of the last text chunks that were plain ASCII (see rawOf)
    if (contentType) this.setContentType(contentType);
  }

  // -- fed by the runner -------------------------------------------------------------------

  feed(data) {
    this.raw.push(data);
    if (this.wanted) this._pump();
  }

  end() {
    this.rawEnded = true;
    if (this.wanted) this._pump();
  }

  setContentType(contentType) {
    const media = mediaType(contentType);
    if (media === null) {
      this.destroy(new Error(`unsupported input content type ${JSON.stringify(contentType)}`));
      return;
    }
    this.contentType = media;
  }

  // -- read by the sequence ----------------------------------------------------------------

  _read() {
    this.wanted = true;
    this._pump();
  }

  _pump() {
    while (this.wanted && !this.done && !this.destroyed) {
      if (!this.raw.length) {
        if (this.rawEnded) this._finish();
        return;
      }
      const raw = this.raw.shift();
      this.onConsumed(raw.length);
      let items;
      try {
        items = this._decode(raw);
      } catch (error) {
        this.destroy(error);
        return;
      }
      for (const item of items) if (!this.push(item)) this.wanted = false;
    }
  }

  _finish() {
    this.done = true;
    try {
      const rest = this.partial + this.text.end();
      this.partial = '';
      if (this.contentType === TEXT && rest) this.push(rest);
      else if (this.contentType === NDJSON)
        for (const value of parseLines([rest])) this.push(value);
    } catch (error) {
      this.destroy(error);
      return;
    }
    this.push(null);
  }

  _decode(raw) {
    if (this.contentType === null) {
      raw = this._takeHeader(raw);
      if (this.contentType === null || !raw.length) return [];
    }
    if (this.contentType === BINARY) return [raw];
    const text = this.text.write(raw);
    if (this.contentType === TEXT) {
      if (text.length === raw.length && raw.length >= RECENT_MIN_BYTES) this._remember(text, raw);
      return text ? [text] : [];
    }
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop();
    return parseLines(lines);
  }

  /**
   * The bytes a string decoded from this input came from, when it is one of the last few text
   * chunks and they were plain ASCII (so those bytes are its UTF-8 as they are); else null.
   *
   * A passthrough writes back the very strings it read: encoding them again would allocate and
   * copy every chunk a second time (a fifth of a 1 KiB-line passthrough's CPU, measured). A
   * string of equal content has the same UTF-8, so a match by value is right whatever the
   * sequence did. Older chunks than the match are forgotten: output follows input in order.
   */
  rawOf(text) {
    const recent = this.recent;
    for (let index = 0; index < recent.length; index++) {
      if (recent[index][0] === text) {
        const raw = recent[index][1];
        recent.splice(0, index + 1);
        return raw;
      }
    }
    return null;
  }

  _remember(text, raw) {
    if (this.recent.length >= RECENT_CHUNKS) this.recent.shift();
    this.recent.push([text, raw]);
  }

  _takeHeader(raw) {
    this.header = Buffer.concat([this.header, raw]);
    const end = this.header.indexOf(HEADER_END);
    if (end < 0) {
      if (this.header.length > MAX_HEADER_BLOCK) {
        throw new Error('input does not start with a Content-Type header block');
      }
      return Buffer.alloc(0);
    }
    const headers = {};
    for (const line of this.header.subarray(0, end).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      const key = (colon < 0 ? line : line.slice(0, colon)).trim().toLowerCase();
      headers[key] = colon < 0 ? '' : line.slice(colon + 1).trim();
    }
    const rest = this.header.subarray(end + HEADER_END.length);
    this.header = Buffer.alloc(0);
    const media = mediaType(headers['content-type'] || '');
    if (media === null) {
      throw new Error(`unsupported input content type ${JSON.stringify(headers['content-type'])}`);
    }
    this.contentType = media;
    return rest;
  }
}

function parseLines(lines) {
  const values = [];
  for (const line of lines) {
    if (!line.trim()) continue;
    const value = JSON.parse(line);
    if (value !== null) values.push(value);
  }
  return values;
}

// -- output --------------------------------------------------------------------------------

const isReadable = (value) =>
  value instanceof Readable ||
  (value !== null &&
    typeof value === 'object' &&
    typeof value.pipe === 'function' &&
    typeof value[Symbol.asyncIterator] === 'function');

const isIterable = (value) =>
  value !== null &&
  typeof value === 'object' &&
  !Buffer.isBuffer(value) &&
  !(value instanceof Uint8Array) &&
  (typeof value[Symbol.asyncIterator] === 'function' ||
    typeof value[Symbol.iterator] === 'function');

// Encoders return strings where they can: the runner joins a batch of strings and encodes it
// once, which costs far less (time and garbage) than a Buffer per item.
function jsonLine(item) {
  const text = JSON.stringify(item);
  return text === undefined ? null : text + '\n';
}

/** NDJSON: every item one JSON line (STH's rule for object streams, generators, iterables). */
function encodeNdjson(item) {
  return item === undefined ? null : jsonLine(item);
}

/** Raw: strings as UTF-8 and bytes as they are; anything else still one JSON line. */
function encodeRaw(item) {
  if (typeof item === 'string') return item;
  if (Buffer.isBuffer(item)) return item;
  if (item instanceof Uint8Array) return Buffer.from(item.buffer, item.byteOffset, item.byteLength);
  if (item === undefined || item === null) return null;
  return jsonLine(item);
}

/** The names of the classes `value` is an instance of, nearest first. */
function classNames(value) {
  const names = [];
  for (let proto = Object.getPrototypeOf(value); proto; proto = Object.getPrototypeOf(proto)) {
    if (proto.constructor && proto.constructor.name) names.push(proto.constructor.name);
  }
  return names;
}

/**
 * A scramjet object stream: a DataStream that is not a StringStream or BufferStream. Known by
 * class name, as the runner does not load scramjet (a sequence brings its own copy).
 */
function isScramjetObjectStream(source) {
  const names = classNames(source);
  return (
    names.includes('DataStream') &&
    !names.includes('StringStream') &&
    !names.includes('BufferStream')
  );
}

/**
 * How the items of a returned stream or iterable become bytes, by STH's rule.
 *
 * A declared `contentType` on the returned object decides (NDJSON types: JSON lines; text/plain
 * or application/octet-stream: raw). Undeclared, a Node Readable is piped raw, object mode or
 * not (so `Readable.from(generator)` of strings writes the strings themselves), except a
 * scramjet DataStream of objects; generators, arrays and other iterables are NDJSON. Raw writes
 * a non-string item as one JSON line where STH's pipe would fail the instance. The input stream
 * declares its own type, so a passthrough writes back what came in. Called at the first item,
 * when the input's type is known.
 */
function encoderFor(source) {
  const declared = source.contentType ? mediaType(source.contentType) : null;
  if (declared === NDJSON) return encodeNdjson;
  if (declared === TEXT || declared === BINARY) return encodeRaw;
  if (source instanceof Readable && !isScramjetObjectStream(source)) return encodeRaw;
  return encodeNdjson;
}

/**
 * A value returned once (not a stream or iterable): written once, then the output ends.
 * undefined and null write nothing (STH writes the text "undefined": a quirk not kept).
 */
function encodeValue(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'object' && !Buffer.isBuffer(value) && !(value instanceof Uint8Array)) {
    return jsonLine(value);
  }
  if (typeof value === 'string' || Buffer.isBuffer(value) || value instanceof Uint8Array) {
    return encodeRaw(value);
  }
  return String(value);
}

module.exports = {
  BINARY,
  InputStream,
  NDJSON,
  NDJSON_TYPES,
  TEXT,
  encodeRaw,
  encodeValue,
  encoderFor,
  isIterable,
  isReadable,
  mediaType,
};
