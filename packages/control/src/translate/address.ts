/**
 * istio.workload.Address (the WDS resource: a workload or a service) → model,
 * and decoding of an Address xDS resource from its `Any`.
 *
 * As in ztunnel (`PreparedUpdate::try_from_address`, src/xds.rs), an Address
 * with neither a workload nor a service is refused ("unknown address type").
 */
import { fromBinary } from '@bufbuild/protobuf';
import type { PackedResource } from '../xds/type-urls.js';
import { AddressSchema, type Address as PbAddress } from '../gen/istio/workload/workload_pb.js';
import { fail, nestRejections, ok, rejection, type Result } from '../result.js';
import type { AddressResource } from '../store/types.js';
import { ADDRESS_TYPE_URL } from '../xds/type-urls.js';
import { DECODE_OPTIONS, errorText } from './common.js';
import { translateService } from './service.js';
import { translateWorkload } from './workload.js';

export function translateAddress(pb: PbAddress): Result<AddressResource> {
  switch (pb.type.case) {
    case 'workload': {
      const r = translateWorkload(pb.type.value);
      return r.ok ? ok({ kind: 'workload', workload: r.value }) : fail(...nestRejections('workload', r.errors));
    }
    case 'service': {
      const r = translateService(pb.type.value);
      return r.ok ? ok({ kind: 'service', service: r.value }) : fail(...nestRejections('service', r.errors));
    }
    case undefined:
      return fail(rejection('type', 'address has neither a workload nor a service'));
  }
}

/**
 * Unpacks an `Any` holding an istio.workload.Address and translates it.
 * A wrong type URL or bytes that do not decode are rejections, never throws.
 */
export function decodeAddressResource(any: PackedResource): Result<AddressResource> {
  if (any.typeUrl !== ADDRESS_TYPE_URL) {
    return fail(rejection('typeUrl', `expected ${ADDRESS_TYPE_URL}, got ${JSON.stringify(any.typeUrl)}`));
  }
  let pb: PbAddress;
  try {
    pb = fromBinary(AddressSchema, any.value, DECODE_OPTIONS);
  } catch (e) {
    return fail(rejection('', `resource does not decode as istio.workload.Address: ${errorText(e)}`));
  }
  return translateAddress(pb);
}
