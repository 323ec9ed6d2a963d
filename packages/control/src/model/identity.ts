/** SPIFFE identities of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. */
import { fail, ok, rejection, type Result } from '../result.js';

export interface Identity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_SERVICE_ACCOUNT = 'default';

export function identityToString(id: Identity): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function identityEquals(a: Identity, b: Identity): boolean {
  return a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount;
}

// SPIFFE-ID: trust domain is lower-case letters, digits, '.', '-', '_'; path
// segments are letters, digits, '.', '-', '_' and never '.' or '..'.
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Validates one SPIFFE path segment (namespace or service account). */
export function spiffeSegmentProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  if (value === '.' || value === '..') return `must not be "${value}"`;
  if (!SEGMENT.test(value)) return `"${value}" may only contain letters, digits, ".", "-" and "_"`;
  return undefined;
}

export function trustDomainProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  if (value.length > 255) return 'must be at most 255 characters';
  if (!TRUST_DOMAIN.test(value)) return `"${value}" may only contain lower-case letters, digits, ".", "-" and "_"`;
  return undefined;
}

/** Parses a SPIFFE ID with exactly the five path segments Istio uses. */
export function parseIdentity(uri: string): Result<Identity> {
  const prefix = 'spiffe://';
  if (!uri.startsWith(prefix)) return fail(rejection('identity', `"${uri}" must start with spiffe://`));
  const parts = uri.slice(prefix.length).split('/');
  if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa') {
    return fail(rejection('identity', `"${uri}" must have the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`));
  }
  const [trustDomain = '', , namespace = '', , serviceAccount = ''] = parts;
  const errors = [];
  const td = trustDomainProblem(trustDomain);
  if (td) errors.push(rejection('identity.trustDomain', td));
  const ns = spiffeSegmentProblem(namespace);
  if (ns) errors.push(rejection('identity.namespace', ns));
  const sa = spiffeSegmentProblem(serviceAccount);
  if (sa) errors.push(rejection('identity.serviceAccount', sa));
  if (errors.length > 0) return fail(...errors);
  return ok({ trustDomain, namespace, serviceAccount });
}
