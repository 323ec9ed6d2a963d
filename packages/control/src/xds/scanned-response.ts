/**
 * A DeltaDiscoveryResponse read in two steps, so that istiod's full push
 * (100k resources, tens of MB) never blocks the event loop in one piece:
 * the gRPC deserializer only scans the outer message (scalar fields, plus a
 * zero-copy view of each encoded Resource), and the client decodes the
 * resources later, a slice at a time. The wire format is read with
 * protobuf-es's own BinaryReader; field numbers are those of
 * envoy.service.discovery.v3.DeltaDiscoveryResponse.
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import type { Slicer } from '../platform/slicer.js';
import type { PackedResource } from './type-urls.js';

export interface ScannedDeltaResponse {
  readonly systemVersionInfo: string;
  readonly typeUrl: string;
  readonly nonce: string;
  readonly removedResources: readonly string[];
  /** Each element is one encoded envoy.service.discovery.v3.Resource (a view into the received buffer). */
  readonly resources: readonly Uint8Array[];
}

const SYSTEM_VERSION_INFO = 1;
const RESOURCES = 2;
const TYPE_URL = 4;
const NONCE = 5;
const REMOVED_RESOURCES = 6;

/** Scans the outer message. Throws on malformed bytes (the gRPC stream then fails, as with a full decode). */
export function scanDeltaResponse(bytes: Uint8Array): ScannedDeltaResponse {
  const reader = new BinaryReader(bytes);
  let systemVersionInfo = '';
  let typeUrl = '';
  let nonce = '';
  const removedResources: string[] = [];
  const resources: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    const delimited = wireType === WireType.LengthDelimited;
    if (field === RESOURCES && delimited) resources.push(reader.bytes());
    else if (field === TYPE_URL && delimited) typeUrl = reader.string();
    else if (field === NONCE && delimited) nonce = reader.string();
    else if (field === REMOVED_RESOURCES && delimited) removedResources.push(reader.string());
    else if (field === SYSTEM_VERSION_INFO && delimited) systemVersionInfo = reader.string();
    else reader.skip(wireType, field);
  }
  return { systemVersionInfo, typeUrl, nonce, removedResources, resources };
}

export interface ScannedResource {
  readonly name: string;
  readonly version: string;
  readonly resource: PackedResource | undefined;
}

// envoy.service.discovery.v3.Resource and google.protobuf.Any field numbers.
const RESOURCE_VERSION = 1;
const RESOURCE_RESOURCE = 2;
const RESOURCE_NAME = 3;
const ANY_TYPE_URL = 1;
const ANY_VALUE = 2;

/**
 * Reads the fields of one Resource the client uses (name, version and the
 * packed resource), skipping the others (aliases, ttl, cache_control).
 * Undefined when the bytes are not a valid Resource.
 */
export function decodeScannedResource(bytes: Uint8Array): ScannedResource | undefined {
  try {
    const reader = new BinaryReader(bytes);
    let name = '';
    let version = '';
    let resource: PackedResource | undefined;
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      const delimited = wireType === WireType.LengthDelimited;
      if (field === RESOURCE_NAME && delimited) name = reader.string();
      else if (field === RESOURCE_VERSION && delimited) version = reader.string();
      else if (field === RESOURCE_RESOURCE && delimited) resource = readAny(reader.bytes(), resource);
      else reader.skip(wireType, field);
    }
    return { name, version, resource };
  } catch {
    return undefined;
  }
}

/** google.protobuf.Any; a repeated occurrence merges into the previous one, as protobuf requires. */
function readAny(bytes: Uint8Array, previous: PackedResource | undefined): PackedResource {
  const reader = new BinaryReader(bytes);
  let typeUrl = previous?.typeUrl ?? '';
  let value = previous?.value ?? new Uint8Array(0);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    const delimited = wireType === WireType.LengthDelimited;
    if (field === ANY_TYPE_URL && delimited) typeUrl = reader.string();
    else if (field === ANY_VALUE && delimited) value = reader.bytes();
    else reader.skip(wireType, field);
  }
  return { typeUrl, value };
}

export interface DecodedResources {
  readonly resources: ScannedResource[];
  /** Total bytes of the packed resources (istio_xds_message_bytes_total counts these, as ztunnel does). */
  readonly bytes: number;
}

/**
 * Decodes every scanned resource, yielding to the event loop whenever the
 * slicer says so. A resource that is not a valid Resource fails the whole
 * response (its name is unknown, so it cannot be rejected alone).
 */
export async function decodeResources(
  scanned: ScannedDeltaResponse,
  slicer: Slicer,
  cancelled: () => boolean = () => false,
): Promise<{ ok: true; value: DecodedResources } | { ok: false; reason: string }> {
  const resources: DecodedResources['resources'] = [];
  let bytes = 0;
  for (let i = 0; i < scanned.resources.length; i++) {
    const r = decodeScannedResource(scanned.resources[i] as Uint8Array);
    if (r === undefined) return { ok: false, reason: `resources[${i}]: not a valid envoy.service.discovery.v3.Resource; nothing applied` };
    bytes += r.resource?.value.length ?? 0;
    resources.push(r);
    if (slicer.due()) {
      await slicer.yield();
      if (cancelled()) return { ok: false, reason: 'cancelled' };
    }
  }
  return { ok: true, value: { resources, bytes } };
}
