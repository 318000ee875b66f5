// Processes sharing one store (a FileStore: a directory, a lock file): one
// refreshes, the others wait for the lock, read the new pair and use it.  On
// the PostgREST whose refresh_retry_window is 0, a second refresh of the same
// token would be reuse and sign every process out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { TokenClient, pairToRecord, SignedOutError } from '../src/index.js';
import { FileStore } from '../src/file-store.js';
import { SecretStorageStore } from '../src/vscode.js';
import { FileLock } from '../src/file-store.js';
import {
  BASE, RETRY_BASE, anonKey, issue, newUser, recordingFetch, sessionRow, tempDir, withClaims,
} from './helpers.mjs';

const run = promisify(execFile);
const WORKER = fileURLToPath(new URL('./worker.mjs', import.meta.url));

async function processes(n, prepare) {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const dir = tempDir('filestore');
  const rec = prepare(pair, pairToRecord(pair));
  await new FileStore(dir).set('session', rec);
  const anon = anonKey();
  const startAt = Date.now() + 1500;
  const outs = await Promise.all(Array.from({ length: n }, () => run(process.execPath,
    [WORKER, BASE(), anon, dir, String(startAt), '300'], { timeout: 60000 })));
  const results = outs.map((o) => JSON.parse(o.stdout.trim().split('\n').pop()));
  const row = await sessionRow(BASE(), sub, pair.session_id);
  const stored = await new FileStore(dir).get('session');
  return { sub, pair, results, row, stored };
}

test('two processes sharing a store, token due: one refresh, neither signs out', async () => {
  const { sub, pair, results, row, stored } = await processes(2, (pair, rec) => {
    rec.expires_at = new Date(Date.now() - 1000).toISOString(); // due (and expired) for both
    return rec;
  });
  for (const r of results) {
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.signedOut, null);
    assert.equal(r.sub, sub);
    assert.equal(r.session_id, pair.session_id);
  }
  assert.equal(results.reduce((s, r) => s + r.refreshes, 0), 1, JSON.stringify(results));
  assert.equal(row.refresh_count, 1);
  assert.equal(row.status, 'active');
  assert.notEqual(stored.refresh_token, pair.refresh_token);
});

test('four processes sharing a store, bearer refused (PGRST301): one refresh, none signs out', async () => {
  const t = Math.floor(Date.now() / 1000);
  const { sub, results, row } = await processes(4, (pair, rec) => {
    rec.access_token = withClaims(pair.access_token, { iat: t - 600, exp: t - 300 });
    return rec; // the record says valid for the lifetime: each process learns from a 401
  });
  for (const r of results) {
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.sub, sub);
  }
  assert.equal(results.reduce((s, r) => s + r.refreshes, 0), 1, JSON.stringify(results));
  assert.equal(row.refresh_count, 1);
  assert.equal(row.status, 'active');
});

// VS Code: every window is a process with its own extension host, all sharing
// SecretStorage.  Two windows here are two SecretStorageStore adapters over one
// fake SecretStorage, each with its own lock object.
function fakeSecretStorage() {
  const m = new Map();
  const listeners = [];
  return {
    map: m,
    get: async (k) => m.get(k),
    store: async (k, v) => { m.set(k, v); listeners.forEach((l) => l({ key: k })); },
    delete: async (k) => { m.delete(k); listeners.forEach((l) => l({ key: k })); },
    onDidChange: (l) => { listeners.push(l); return { dispose() {} }; },
  };
}

async function twoWindows(base, lockDir) {
  const sub = newUser();
  const pair = await issue(base, sub);
  const secrets = fakeSecretStorage();
  const slow = () => recordingFetch({ before: async (c) => { if (c.url.includes('refresh')) await new Promise((r) => { setTimeout(r, 200); }); } });
  const windows = [0, 1].map(() => {
    const f = slow();
    const store = new SecretStorageStore(secrets, lockDir ? { lock: new FileLock(lockDir) } : {});
    const signedOut = [];
    const client = new TokenClient({ url: base, anonKey: anonKey(), fetch: f, store, onSignedOut: (e) => signedOut.push(e.reason) });
    return { f, client, signedOut };
  });
  await windows[0].client.setSession(pair);
  const rec = JSON.parse(secrets.map.get('extension_tokens:session'));
  rec.expires_at = new Date(Date.now() - 1000).toISOString();
  secrets.map.set('extension_tokens:session', JSON.stringify(rec));
  const results = await Promise.allSettled(windows.map((w) => w.client.rpc('whoami')));
  const row = await sessionRow(base, sub, pair.session_id);
  return { sub, pair, windows, results, row, secrets };
}

test('VS Code: two windows over one SecretStorage with a shared FileLock: one refresh, both signed in', async () => {
  const { sub, windows, results, row } = await twoWindows(BASE(), tempDir('vscode-lock'));
  for (const r of results) assert.equal(r.status, 'fulfilled', String(r.reason));
  for (const r of results) assert.equal(r.value.sub, sub);
  assert.equal(windows[0].f.refreshes().length + windows[1].f.refreshes().length, 1);
  assert.equal(row.refresh_count, 1);
  assert.deepEqual(windows.map((w) => w.signedOut), [[], []]);
});

test('VS Code without a shared lock, strict server: both windows refresh, the second is reuse and both are signed out', async () => {
  // What the lock prevents (and what proves the test above can fail).
  const { windows, results, row } = await twoWindows(BASE(), null);
  // (a third refresh may follow: the winner's new pair dies with the session too)
  assert.ok(windows[0].f.refreshes().length >= 1 && windows[1].f.refreshes().length >= 1);
  assert.ok(results.some((r) => r.status === 'rejected' && r.reason instanceof SignedOutError));
  assert.equal(row.status, 'revoked');
  assert.equal(row.revoked_reason, 'refresh_token_reuse');
});

test('VS Code without a shared lock, default retry window: both refresh, both get the same pair, both signed in', async () => {
  const { sub, windows, results, row, secrets } = await twoWindows(RETRY_BASE(), null);
  assert.equal(windows[0].f.refreshes().length + windows[1].f.refreshes().length, 2);
  for (const r of results) assert.equal(r.status, 'fulfilled', String(r.reason));
  for (const r of results) assert.equal(r.value.sub, sub);
  assert.equal(row.refresh_count, 1, 'the second refresh was a retry: same pair, not a new exchange');
  assert.equal(row.status, 'active');
  assert.equal((await windows[1].client.rpc('whoami')).sub, sub);
  assert.equal((await windows[0].client.getSession()).access_token, JSON.parse(secrets.map.get('extension_tokens:session')).access_token);
});
