/**
 * Properties: the translators never throw on any decoded message (arbitrary
 * field values, unknown enum numbers, unset oneofs, wrong address sizes), and
 * the resource decoders never throw on any bytes. Messages are generated from
 * the protobuf descriptors, so new fields are covered without editing this file.
 */
import { create, ScalarType, toBinary, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AuthorizationSchema } from '../gen/istio/security/authorization_pb.js';
import { AddressSchema, ServiceSchema, WorkloadSchema } from '../gen/istio/workload/workload_pb.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../xds/type-urls.js';
import { decodeAddressResource, translateAddress } from './address.js';
import { decodeAuthorizationResource, translateAuthorization } from './authorization.js';
import { translateService } from './service.js';
import { translateWorkload } from './workload.js';

// Biased towards values that pass some checks, so deeper code runs too.
const text = fc.oneof(
  fc.constantFrom('', 'demo', 'default', 'cluster.local', 'demo/echo.demo.svc.cluster.local', 'a/b/c', '*.example.com', 'spiffe://x', '..'),
  fc.string({ maxLength: 12 }),
);
const bytes = fc.oneof(
  fc.uint8Array({ minLength: 4, maxLength: 4 }),
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc.uint8Array({ maxLength: 20 }),
);
const uint32 = fc.oneof(fc.constantFrom(0, 1, 80, 8080, 15008, 65535, 65536), fc.nat({ max: 0xffffffff }));

function scalar(t: ScalarType): fc.Arbitrary<unknown> {
  switch (t) {
    case ScalarType.STRING:
      return text;
    case ScalarType.BYTES:
      return bytes;
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return uint32;
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.integer();
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.double();
    default:
      return fc.bigInt({ min: 0n, max: 2n ** 63n - 1n });
  }
}

function enumValue(values: readonly { number: number }[]): fc.Arbitrary<number> {
  return fc.oneof(fc.constantFrom(...values.map((v) => v.number)), fc.integer({ min: -1, max: 20 }));
}

function message(desc: DescMessage): fc.Arbitrary<Record<string, unknown>> {
  if (desc.typeName === 'google.protobuf.Any') {
    return fc.record({ typeUrl: text, value: bytes }).map((init) => create(AnySchema, init) as unknown as Record<string, unknown>);
  }
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof !== undefined) continue;
    parts[field.localName] = fieldValue(field);
  }
  for (const oneof of desc.oneofs) {
    parts[oneof.localName] = fc.oneof(
      fc.constant({ case: undefined }),
      ...oneof.fields.map((f) => single(f).map((value) => ({ case: f.localName, value }))),
    );
  }
  return fc.record(parts, { requiredKeys: [] });
}

/** A value for one non-repeated field (scalar, enum or message). */
function single(field: DescField): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case 'scalar':
      return scalar(field.scalar);
    case 'enum':
      return enumValue(field.enum.values);
    case 'message':
      // Wrapper types are unboxed in protobuf-es (`capacity?: number`).
      if (field.message.typeName === 'google.protobuf.UInt32Value') return uint32;
      return message(field.message);
    default:
      return fc.constant(undefined);
  }
}

function fieldValue(field: DescField): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case 'list': {
      const item =
        field.listKind === 'scalar' ? scalar(field.scalar) : field.listKind === 'enum' ? enumValue(field.enum.values) : message(field.message);
      return fc.array(item, { maxLength: 3 });
    }
    case 'map': {
      const value =
        field.mapKind === 'scalar' ? scalar(field.scalar) : field.mapKind === 'enum' ? enumValue(field.enum.values) : message(field.message);
      return fc.dictionary(text.map(String), value, { maxKeys: 3 });
    }
    default:
      return single(field);
  }
}

const RUNS = { numRuns: 400 };

describe('translators never throw', () => {
  it('translateAddress on arbitrary Address messages', () => {
    fc.assert(
      fc.property(message(AddressSchema), (init) => {
        const r = translateAddress(create(AddressSchema, init));
        expect(typeof r.ok).toBe('boolean');
      }),
      RUNS,
    );
  });

  it('translateWorkload / translateService on arbitrary messages', () => {
    fc.assert(
      fc.property(message(WorkloadSchema), message(ServiceSchema), (w, s) => {
        expect(typeof translateWorkload(create(WorkloadSchema, w)).ok).toBe('boolean');
        expect(typeof translateService(create(ServiceSchema, s)).ok).toBe('boolean');
      }),
      RUNS,
    );
  });

  it('translateAuthorization on arbitrary Authorization messages', () => {
    fc.assert(
      fc.property(message(AuthorizationSchema), (init) => {
        expect(typeof translateAuthorization(create(AuthorizationSchema, init)).ok).toBe('boolean');
      }),
      RUNS,
    );
  });
});

describe('decoders never throw', () => {
  it('decodeAddressResource / decodeAuthorizationResource on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (value) => {
        expect(typeof decodeAddressResource(create(AnySchema, { typeUrl: ADDRESS_TYPE_URL, value })).ok).toBe('boolean');
        expect(typeof decodeAuthorizationResource(create(AnySchema, { typeUrl: AUTHORIZATION_TYPE_URL, value })).ok).toBe('boolean');
      }),
      RUNS,
    );
  });

  it('on encodings of arbitrary messages with bytes flipped or cut', () => {
    const mutation = fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }), cut: fc.nat() });
    fc.assert(
      fc.property(message(AddressSchema), message(AuthorizationSchema), mutation, (a, p, m) => {
        const mutate = (b: Uint8Array): Uint8Array => {
          if (b.length === 0) return b;
          const copy = b.slice(0, b.length - (m.cut % b.length));
          const i = m.at % Math.max(copy.length, 1);
          if (copy.length > 0) copy[i] = (copy[i] ?? 0) ^ m.xor;
          return copy;
        };
        const address = toBinary(AddressSchema, create(AddressSchema, a));
        const policy = toBinary(AuthorizationSchema, create(AuthorizationSchema, p));
        for (const value of [address, mutate(address)]) {
          expect(typeof decodeAddressResource(create(AnySchema, { typeUrl: ADDRESS_TYPE_URL, value })).ok).toBe('boolean');
        }
        for (const value of [policy, mutate(policy)]) {
          expect(typeof decodeAuthorizationResource(create(AnySchema, { typeUrl: AUTHORIZATION_TYPE_URL, value })).ok).toBe('boolean');
        }
      }),
      RUNS,
    );
  });
});
