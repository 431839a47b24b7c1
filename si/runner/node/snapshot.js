'use strict';
// The runner as one script for a V8 startup snapshot (issue 20: warm spares boot faster).
//
//     node snapshot.js <bundle path>
//     node <flags> --snapshot-blob <blob> --build-snapshot <bundle path>
//     node <flags> --snapshot-blob <blob> --spare
//
// A snapshot holds the heap after the runner's modules have loaded, so a spare booted from one
// skips compiling and running them (~10 ms of CPU a boot here). Its entry script may require
// only Node's built-in modules, so the runner's own files are written into one script, each
// wrapped as a CommonJS module with a `require` that knows them by their `./name.js`. The hub
// builds the blob off the start path and only uses it once built (si/daemon/node.py); the
// runner files stay the ones a cold start runs.

const fs = require('node:fs');
const path = require('node:path');

// Every file runner.js needs, directly or not: a file missing here fails the bundle's build.
const MODULES = ['context.js', 'link.js', 'streams.js', 'runner.js'];

/** The source of the one-file runner. */
function bundle(directory = __dirname) {
  const parts = [
    "'use strict';",
    '// Written by si/runner/node/snapshot.js: the runner for a startup snapshot.',
    'const builtinRequire = require;',
    'const sources = {};',
    'const loaded = {};',
    'function bundledRequire(name) {',
    "  if (!name.startsWith('./')) return builtinRequire(name);",
    '  const key = name.slice(2);',
    '  if (!loaded[key]) {',
    "    if (!sources[key]) throw new Error(`the runner's bundle lacks ${name}`);",
    '    const module = { exports: {} };',
    '    loaded[key] = module;',
    '    sources[key](module, module.exports, bundledRequire);',
    '  }',
    '  return loaded[key].exports;',
    '}',
  ];
  for (const name of MODULES) {
    const source = fs.readFileSync(path.join(directory, name), 'utf8');
    const file = JSON.stringify(path.join(directory, name));
    parts.push(
      `sources[${JSON.stringify(name)}] = function (module, exports, require) {`,
      `const __filename = ${file};`,
      `const __dirname = ${JSON.stringify(directory)};`,
      source,
      '};',
    );
  }
  parts.push(
    "const runner = bundledRequire('./runner.js');",
    '// At run time process.argv is [node, ...arguments]: there is no script path in it.',
    "require('node:v8').startupSnapshot.setDeserializeMainFunction(() =>",
    '  runner.entry(process.argv.slice(1), true),',
    ');',
    '',
  );
  return parts.join('\n');
}

if (require.main === module) fs.writeFileSync(process.argv[2], bundle());

module.exports = { MODULES, bundle };
