// A token store over VS Code's SecretStorage (context.secrets: the OS keychain),
// shared by every window of VS Code; each window runs its own extension host
// process, so the refresh lock must be cross-process too: pass a FileLock in a
// directory all windows share, e.g.
//
//   import { SecretStorageStore } from '<package>/vscode';
//   import { FileLock } from '<package>/file-store';
//   const store = new SecretStorageStore(context.secrets, {
//     lock: new FileLock(context.globalStorageUri.fsPath),
//   });
//
// Without a lock the store locks within this window only; two windows that
// refresh at the same moment then both present the same refresh token, and the
// server's refresh retry window (extension_tokens.refresh_retry_window, 30 s by
// default) gives both the same new pair.
//
// The adapter needs nothing from the `vscode` module: SecretStorage is any object
// with get(key), store(key, value), delete(key) (and optionally onDidChange).

import { KeyedMutex } from './stores.js';

export class SecretStorageStore {
  #secrets;
  #prefix;
  #lock;

  /**
   * @param {{get(key: string): PromiseLike<string|undefined>, store(key: string, value: string): PromiseLike<void>,
   *          delete(key: string): PromiseLike<void>, onDidChange?: Function}} secrets
   * @param {{prefix?: string, lock?: {withLock(key: string, fn: () => Promise<any>): Promise<any>}}} [options]
   */
  constructor(secrets, { prefix = 'extension_tokens:', lock } = {}) {
    for (const m of ['get', 'store', 'delete']) {
      if (!secrets || typeof secrets[m] !== 'function') throw new TypeError(`SecretStorageStore: secrets.${m} is missing`);
    }
    this.#secrets = secrets;
    this.#prefix = prefix;
    this.#lock = lock ?? new KeyedMutex();
  }

  async get(key) {
    const text = await this.#secrets.get(this.#prefix + key);
    if (text == null || text === '') return null;
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  async set(key, record) { await this.#secrets.store(this.#prefix + key, JSON.stringify(record)); }

  async delete(key) { await this.#secrets.delete(this.#prefix + key); }

  withLock(key, fn) { return this.#lock.withLock(key, fn); }

  /**
   * Calls listener() when another window changed the key (SecretStorage.onDidChange);
   * returns a disposable, or null when the SecretStorage has no such event.
   */
  onDidChange(key, listener) {
    if (typeof this.#secrets.onDidChange !== 'function') return null;
    return this.#secrets.onDidChange((e) => {
      if (e && e.key === this.#prefix + key) listener();
    });
  }
}
