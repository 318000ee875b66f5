// A token store in a directory, shared by every process that opens the same
// directory (several VS Code windows, a CLI and its daemon), and the lock that
// makes one of them refresh while the others wait and then read the new pair.
// Node.js only (node:fs); import it as '<package>/file-store'.
//
// Layout: <dir>/<key>.json (mode 0600, synced, replaced atomically by rename) and,
// while someone holds the lock, <dir>/<key>.lock, created with O_EXCL and
// holding {id, pid, host, at}.  The holder touches the lock file every
// staleMs / 3; a lock file whose owner process is gone (same host) or that was
// not touched for staleMs is stale and is broken by the next waiter.
// Tokens on disk are as safe as the directory: prefer an OS keychain
// (VS Code SecretStorage, see ./vscode.js) where there is one, with a FileLock
// next to it.

import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { LockTimeoutError } from './errors.js';

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** A file name for a store key: letters, digits, '_' and '-' kept, the rest %-escaped. */
export function fileNameOf(key) {
  return String(key).replace(/[^A-Za-z0-9_-]/gu,
    (c) => [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''));
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code !== 'ESRCH';
  }
}

/** A cross-process lock per key: a lock file created with O_EXCL in `dir`. */
export class FileLock {
  /**
   * @param {string} dir
   * @param {{staleMs?: number, waitMs?: number, pollMs?: number}} [options]
   *   staleMs (default 30000): a lock not touched for this long is broken;
   *   waitMs (default 60000): give up waiting (LockTimeoutError);
   *   pollMs (default 25): how often a waiter looks again.
   */
  constructor(dir, { staleMs = 30000, waitMs = 60000, pollMs = 25 } = {}) {
    this.dir = dir;
    this.staleMs = staleMs;
    this.waitMs = waitMs;
    this.pollMs = pollMs;
  }

  /** @template T @param {string} key @param {() => Promise<T>} fn @returns {Promise<T>} */
  async withLock(key, fn) {
    const held = await this.acquire(key);
    try {
      return await fn();
    } finally {
      await held.release();
    }
  }

  /** Waits for the lock; resolves to {release()}. */
  async acquire(key) {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = join(this.dir, `${fileNameOf(key)}.lock`);
    const me = { id: randomBytes(12).toString('hex'), pid: process.pid, host: hostname(), at: Date.now() };
    const deadline = Date.now() + this.waitMs;
    for (;;) {
      try {
        const fh = await fs.open(path, 'wx', 0o600);
        try {
          await fh.writeFile(JSON.stringify(me));
        } finally {
          await fh.close();
        }
        return this.#held(path, me);
      } catch (e) {
        if (e.code !== 'EEXIST') throw e;
      }
      await this.#breakIfStale(path);
      if (Date.now() > deadline) throw new LockTimeoutError(`could not lock ${path} within ${this.waitMs} ms`);
      await sleep(this.pollMs + Math.floor(Math.random() * this.pollMs));
    }
  }

  #held(path, me) {
    const owned = async () => {
      try {
        return JSON.parse(await fs.readFile(path, 'utf8')).id === me.id;
      } catch {
        return false;
      }
    };
    const beat = setInterval(async () => {
      if (await owned()) {
        const t = new Date();
        await fs.utimes(path, t, t).catch(() => {});
      }
    }, Math.max(50, Math.floor(this.staleMs / 3)));
    beat.unref?.();
    return {
      release: async () => {
        clearInterval(beat);
        if (await owned()) await fs.unlink(path).catch(() => {});
      },
    };
  }

  async #breakIfStale(path) {
    let st;
    let text;
    try {
      st = await fs.stat(path);
      text = await fs.readFile(path, 'utf8');
    } catch {
      return; // gone: the next attempt may get it
    }
    let owner = null;
    try {
      owner = JSON.parse(text);
    } catch {
      owner = null; // being written right now, or garbage
    }
    const age = Date.now() - st.mtimeMs;
    const dead = owner && owner.host === hostname() && Number.isInteger(owner.pid) && !alive(owner.pid);
    if (!dead && age <= this.staleMs) return;
    // Move it aside, then check that what moved is the lock judged stale and
    // not a fresh one that replaced it meanwhile (then put that one back).
    const aside = `${path}.stale.${randomBytes(6).toString('hex')}`;
    try {
      await fs.rename(path, aside);
    } catch {
      return;
    }
    let moved = null;
    try {
      moved = JSON.parse(await fs.readFile(aside, 'utf8'));
    } catch {
      moved = null;
    }
    if (moved && (!owner || moved.id !== owner.id)) await fs.link(aside, path).catch(() => {});
    await fs.unlink(aside).catch(() => {});
  }
}

/** Tokens in files under `dir`, one per key, locked across processes with a FileLock. */
export class FileStore {
  /** @param {string} dir @param {{staleMs?: number, waitMs?: number, pollMs?: number}} [lockOptions] */
  constructor(dir, lockOptions = {}) {
    this.dir = dir;
    this.lock = new FileLock(dir, lockOptions);
  }

  #file(key) { return join(this.dir, `${fileNameOf(key)}.json`); }

  async get(key) {
    let text;
    try {
      text = await fs.readFile(this.#file(key), 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
    try {
      return JSON.parse(text);
    } catch {
      return null; // unreadable: as if empty
    }
  }

  async set(key, record) {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = this.#file(key);
    const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const fh = await fs.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(JSON.stringify(record));
        await fh.sync(); // on disk before the rename: a crash leaves the old pair or the new, not an empty file
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, file);
    } catch (e) {
      await fs.unlink(tmp).catch(() => {});
      throw e;
    }
  }

  async delete(key) { await fs.rm(this.#file(key), { force: true }); }

  withLock(key, fn) { return this.lock.withLock(key, fn); }
}
