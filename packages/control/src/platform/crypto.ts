/**
 * The randomness seam for cryptographic uses (trace ids, nonces, temporary
 * file names): the only place outside tests that calls node:crypto's
 * randomBytes, so tests can inject a deterministic source.
 */
import { randomBytes } from 'node:crypto';

/** `length` bytes from a cryptographically strong source. */
export type RandomBytes = (length: number) => Uint8Array;

export const systemRandomBytes: RandomBytes = (length) => randomBytes(length);
