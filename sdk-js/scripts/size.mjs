// npm run size: the minified + gzipped size of the browser bundle; fails
// over the budget.
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET = 50 * 1024;
const min = readFileSync('dist/rtn.min.js');
const gz = gzipSync(min, { level: 9 }).length;
console.log(`dist/rtn.min.js: ${min.length} bytes minified, ${gz} bytes gzipped (budget ${BUDGET})`);
if (gz > BUDGET) {
  console.error(`bundle too large: ${gz} > ${BUDGET} bytes gzipped`);
  process.exit(1);
}
