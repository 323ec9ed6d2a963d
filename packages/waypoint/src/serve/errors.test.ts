import { describe, expect, it } from 'vitest';
import { asL7Error, L7Error, localReplyOf, type L7ErrorCode } from './errors.js';

const reply = (code: L7ErrorCode, o: ConstructorParameters<typeof L7Error>[2] = {}, started = false) => localReplyOf(new L7Error(code, 'test', o), started);

describe('the L7 error table', () => {
  it('answers 404 NR with an empty body when no route matches', () => {
    expect(reply('ROUTE_NOT_FOUND')).toMatchObject({ status: 404, body: '', flags: ['NR'], details: 'route_not_found' });
  });

  it('answers 503 UH "no healthy upstream"', () => {
    expect(reply('NO_HEALTHY_UPSTREAM')).toMatchObject({ status: 503, body: 'no healthy upstream', flags: ['UH'], details: 'no_healthy_upstream' });
  });

  it('builds Envoy\'s upstream reset body and details, with the transport failure reason and retries', () => {
    expect(reply('UPSTREAM_REMOTE_CONNECTION_FAILURE')).toMatchObject({
      status: 503,
      flags: ['UF'],
      body: 'upstream connect error or disconnect/reset before headers. reset reason: remote connection failure',
      details: 'upstream_reset_before_response_started{remote_connection_failure}',
    });
    expect(reply('UPSTREAM_REMOTE_CONNECTION_FAILURE', { transportFailureReason: 'delayed connect error: Connection refused', retried: true, retryLimitExceeded: true })).toMatchObject({
      status: 503,
      flags: ['UF', 'URX'],
      body: 'upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused',
      details: 'upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}',
      transportFailureReason: 'delayed connect error: Connection refused',
    });
    expect(reply('UPSTREAM_CONNECTION_TERMINATION')).toMatchObject({ status: 503, flags: ['UC'], body: expect.stringContaining('reset reason: connection termination') });
    expect(reply('UPSTREAM_REMOTE_RESET')).toMatchObject({ status: 503, flags: ['UR'] });
    expect(reply('UPSTREAM_OVERFLOW')).toMatchObject({ status: 503, flags: ['UO'] });
    expect(reply('UPSTREAM_PROTOCOL_ERROR')).toMatchObject({ status: 502, flags: ['UPE'] });
  });

  it('reports a reset after the response started without a reply', () => {
    expect(reply('UPSTREAM_REMOTE_RESET', {}, true)).toMatchObject({ status: 0, body: '', flags: ['UR'], details: 'upstream_reset_after_response_started{remote_reset}' });
  });

  it('answers timeouts 504 UT "upstream request timeout"', () => {
    expect(reply('UPSTREAM_REQUEST_TIMEOUT')).toMatchObject({ status: 504, flags: ['UT'], body: 'upstream request timeout', details: 'response_timeout' });
    expect(reply('UPSTREAM_PER_TRY_TIMEOUT')).toMatchObject({ status: 504, flags: ['UT'], details: 'upstream_per_try_timeout' });
  });

  it('answers codec errors with the reason phrase and DPE', () => {
    expect(reply('DOWNSTREAM_PROTOCOL_ERROR')).toMatchObject({ status: 400, body: 'Bad Request', flags: ['DPE'], details: 'http1.codec_error' });
    expect(reply('HEADERS_TOO_LARGE')).toMatchObject({ status: 431, body: 'Request Header Fields Too Large', details: 'http1.headers_too_large' });
    expect(reply('TOO_MANY_HEADERS')).toMatchObject({ status: 431, details: 'http1.too_many_headers' });
    expect(reply('LOW_VERSION')).toMatchObject({ status: 426, body: 'Upgrade Required' });
  });

  it('takes a direct response\'s status and body from the route', () => {
    expect(reply('DIRECT_RESPONSE', { status: 500, body: '' })).toMatchObject({ status: 500, body: '', flags: [], details: 'direct_response' });
    expect(reply('DIRECT_RESPONSE', { status: 302 })).toMatchObject({ status: 302, details: 'direct_response' });
  });

  it('records a client that went away without answering', () => {
    expect(reply('DOWNSTREAM_REMOTE_DISCONNECT')).toMatchObject({ status: 0, flags: ['DC'], details: 'downstream_remote_disconnect' });
  });

  it('turns anything thrown into INTERNAL, keeping the cause', () => {
    const cause = new Error('boom');
    const e = asL7Error(cause);
    expect(e.code).toBe('INTERNAL');
    expect(e.cause).toBe(cause);
    expect(localReplyOf(e)).toMatchObject({ status: 500, logLevel: 'error' });
  });
});
