/**
 * Reading the mesh file: ztunnel's static config shape (`LOCAL_XDS_PATH`,
 * reference ztunnel.md section 12), translated by the shared static-config
 * parser, so one file can feed either ztunnel directly or this control plane.
 *
 * Every problem is reported: YAML and shape errors with their position, and
 * what the WDS translators would refuse (the same checks a data plane applies
 * before it ACKs).
 *
 * The mesh file holds only topology (workloads, services, policies); the
 * bearer tokens live in their own file (tokens.ts), because ztunnel's loader
 * rejects unknown top-level keys and secrets should not travel with topology.
 */
import { readFile } from 'node:fs/promises';
import { loadStaticConfig, parseStaticConfig } from '../local/static-config.js';
import { fail, ok, rejection, type Result } from '../result.js';
import type { MeshContent } from './mesh-state.js';

export interface LoadedFile<T> {
  readonly value: T;
  /** The exact text read, to tell a real change from a touch. */
  readonly text: string;
}

/** Reads a file as UTF-8, with a rejection naming the path on failure. */
export async function readTextFile(path: string): Promise<Result<string>> {
  try {
    return ok(await readFile(path, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return fail(rejection(path, `cannot read file${code ? ` (${code})` : ''}: ${err instanceof Error ? err.message : String(err)}`));
  }
}

export async function loadMeshFile(path: string): Promise<Result<LoadedFile<MeshContent>>> {
  const text = await readTextFile(path);
  if (!text.ok) return text;
  // The translators' checks too: a resource every data plane would NACK is a
  // problem in the file, reported now rather than served.
  const checked = loadStaticConfig(text.value, path);
  if (!checked.ok) return checked;
  const parsed = parseStaticConfig(text.value, path);
  if (!parsed.ok) return parsed;
  return ok({ value: parsed.value, text: text.value });
}
