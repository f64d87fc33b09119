// spec/js/compat.cjs — the JavaScript side of spec/compat_spec.lua: implementations of the
// key-listing endpoint that this project did not write, driven from the command line, each
// printing one JSON object on stdout.
//
//   node compat.cjs memory  STORAGE STORE LIMIT [EXCLUSIVE_START_KEY] [COLLECTION]
//       every page of @crawlee/memory-storage's listKeysPage over the same on-disk layout
//   node compat.cjs client  BASE_URL STORE OPTIONS_JSON
//       every page of apify-client's keyValueStore(STORE).listKeys(...), following
//       nextExclusiveStartKey while isTruncated (a loop as its users write it); OPTIONS_JSON:
//       { limit, token, signature, collection, maxRetries, minDelayBetweenRetriesMillis,
//         maxPages }; a failure prints { error: { name, type, statusCode, message } }
//   node compat.cjs sign    SECRET STORE_ID EXPIRES_AT KEY...
//       { keys: <keys-list signature>, records: { key: <record signature> } } from
//       @apify/utilities, the library apify-client signs with
//
// The packages come from spec/js/package-lock.json, installed by `make js-deps` into
// build/js/node_modules (found through NODE_PATH).
'use strict';

const [, , command, ...args] = process.argv;

function out(value) {
    process.stdout.write(`${JSON.stringify(value)}\n`);
}

function errorInfo(e) {
    return { error: { name: e.name, type: e.type, statusCode: e.statusCode, message: e.message } };
}

async function memory([storage, store, limit, exclusiveStartKey, collection]) {
    const { MemoryStorage } = require('@crawlee/memory-storage');
    const ms = new MemoryStorage({ localDataDirectory: storage, persistStorage: false, writeMetadata: false });
    const kv = ms.keyValueStore(store);
    const pages = [];
    let esk = exclusiveStartKey || undefined;
    for (;;) {
        const opts = { limit: Number(limit), exclusiveStartKey: esk };
        if (collection) opts.collection = collection;
        const page = await kv.listKeysPage(opts);
        pages.push(page);
        if (!page.isTruncated || pages.length > 10000) break;
        esk = page.nextExclusiveStartKey;
    }
    out({ pages });
}

async function client([baseUrl, store, optionsJson]) {
    const { ApifyClient } = require('apify-client');
    const o = JSON.parse(optionsJson || '{}');
    const c = new ApifyClient({
        baseUrl,
        token: o.token,
        maxRetries: o.maxRetries ?? 8,
        minDelayBetweenRetriesMillis: o.minDelayBetweenRetriesMillis ?? 500,
    });
    const kv = c.keyValueStore(store);
    const pages = [];
    let exclusiveStartKey;
    const started = Date.now();
    try {
        for (;;) {
            const opts = { limit: o.limit, exclusiveStartKey };
            if (o.signature) opts.signature = o.signature;
            if (o.collection) opts.collection = o.collection;
            const page = await kv.listKeys(opts);
            pages.push(page);
            if (!page.isTruncated || pages.length >= (o.maxPages ?? 10000)) break;
            exclusiveStartKey = page.nextExclusiveStartKey;
        }
    } catch (e) {
        out({ ...errorInfo(e), pages, ms: Date.now() - started });
        return;
    }
    out({ pages, ms: Date.now() - started });
}

function sign([secret, storeId, expiresAt, ...keys]) {
    const u = require('@apify/utilities');
    const mac = u.createHmacSignature(secret, `0.${expiresAt}.${storeId}`);
    const records = {};
    for (const k of keys) records[k] = u.createHmacSignature(secret, k);
    out({ keys: Buffer.from(`0.${expiresAt}.${mac}`).toString('base64url'), records });
}

const commands = { memory, client, sign };
if (!commands[command]) {
    process.stderr.write('usage: node compat.cjs memory|client|sign ...\n');
    process.exit(2);
}
Promise.resolve(commands[command](args)).catch((e) => {
    out(errorInfo(e));
    process.exitCode = 1;
});
