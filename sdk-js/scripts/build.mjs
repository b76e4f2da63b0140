// npm run build: strict type-check, then the bundles and the declarations.
//   dist/rtn.js            ESM bundle for browsers (and bundlers)
//   dist/rtn.min.js        the same, minified
//   dist/token-server.js   token minting for Node servers (never in a page)
//   dist/types/*.d.ts      declarations
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const tsc = (...args) => execFileSync('npx', ['tsc', ...args], { stdio: 'inherit' });
rmSync('dist', { recursive: true, force: true });
tsc('--noEmit', '-p', 'tsconfig.json');
tsc('--noEmit', '-p', 'tsconfig.test.json');
const browser = { entryPoints: ['src/index.ts'], bundle: true, format: 'esm', platform: 'browser', target: 'es2022', sourcemap: true };
await build({ ...browser, outfile: 'dist/rtn.js' });
await build({ ...browser, outfile: 'dist/rtn.min.js', minify: true });
await build({ entryPoints: ['src/token-server.ts'], bundle: true, format: 'esm', platform: 'node', target: 'node20', outfile: 'dist/token-server.js' });
tsc('--emitDeclarationOnly', '-p', 'tsconfig.json');
console.log('built dist/rtn.js, dist/rtn.min.js, dist/token-server.js, dist/types/');
