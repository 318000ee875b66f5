import type { StoredRecord, TokenStore } from './index.js';

/** The part of VS Code's SecretStorage (context.secrets) the adapter uses. */
export interface SecretStorageLike {
  get(key: string): PromiseLike<string | undefined>;
  store(key: string, value: string): PromiseLike<void>;
  delete(key: string): PromiseLike<void>;
  onDidChange?: (listener: (e: { key: string }) => any) => { dispose(): any };
}

/** A token store over SecretStorage; pass a FileLock shared by the windows as `lock`. */
export class SecretStorageStore implements TokenStore {
  constructor(secrets: SecretStorageLike, options?: {
    prefix?: string;
    lock?: { withLock<T>(key: string, fn: () => Promise<T>): Promise<T> };
  });
  get(key: string): Promise<StoredRecord | null>;
  set(key: string, record: StoredRecord): Promise<void>;
  delete(key: string): Promise<void>;
  withLock<T>(key: string, fn: () => Promise<T>): Promise<T>;
  onDidChange(key: string, listener: () => void): { dispose(): any } | null;
}
