/**
 * The module the Node.js language worker gives an app as `@azure/functions-core`: what
 * @azure/functions v4 calls to register its functions and hooks and to hand over its programming
 * model. The real worker answers these calls from the .NET host over gRPC; here they are collected
 * for the local host (host.ts), which then runs the functions as the host would.
 *
 * Only the contract the library uses is implemented: registerFunction, registerHook,
 * setProgrammingModel, getProgrammingModel, log and Disposable.
 */
import Module from 'node:module';

/** One binding as the library describes it (RpcBindingInfo): type, direction and its properties. */
export interface BindingInfo {
  type: string;
  direction: 'in' | 'out' | 'inout';
  [property: string]: unknown;
}

export interface FunctionMetadata {
  name: string;
  bindings: Record<string, BindingInfo>;
  retryOptions?: unknown;
}

export type FunctionCallback = (...args: unknown[]) => unknown;

export interface RegisteredFunction {
  metadata: FunctionMetadata;
  callback: FunctionCallback;
}

export type HookName = 'appStart' | 'appTerminate' | 'preInvocation' | 'postInvocation' | 'log';
export type HookCallback = (context: Record<string, unknown>) => unknown;

/** The invocation model of a programming model, as the worker drives it (see invoke.ts). */
export interface InvocationModel {
  getArguments(): Promise<{ context: unknown; inputs: unknown[] }>;
  invokeFunction(context: unknown, inputs: unknown[], callback: FunctionCallback): Promise<unknown>;
  getResponse(context: unknown, result: unknown): Promise<InvocationResponse>;
}

export interface ProgrammingModel {
  name: string;
  version: string;
  getInvocationModel(coreContext: unknown): InvocationModel;
}

/** What the worker would send the host back: the return value and each output binding's data. */
export interface InvocationResponse {
  invocationId: string;
  outputData?: { name: string; data: TypedData }[];
  returnValue?: TypedData | null;
}

/** RpcTypedData: one of its fields is set. */
export interface TypedData {
  string?: string | null;
  json?: string | null;
  bytes?: Uint8Array | null;
  int?: number | null;
  double?: number | null;
}

export class Disposable {
  #dispose: (() => void) | undefined;
  constructor(dispose: () => void) {
    this.#dispose = dispose;
  }
  static from(...items: { dispose(): unknown }[]): Disposable {
    return new Disposable(() => items.forEach((i) => i.dispose()));
  }
  dispose(): void {
    this.#dispose?.();
    this.#dispose = undefined;
  }
}

export class CoreApi {
  readonly functions = new Map<string, RegisteredFunction>();
  readonly hooks: Record<HookName, HookCallback[]> = {
    appStart: [],
    appTerminate: [],
    preInvocation: [],
    postInvocation: [],
    log: [],
  };
  #model: ProgrammingModel | undefined;
  readonly Disposable = Disposable;

  constructor(private readonly systemLog: (level: string, message: string) => void) {}

  registerFunction = (metadata: FunctionMetadata, callback: FunctionCallback): Disposable => {
    if (this.functions.has(metadata.name)) {
      throw new Error(`A function named "${metadata.name}" is registered twice`);
    }
    this.functions.set(metadata.name, { metadata, callback });
    return new Disposable(() => this.functions.delete(metadata.name));
  };

  registerHook = (name: HookName, callback: HookCallback): Disposable => {
    const list = this.hooks[name];
    if (!list) throw new RangeError(`Unknown hook "${String(name)}"`);
    list.push(callback);
    return new Disposable(() => list.splice(list.indexOf(callback), 1));
  };

  setProgrammingModel = (model: ProgrammingModel): void => {
    this.#model = model;
  };

  getProgrammingModel = (): ProgrammingModel => {
    if (!this.#model) throw new Error('the app set no programming model (does it load @azure/functions?)');
    return this.#model;
  };

  log = (level: string, category: string, message: string): void => {
    this.systemLog(level, `[${category}] ${message}`);
  };
}

type Loader = (request: string, parent: unknown, isMain: boolean) => unknown;

/**
 * Makes `require('@azure/functions-core')` return `api` in this process, as the worker does. Must
 * run before the app first loads @azure/functions, which looks the module up once and remembers.
 */
export function provideCoreApi(api: CoreApi): () => void {
  const mod = Module as unknown as { _load: Loader };
  const original = mod._load;
  mod._load = function (request, parent, isMain) {
    if (request === '@azure/functions-core') return api;
    return original.call(this, request, parent, isMain);
  };
  return () => {
    mod._load = original;
  };
}
