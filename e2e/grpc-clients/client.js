// A proxyless gRPC client (@grpc/grpc-js with @grpc/grpc-js-xds) for the end-to-end tests.
//
// Reads its xDS bootstrap from GRPC_XDS_BOOTSTRAP (written by the harness), dials xds:///TARGET, and
// calls the unary METHOD (raw bytes, no schema) one call at a time, one every --interval-ms, each with
// a deadline. Writes one JSON line per call to stdout, like client.py:
//   {"ok": true, "body": "us-east1-b", "backend": "us-east1-b-0", "ms": 3}
//   {"ok": false, "code": "UNAVAILABLE", "error": "...", "ms": 1}
// Stops by itself after --max-seconds, or when stdout is closed (the harness went away). Once the
// --stop-file exists it makes no more calls, prints {"stopped": true} once, and stays up with its
// channel (so its xDS and load-report streams live on) until --max-seconds or killed.
'use strict';

// Registers the xds: scheme with grpc-js; must come before any channel is made.
require('@grpc/grpc-js-xds').register();
const fs = require('fs');
const grpc = require('@grpc/grpc-js');

function parseArgs(argv) {
  const args = {
    target: null,
    method: '/e2e.Echo/Who',
    'interval-ms': 20,
    'deadline-ms': 1000,
    'max-seconds': 600,
    'stop-file': '',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      throw new Error(`client.js: unknown or incomplete argument ${argv[i]}`);
    }
    const text = key === 'target' || key === 'method' || key === 'stop-file';
    args[key] = text ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!args.target) {
    throw new Error('client.js: --target is required (e.g. xds:///echo.demo:8080)');
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
if (!process.env.GRPC_XDS_BOOTSTRAP) {
  console.error('client.js: GRPC_XDS_BOOTSTRAP is not set');
  process.exit(2);
}
// The harness closed our stdout: nobody reads the results any more.
process.stdout.on('error', () => process.exit(0));

const client = new grpc.Client(args.target, grpc.credentials.createInsecure());
const identity = (x) => x;
const stopAt = Date.now() + args['max-seconds'] * 1000;
let nextAt = Date.now();

function callOnce() {
  if (Date.now() >= stopAt) {
    client.close();
    process.exit(0);
  }
  if (args['stop-file'] && fs.existsSync(args['stop-file'])) {
    process.stdout.write(JSON.stringify({ stopped: true }) + '\n');
    setTimeout(() => {
      client.close();
      process.exit(0);
    }, Math.max(0, stopAt - Date.now()));
    return;
  }
  const started = Date.now();
  let backend = '';
  const deadline = new Date(started + args['deadline-ms']);
  const call = client.makeUnaryRequest(
    args.method, identity, identity, Buffer.alloc(0), new grpc.Metadata(), { deadline },
    (err, body) => {
      const line = err
        ? { ok: false, code: grpc.status[err.code] || String(err.code), error: err.details || '' }
        : { ok: true, body: body.toString('utf8'), backend };
      line.ms = Date.now() - started;
      process.stdout.write(JSON.stringify(line) + '\n');
      nextAt = Math.max(nextAt + args['interval-ms'], Date.now());
      setTimeout(callOnce, nextAt - Date.now());
    });
  call.on('metadata', (metadata) => {
    const names = metadata.get('x-backend');
    if (names.length > 0) {
      backend = String(names[0]);
    }
  });
}

callOnce();
