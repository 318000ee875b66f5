// One add-in process for processes.test.mjs: a TokenClient over a FileStore
// shared with the other processes.  Waits until --start-at (epoch ms), makes
// one call, prints {sub, session_id, refreshes, signedOut, error} as JSON.
//   node worker.mjs <url> <anonKey> <storeDir> <startAt> [refreshDelayMs]
import { TokenClient } from '../src/index.js';
import { FileStore } from '../src/file-store.js';

const [url, anonKey, dir, startAt, delay = '0'] = process.argv.slice(2);
let refreshes = 0;
const f = async (input, init) => {
  if (String(input).includes('/rpc/extension_token_refresh')) {
    refreshes += 1;
    // a slow network: both processes are surely in their refresh at once
    await new Promise((r) => { setTimeout(r, Number(delay)); });
  }
  return fetch(input, init);
};
let signedOut = null;
const client = new TokenClient({
  url, anonKey, fetch: f, store: new FileStore(dir), onSignedOut: (e) => { signedOut = e.reason; },
});
await new Promise((r) => { setTimeout(r, Math.max(0, Number(startAt) - Date.now())); });
const out = { refreshes };
try {
  const me = await client.rpc('whoami');
  out.sub = me.sub;
  out.session_id = me.session_id;
} catch (e) {
  out.error = `${e.name}: ${e.message}`;
}
out.refreshes = refreshes;
out.signedOut = signedOut;
process.stdout.write(`${JSON.stringify(out)}\n`);
