// Builds dist/: ES module and CommonJS builds of each entry point with their types (.d.ts for
// import, .d.cts for require), and the minified browser build.
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
process.chdir(root);
rmSync('dist', { recursive: true, force: true });

const tsc = (project) => execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', project], { stdio: 'inherit' });
tsc('tsconfig.json');
tsc('tsconfig.admin.json');

const entries = [
  { name: 'index', platform: 'neutral', target: 'es2020' },
  { name: 'admin', platform: 'node', target: 'node18' },
];
for (const { name, platform, target } of entries) {
  // Each entry point is one file with no relative imports, so its declarations serve both formats.
  copyFileSync(`dist/${name}.d.ts`, `dist/${name}.d.cts`);
  const common = { entryPoints: [`src/${name}.ts`], bundle: true, platform, target, logLevel: 'warning' };
  await build({ ...common, format: 'esm', outfile: `dist/${name}.js` });
  await build({ ...common, format: 'cjs', outfile: `dist/${name}.cjs` });
}

// What a page loads: platform "browser" refuses Node built-ins, so none can slip in.
await build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  minify: true,
  platform: 'browser',
  target: 'es2020',
  format: 'esm',
  outfile: 'dist/crier.min.js',
  logLevel: 'warning',
});
