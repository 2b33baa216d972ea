// Size of the browser build, minified and gzipped, beside the `centrifuge` package measured the
// same way in the same run. Prints a Markdown table; `--out FILE` writes it there too.
//
// Two measurements of each, with the same pipeline (esbuild minify, then `gzip -9`):
// - "browser bundle": the file a page loads. Ours is src/index.ts bundled for the browser;
//   centrifuge's is the dist/centrifuge.js it ships for that purpose.
// - "bundled from the npm entry": what a page's own bundler would add, starting from the
//   package's ES module entry point (ours dist/index.js, centrifuge's build/index.mjs).

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';
import { build, transform, version as esbuildVersion } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
process.chdir(root);
const require = createRequire(import.meta.url);

function gzip9(bytes) {
  try {
    return execFileSync('gzip', ['-9', '-c', '-n'], { input: bytes, maxBuffer: 1 << 26 });
  } catch {
    return gzipSync(bytes, { level: 9 });
  }
}

async function bundle(entry) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    platform: 'browser',
    format: 'esm',
    target: 'es2020',
    logLevel: 'error',
  });
  return result.outputFiles[0].text;
}

async function measure(source) {
  const minified = (await transform(source, { minify: true, target: 'es2020' })).code;
  return { minified: Buffer.byteLength(minified), gzipped: gzip9(Buffer.from(minified)).length };
}

const ours = JSON.parse(readFileSync('package.json', 'utf8'));
// centrifuge's "exports" hide its package.json; its main entry is build/index.js.
const centrifugeDir = require.resolve('centrifuge').replace(/build\/index\.js$/, '');
const centrifuge = JSON.parse(readFileSync(`${centrifugeDir}package.json`, 'utf8'));

const rows = [
  [`${ours.name} ${ours.version}`, 'browser bundle', await measure(await bundle('src/index.ts'))],
  [`centrifuge ${centrifuge.version}`, 'browser bundle (dist/centrifuge.js)', await measure(readFileSync(`${centrifugeDir}dist/centrifuge.js`, 'utf8'))],
  [`${ours.name} ${ours.version}`, 'bundled from the npm entry (dist/index.js)', await measure(await bundle('dist/index.js'))],
  [`centrifuge ${centrifuge.version}`, 'bundled from the npm entry (build/index.mjs)', await measure(await bundle(`${centrifugeDir}build/index.mjs`))],
];

const kb = (n) => `${(n / 1024).toFixed(2)} KB`;
const table = [
  `Browser build size, minified (esbuild ${esbuildVersion} \`minify\`) then \`gzip -9\`, measured by \`cd clients/js && npm ci && npm run size\` (scripts/size.mjs):`,
  '',
  '| package | what | minified | minified + gzip -9 |',
  '| --- | --- | ---: | ---: |',
  ...rows.map(([name, what, m]) => `| ${name} | ${what} | ${m.minified} B | ${m.gzipped} B (${kb(m.gzipped)}) |`),
  '',
].join('\n');

process.stdout.write(table);
const out = process.argv.indexOf('--out');
if (out > 0) writeFileSync(process.argv[out + 1], table);
if (rows[0][2].gzipped >= 4096) {
  console.error(`the browser build is ${rows[0][2].gzipped} B gzipped: over the 4 KB target`);
  process.exitCode = 1;
}
