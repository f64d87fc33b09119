// bench/realworld.mjs — the apify-client row of bench/realworld.sh: list every key of one
// store with the official JavaScript client (sequential, its only mode; its default retries)
// and print "count sum order", as bench/realworld.lua does.
//
//   node bench/realworld.mjs BASE_URL STORE
//
// apify-client comes from bench/js (pinned there; bench/realworld.sh runs npm ci when missing).
import { createRequire } from 'node:module';

const require = createRequire(new URL('./js/package.json', import.meta.url));
const { ApifyClient } = require('apify-client');

const [baseUrl, name] = process.argv.slice(2);
if (!baseUrl || !name) {
    console.error('usage: node realworld.mjs BASE_URL STORE');
    process.exit(2);
}
const store = new ApifyClient({ baseUrl, token: 'bench' }).keyValueStore(name);
const bytes = (s) => Buffer.from(s, 'utf8');
let n = 0;
let sum = 0;
let prev;
let order = 'ok';
let exclusiveStartKey;
for (;;) {
    const page = await store.listKeys({ limit: 1000, exclusiveStartKey });
    for (const item of page.items) {
        n += 1;
        sum += item.size;
        if (prev !== undefined && order === 'ok' && Buffer.compare(bytes(item.key), bytes(prev)) <= 0) {
            order = 'UNORDERED';
            console.error(`key ${n} ${JSON.stringify(item.key)} after ${JSON.stringify(prev)}`);
        }
        prev = item.key;
    }
    if (!page.isTruncated) break;
    exclusiveStartKey = page.nextExclusiveStartKey ?? page.items.at(-1)?.key;
    if (exclusiveStartKey === undefined) throw new Error('truncated page without a cursor');
}
console.log(`${n} ${sum} ${order}`);
