import type { StoredRecord, TokenStore } from './index.js';

export interface FileLockOptions {
  /** A lock not touched for this long (ms, default 30000), or whose process is gone, is broken. */
  staleMs?: number;
  /** Give up waiting after this long (ms, default 60000): LockTimeoutError. */
  waitMs?: number;
  /** How often a waiter looks again (ms, default 25). */
  pollMs?: number;
}

export function fileNameOf(key: string): string;

/** A cross-process lock per key: <dir>/<key>.lock created with O_EXCL. */
export class FileLock {
  constructor(dir: string, options?: FileLockOptions);
  readonly dir: string;
  withLock<T>(key: string, fn: () => Promise<T>): Promise<T>;
  acquire(key: string): Promise<{ release(): Promise<void> }>;
}

/** Tokens in <dir>/<key>.json (0600, atomic replace), shared by processes, locked with a FileLock. */
export class FileStore implements TokenStore {
  constructor(dir: string, lockOptions?: FileLockOptions);
  readonly dir: string;
  readonly lock: FileLock;
  get(key: string): Promise<StoredRecord | null>;
  set(key: string, record: StoredRecord): Promise<void>;
  delete(key: string): Promise<void>;
  withLock<T>(key: string, fn: () => Promise<T>): Promise<T>;
}
