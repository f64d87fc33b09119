// list.mjs — the apify-client peer: list every key of store "bench" with the
// official JavaScript client and print "count sum".
// Usage: node bench/js/list.mjs BASE_URL   (BASE_URL without /v2: the client
// appends it).  The client keeps connections alive and asks for gzip.
import { ApifyClient } from 'apify-client';

const baseUrl = process.argv[2];
if (!baseUrl) {
    console.error('usage: node list.mjs BASE_URL');
    process.exit(2);
}
const WORK = Number(process.env.WORK || 0);
let acc = 0;

const client = new ApifyClient({ baseUrl, token: 'bench' });
const store = client.keyValueStore('bench');

let n = 0;
let sum = 0;
let exclusiveStartKey;
for (;;) {
    const page = await store.listKeys({ limit: 1000, exclusiveStartKey });
    for (const item of page.items) {
        n += 1;
        sum += item.size;
        for (let i = 1; i <= WORK; i++) acc += i % 7;
    }
    if (!page.isTruncated) break;
    exclusiveStartKey = page.nextExclusiveStartKey;
}
console.log(`${n} ${sum}`);
if (WORK > 0) console.error(`work ${acc}`);
