/**
 * One invocation, as the Node.js worker makes it: the programming model's invocation model builds
 * the InvocationContext and the handler's arguments from the host's request (input data and
 * trigger metadata as RpcTypedData), the preInvocation hooks run (and may replace the handler or
 * its inputs), the handler runs, the postInvocation hooks run (and may replace the result or the
 * error), and the response carries the return value and the output bindings' data.
 */
import { randomUUID } from 'node:crypto';

import type { CoreApi, InvocationResponse, RegisteredFunction, TypedData } from './core-api';

export interface InvocationRequest {
  inputData: { name: string; data: TypedData }[];
  triggerMetadata: Record<string, TypedData>;
}

/** What the worker sends back (response), and the handler's own value before conversion (for in-process tools). */
export interface Invoked {
  response: InvocationResponse;
  result: unknown;
}

/** How a trigger invokes its function (host.ts binds it to the function and its outputs). */
export type Invoke = (request: InvocationRequest) => Promise<Invoked>;

/** Where a trigger says what happened to a message or an occurrence. */
export type TriggerLog = (level: 'info' | 'warn' | 'error', message: string) => void;

export type FunctionLog = (level: string, category: string, message: string) => void;

export async function invokeFunction(
  api: CoreApi,
  fn: RegisteredFunction,
  request: InvocationRequest,
  appHookData: Record<string, unknown>,
  log: FunctionLog,
): Promise<Invoked> {
  const invocationId = randomUUID();
  const coreContext = {
    invocationId,
    request: { invocationId, functionId: fn.metadata.name, ...request },
    metadata: fn.metadata,
    state: undefined as string | undefined,
    log,
  };
  const model = api.getProgrammingModel().getInvocationModel(coreContext);
  const { context, inputs } = await model.getArguments();
  const hookData: Record<string, unknown> = {};

  coreContext.state = 'preInvocationHooks';
  const pre = { hookData, appHookData, invocationContext: context, inputs, functionCallback: fn.callback };
  for (const hook of api.hooks.preInvocation) await hook(pre);

  coreContext.state = 'invocation';
  let result: unknown;
  let error: unknown;
  try {
    result = await model.invokeFunction(context, pre.inputs, pre.functionCallback);
  } catch (err) {
    error = err;
  }

  coreContext.state = 'postInvocationHooks';
  const post = { hookData, appHookData, invocationContext: context, inputs: pre.inputs, result, error };
  for (const hook of api.hooks.postInvocation) await hook(post);
  const failed: { error: unknown } | undefined =
    post.error === undefined || post.error === null ? undefined : { error: post.error };
  if (failed) throw failed.error;
  return { response: await model.getResponse(context, post.result), result: post.result };
}

/** The value a binding's TypedData carries: a string, JSON, bytes or a number. */
export function typedValue(data: TypedData | null | undefined): unknown {
  if (!data) return undefined;
  if (data.string !== undefined && data.string !== null) return data.string;
  if (data.json !== undefined && data.json !== null) return JSON.parse(data.json) as unknown;
  if (data.bytes !== undefined && data.bytes !== null) return Buffer.from(data.bytes);
  return data.int ?? data.double ?? undefined;
}
