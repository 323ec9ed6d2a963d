/**
 * The wire contract of Istio's echo app gRPC service (istio
 * `pkg/test/echo/proto/echo.proto`, the part the conformance tests use):
 * package `proto`, `service EchoTestService { rpc Echo(EchoRequest) returns
 * (EchoResponse); }`, `EchoRequest { string message = 1; }`, `EchoResponse {
 * string message = 1; }`.
 *
 * The messages are described to protobuf-es at run time from a
 * FileDescriptorProto built here (no generated code, no hand-written wire
 * format): protobuf-es encodes and decodes them. The gRPC method definition
 * for @grpc/grpc-js is built from the same serializers, so the server and the
 * client cannot disagree.
 */
import { create, createFileRegistry, fromBinary, toBinary, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { reflect } from '@bufbuild/protobuf/reflect';
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import type { MethodDefinition } from '@grpc/grpc-js';

/** The full method path, as on the wire (`:path`). */
export const ECHO_METHOD_PATH = '/proto.EchoTestService/Echo';

const messageWithString = (name: string) => ({
  name,
  field: [{ name: 'message', number: 1, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.STRING, jsonName: 'message' }],
});

const file = create(FileDescriptorProtoSchema, {
  name: 'test/echo/proto/echo.proto',
  package: 'proto',
  syntax: 'proto3',
  messageType: [messageWithString('EchoRequest'), messageWithString('EchoResponse')],
  service: [{ name: 'EchoTestService', method: [{ name: 'Echo', inputType: '.proto.EchoRequest', outputType: '.proto.EchoResponse' }] }],
});

const registry = createFileRegistry(file, () => undefined);

function messageDesc(name: string): { desc: DescMessage; field: DescField } {
  const desc = registry.getMessage(name);
  const field = desc?.fields.find((f) => f.number === 1);
  if (desc === undefined || field === undefined) throw new Error(`echo proto: ${name} is missing from the descriptor`);
  return { desc, field };
}

const request = messageDesc('proto.EchoRequest');
const response = messageDesc('proto.EchoResponse');

function encodeMessage(m: { desc: DescMessage; field: DescField }, value: string): Buffer {
  const r = reflect(m.desc);
  r.set(m.field, value);
  return Buffer.from(toBinary(m.desc, r.message));
}

function decodeMessage(m: { desc: DescMessage; field: DescField }, bytes: Uint8Array): string {
  const msg = fromBinary(m.desc, bytes);
  const value = reflect(m.desc, msg).get(m.field);
  return typeof value === 'string' ? value : '';
}

/** `EchoRequest.message` and `EchoResponse.message`: both carry one string. */
export interface EchoMessage {
  readonly message: string;
}

export const encodeEchoRequest = (m: EchoMessage): Buffer => encodeMessage(request, m.message);
export const decodeEchoRequest = (b: Uint8Array): EchoMessage => ({ message: decodeMessage(request, b) });
export const encodeEchoResponse = (m: EchoMessage): Buffer => encodeMessage(response, m.message);
export const decodeEchoResponse = (b: Uint8Array): EchoMessage => ({ message: decodeMessage(response, b) });

/** The @grpc/grpc-js method definition of `proto.EchoTestService/Echo`. */
export const echoMethod: MethodDefinition<EchoMessage, EchoMessage> = {
  path: ECHO_METHOD_PATH,
  requestStream: false,
  responseStream: false,
  requestSerialize: encodeEchoRequest,
  requestDeserialize: decodeEchoRequest,
  responseSerialize: encodeEchoResponse,
  responseDeserialize: decodeEchoResponse,
  originalName: 'echo',
};
