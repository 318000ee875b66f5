// Token storage.  A store keeps one record per key:
//   {access_token, refresh_token, token_type, expires_at, refresh_expires_at,
//    session_id, scopes, obtained_at}            a session
//   {signed_out: {reason, at}}                   a tombstone: the session ended
// and may offer withLock(key, fn): fn runs while no other holder of the same
// lock (in this process or, for a shared store, in another) runs. The client
// refreshes only under that lock, after reading the store again: whoever got
// the lock second finds the new pair and uses it instead of refreshing.
//
// Interface (what the client calls):
//   get(key) -> Promise<record | null>
//   set(key, record) -> Promise<void>
//   delete(key) -> Promise<void>
//   withLock?(key, fn) -> Promise<result of fn>      optional; in-process lock if absent

const clone = (v) => (v == null ? null : JSON.parse(JSON.stringify(v)));

/** A FIFO mutex per key, for one process. */
export class KeyedMutex {
  #tails = new Map();

  /** @template T @param {string} key @param {() => Promise<T>} fn @returns {Promise<T>} */
  async withLock(key, fn) {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release;
    const mine = new Promise((resolve) => { release = resolve; });
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

/** Tokens in memory: for tests, short-lived tools, or a process that signs in each time. */
export class MemoryStore {
  #data = new Map();
  #mutex = new KeyedMutex();

  async get(key) { return clone(this.#data.get(key)); }

  async set(key, record) { this.#data.set(key, clone(record)); }

  async delete(key) { this.#data.delete(key); }

  withLock(key, fn) { return this.#mutex.withLock(key, fn); }
}
