'use strict';
// The runner's hub connection when the hub dies: what the hub wrote before it died is read,
// even when the runner's next write fails first (tests/runner/test_link_server.py is the Python
// runner's twin).

const assert = require('node:assert/strict');
const childProcess = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const { readPastFailedWrites, readingIntoSlabs } = require('../runner.js');

// A hub stand-in in its own process: it connects, writes `size` bytes, closes, and only then
// creates `flag`, so the runner knows every byte is in its socket and the peer is gone.
const PEER = `
const net = require('node:net');
const fs = require('node:fs');
const [sock, size, flag] = process.argv.slice(1);
const c = net.connect(sock, () => {
  c.end(Buffer.alloc(Number(size), 120), () => {
    c.destroy();
    c.on('close', () => fs.writeFileSync(flag, ''));
  });
});
`;

function busyUntil(file, timeoutMs) {
  const until = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > until) throw new Error(`${file} never appeared`);
  }
}

/** Accept one connection from a peer process that writes `size` bytes and dies; the runner
 * writes while it has not read any of them. Resolves with what it read and whether the write
 * failed. */
function readAfterAFailedWrite(size, guard) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'si-hubsock-'));
  const sock = path.join(dir, 's');
  const flag = path.join(dir, 'closed');
  return new Promise((resolve, reject) => {
    let got = 0;
    let writeFailed = false;
    const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
      const socket = readingIntoSlabs(accepted, (data) => {
        got += data.length;
      });
      const write = socket._writeGeneric; // under the guard: sees the write fail
      socket._writeGeneric = function (writev, data, encoding, callback) {
        write.call(this, writev, data, encoding, (error) => {
          if (error) writeFailed = true;
          callback(error);
        });
      };
      if (guard) guard(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        server.close();
        fs.rmSync(dir, { recursive: true, force: true });
        resolve({ got, writeFailed });
      });
      // The loop is held here, after its poll: the peer writes and dies meanwhile, then the
      // runner's write fails before its next read.
      setImmediate(() => {
        busyUntil(flag, 10000);
        socket.write(Buffer.from('output\n'));
      });
    });
    server.on('error', reject);
    server.listen(sock, () => {
      childProcess.spawn(process.execPath, ['-e', PEER, sock, String(size), flag], {
        stdio: 'inherit',
      });
    });
  });
}

test('bytes a dead hub wrote are read although the write before them failed', async () => {
  const { got, writeFailed } = await readAfterAFailedWrite(5000, readPastFailedWrites);
  assert.equal(writeFailed, true, 'the runner never wrote to the dead hub');
  assert.equal(got, 5000);
});

test('without the guard Node drops them (the case the guard is for)', async () => {
  const { got, writeFailed } = await readAfterAFailedWrite(5000, null);
  assert.equal(writeFailed, true);
  assert.equal(got, 0);
});
