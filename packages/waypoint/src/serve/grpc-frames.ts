/**
 * Counts gRPC length-prefixed messages (1-byte compressed flag, 4-byte
 * big-endian length, payload) in a byte stream cut anywhere, for
 * istio_request_messages_total / istio_response_messages_total (Envoy's
 * grpc_stats filter counts the same frames). A message is counted when its
 * prefix is complete. Pure state machine; no copies.
 */
export class GrpcFrameCounter {
  /** Messages whose 5-byte prefix was seen. */
  count = 0;
  /** Prefix bytes still to read (0: in a payload, or between messages when `payloadLeft` is 0 too). */
  #prefixRead = 0;
  #length = 0;
  #payloadLeft = 0;

  push(chunk: Uint8Array): void {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.#payloadLeft > 0) {
        const take = Math.min(this.#payloadLeft, n - i);
        this.#payloadLeft -= take;
        i += take;
        continue;
      }
      // Reading a prefix: byte 0 is the flag, bytes 1-4 the length.
      const byte = chunk[i] as number;
      if (this.#prefixRead > 0) this.#length = this.#length * 256 + byte;
      this.#prefixRead++;
      i++;
      if (this.#prefixRead === 5) {
        this.count++;
        this.#payloadLeft = this.#length;
        this.#prefixRead = 0;
        this.#length = 0;
      }
    }
  }
}
