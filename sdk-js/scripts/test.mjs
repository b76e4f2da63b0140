// npm test: compile each test/*.test.ts (with the sources it imports) to
// .test-build/ with esbuild, then run them with node's test runner.
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const out = '.test-build';
rmSync(out, { recursive: true, force: true });
const tests = readdirSync('test').filter((f) => f.endsWith('.test.ts')).map((f) => `test/${f}`);
await build({ entryPoints: tests, bundle: true, format: 'esm', platform: 'node', target: 'node20', outdir: out, outExtension: { '.js': '.mjs' }, sourcemap: 'inline' });
const files = tests.map((t) => `${out}/${t.slice('test/'.length).replace(/\.ts$/, '.mjs')}`);
const r = spawnSync(process.execPath, ['--enable-source-maps', '--test', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
