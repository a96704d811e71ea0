'use strict';
/*
 * Kindling Node.js runtime: the process inside one Lambda execution environment.
 *
 * Started as `/var/lang/bin/node [Lambda's node flags] /var/runtime/index.cjs` with Lambda's environment
 * (AWS_LAMBDA_RUNTIME_API, _HANDLER, LAMBDA_TASK_ROOT, ...). It loads the handler once, then loops on the
 * Runtime API (2018-06-01): GET next -> call the handler -> POST response / error. Behaviour mirrors AWS's
 * own client (aws-lambda-nodejs-runtime-interface-client, "the RIC"): how handlers are found (CommonJS, ES
 * modules, package.json "type"), the context object, callbacks and callbackWaitsForEmptyEventLoop, error
 * types, messages and shapes, console logging in Text and JSON formats.
 *
 * Stdlib only, and built for cold start: only `net` (one keep-alive connection, a small HTTP/1.1 client;
 * `http` costs more to load) and what Node has loaded anyway. The connection is unref'd except while a
 * request is in flight, so the event loop empties when the function's own work is done: that is what
 * `beforeExit` (callbackWaitsForEmptyEventLoop, handlers that never answer) is built on, as in the RIC,
 * whose native client blocks instead.
 *
 * Exit status: 129 after an uncaught exception, 128 after an unhandled rejection (as the RIC), 2 when
 * AWS_LAMBDA_RUNTIME_API is missing or invalid, 3 when the Runtime API fails.
 */

const net = require('net');
const fs = require('fs');
const path = require('path');
const util = require('util');
const Module = require('module');

const env = process.env;
const API = '/2018-06-01/runtime/';
const RESPONSE_LIMIT = 6291556; // Lambda's (and Kindling's) response size limit
const TASK_ROOT = env.LAMBDA_TASK_ROOT || process.cwd();
const RUNTIME_DIR = env.LAMBDA_RUNTIME_DIR || __dirname;

// NODE_PATH as Lambda's bootstrap sets it when the function has not: layers, the SDK, the code.
if (!env.NODE_PATH) {
  const major = process.versions.node.split('.')[0];
  env.NODE_PATH = [`/opt/nodejs/node${major}/node_modules`, '/opt/nodejs/node_modules',
    `${RUNTIME_DIR}/node_modules`, RUNTIME_DIR, TASK_ROOT].join(':');
  Module._initPaths(); // read NODE_PATH again (it is read once, at start)
}

// ------------------------------------------------------------------------------------------- errors --

const errorClasses = {};
for (const name of ['ImportModuleError', 'HandlerNotFound', 'MalformedHandlerName', 'UserCodeSyntaxError',
  'MalformedStreamingHandler', 'NodeJsExit', 'UnhandledPromiseRejection']) {
  const cls = { [name]: class extends Error {} }[name];
  cls.prototype.name = `Runtime.${name}`;
  errorClasses[name] = cls;
}
const { ImportModuleError, HandlerNotFound, MalformedHandlerName, UserCodeSyntaxError, NodeJsExit } = errorClasses;
const NODE_EXIT_MESSAGE = 'The Lambda runtime client detected an unexpected Node.js exit code. This is most ' +
  'commonly caused by a Promise that was never settled. For more information, see ' +
  'https://nodejs.org/docs/latest/api/process.html#exit-codes';

function unhandledRejection(reason, promise) {
  const error = new errorClasses.UnhandledPromiseRejection(reason);
  error.reason = reason;
  error.promise = promise;
  return error;
}

function isErrorLike(obj) {
  return obj && typeof obj.name === 'string' && obj.name && typeof obj.message === 'string' && obj.message &&
    typeof obj.stack === 'string' && obj.stack;
}

/** The error body Lambda's runtime posts (toRapidResponse). */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: error.name?.replaceAll('\x7F', '%7F'),
        errorMessage: error.message?.replaceAll('\x7F', '%7F'),
        trace: error.stack.replaceAll('\x7F', '%7F').split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or ' +
        'more of its message, name, and stack',
    };
  }
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

function withEnumerableProperties(error) {
  if (error instanceof Error) {
    const ret = Object.assign({ errorType: error.name, errorMessage: error.message, code: error.code }, error);
    if (typeof error.stack === 'string') ret.stack = error.stack.split('\n');
    return ret;
  }
  return error;
}

/** How the Text log shows an error: a tab, then JSON. */
function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch (_) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

/** The X-Ray cause of an error (Lambda-Runtime-Function-XRay-Error-Cause). */
function xrayCause(err) {
  try {
    const stack = [];
    if (err.stack) {
      const lines = String(err.stack).replace(/\x7F/g, '%7F').split('\n');
      lines.shift();
      for (const stackLine of lines) {
        let line = stackLine.trim().replace(/\(|\)/g, '');
        line = line.substring(line.indexOf(' ') + 1);
        const label = line.lastIndexOf(' ') >= 0 ? line.slice(0, line.lastIndexOf(' ')) : null;
        const where = (!label ? line : line.slice(line.lastIndexOf(' ') + 1)).split(':');
        stack.push({ path: where[0], line: parseInt(where[1]), label: label || 'anonymous' });
      }
    }
    return JSON.stringify({
      working_directory: process.cwd(),
      exceptions: [{ type: err.name?.replace(/\x7F/g, '%7F'), message: err.message?.replace(/\x7F/g, '%7F'), stack }],
      paths: Array.from(new Set(stack.map((e) => e.path))),
    });
  } catch (_) {
    return '';
  }
}

// ------------------------------------------------------------------------------------------ logging --

const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');
const TENANT_ID = Symbol.for('aws.lambda.runtime.tenantId');
const LEVELS = {
  TRACE: { name: 'TRACE', priority: 1 }, DEBUG: { name: 'DEBUG', priority: 2 }, INFO: { name: 'INFO', priority: 3 },
  WARN: { name: 'WARN', priority: 4 }, ERROR: { name: 'ERROR', priority: 5 }, FATAL: { name: 'FATAL', priority: 6 },
};
const JSON_FORMAT = env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === 'JSON';
const stdout = process.stdout;

function jsonErrorReplacer(_, value) {
  if (value instanceof Error) {
    return Object.assign({
      errorType: value?.constructor?.name ?? 'UnknownError',
      errorMessage: value.message,
      stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
    }, value);
  }
  return value;
}

function formatJsonMessage(requestId, timestamp, level, tenantId, ...params) {
  const result = { timestamp, level: level.name, requestId };
  if (tenantId !== undefined && tenantId !== null) result.tenantId = tenantId;
  if (params.length === 1) {
    result.message = params[0];
    try {
      return JSON.stringify(result, jsonErrorReplacer);
    } catch (_) {
      result.message = util.format(result.message);
      return JSON.stringify(result);
    }
  }
  result.message = util.format(...params);
  for (const param of params) {
    if (param instanceof Error) {
      result.errorType = param?.constructor?.name ?? 'UnknownError';
      result.errorMessage = param.message;
      result.stackTrace = typeof param.stack === 'string' ? param.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(result);
}

function logText(level, message, ...params) {
  const line = `${new Date().toISOString()}\t${globalThis[REQUEST_ID]}\t${level.name}\t${util.format(message, ...params)}`;
  stdout.write(line.replace(/\n/g, '\r') + '\n');
}

function logJson(level, message, ...params) {
  const line = formatJsonMessage(globalThis[REQUEST_ID], new Date().toISOString(), level, globalThis[TENANT_ID],
    message, ...params);
  stdout.write(line.replace(/\n/g, '\r') + '\n');
}

/** console.* as Lambda's runtime makes them: one line per call, filtered by AWS_LAMBDA_LOG_LEVEL. */
function patchConsole() {
  const log = JSON_FORMAT ? logJson : logText;
  const min = LEVELS[env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? LEVELS.TRACE;
  const nop = () => {};
  const at = (level) => (level.priority >= min.priority ? (msg, ...params) => log(level, msg, ...params) : nop);
  console.trace = at(LEVELS.TRACE);
  console.debug = at(LEVELS.DEBUG);
  console.info = at(LEVELS.INFO);
  console.log = console.info;
  console.warn = at(LEVELS.WARN);
  console.error = at(LEVELS.ERROR);
  console.fatal = (msg, ...params) => log(LEVELS.FATAL, msg, ...params);
}

function logError(msg, err) {
  try {
    if (JSON_FORMAT) console.error(intoError(err));
    else console.error(msg, toFormatted(intoError(err)));
  } catch (_) {
    // a value that cannot even be shown: the error is still posted
  }
}

// --------------------------------------------------------------------------------- Runtime API client --

class ApiError extends Error {}

/** HTTP/1.1 on one keep-alive connection, one request at a time. */
class RuntimeApiClient {
  constructor(address) {
    const at = address.lastIndexOf(':');
    const port = at > 0 ? Number(address.slice(at + 1)) : NaN;
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new ApiError(`bad AWS_LAMBDA_RUNTIME_API ${address}`);
    this.host = address.slice(0, at).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
    this.port = port;
    this.headerLine = `Host: ${address}\r\nUser-Agent: kindling-nodejs/${process.versions.node}\r\n`;
    this.sock = null;
    this.pending = null; // {resolve, reject, buf, answered}
  }

  _connect() {
    const sock = net.connect({ host: this.host, port: this.port, noDelay: true });
    sock.on('data', (chunk) => this._data(sock, chunk));
    sock.on('error', (e) => this._lost(sock, e));
    sock.on('close', () => this._lost(sock, new ApiError('connection closed by the Runtime API')));
    this.sock = sock;
  }

  _lost(sock, err) {
    if (this.sock === sock) this.sock = null;
    const p = this.pending;
    if (p && p.sock === sock) {
      this.pending = null;
      p.reject(err);
    }
  }

  /** One request; resolves to {status, headers (lower-case names), body (Buffer)}. */
  async request(method, urlPath, body, headers = '') {
    let head = `${method} ${urlPath} HTTP/1.1\r\n${this.headerLine}${headers}`;
    head += body !== undefined ? `Content-Length: ${body.length}\r\n\r\n` : '\r\n';
    for (let attempt = 0; ; attempt++) {
      const reused = this.sock !== null;
      if (!reused) this._connect();
      const sock = this.sock;
      let pending = null;
      try {
        return await new Promise((resolve, reject) => {
          pending = this.pending = { sock, resolve, reject, buf: Buffer.alloc(0), answered: false };
          sock.ref(); // the loop stays alive only while the runtime waits on its API
          sock.write(head);
          if (body !== undefined && body.length) sock.write(body);
        });
      } catch (e) {
        const answered = pending?.answered; // (something came back: never sent twice)
        this.pending = null;
        if (this.sock === sock) this.sock = null;
        sock.destroy();
        // A kept-alive connection the server had already dropped: once more on a new one.
        if (!reused || attempt || answered) throw new ApiError(`${method} ${urlPath}: ${e.message}`);
      }
    }
  }

  /** Send a request and exit (as the RIC does after an uncaught exception or unhandled rejection) once it is
   * written, not waiting for the answer: the environment is frozen as soon as its invoke has a result. */
  sendAndExit(method, urlPath, body, headers, code) {
    setTimeout(() => process.exit(code), 2000).unref();
    const head = `${method} ${urlPath} HTTP/1.1\r\n${this.headerLine}${headers}Content-Length: ${body.length}\r\n\r\n`;
    const data = Buffer.concat([Buffer.from(head, 'latin1'), body]);
    if (this.sock === null) this._connect();
    this.pending = null;
    this.sock.ref();
    this.sock.write(data, () => process.exit(code));
  }

  _data(sock, chunk) {
    const p = this.pending;
    if (!p || p.sock !== sock) return; // nothing asked: ignore
    p.answered = true;
    p.buf = p.buf.length ? Buffer.concat([p.buf, chunk]) : chunk;
    let res;
    try {
      res = parseResponse(p.buf);
    } catch (e) {
      this.pending = null;
      sock.destroy();
      if (this.sock === sock) this.sock = null;
      p.reject(e);
      return;
    }
    if (res === null) return;
    this.pending = null;
    sock.unref();
    if (res.close) {
      sock.destroy();
      if (this.sock === sock) this.sock = null;
    }
    p.resolve(res);
  }
}

/** A complete response at the start of buf, or null if more is needed. */
function parseResponse(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) {
    if (buf.length > 65536) throw new ApiError('response head too long');
    return null;
  }
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const status = parseInt(lines[0].slice(9, 12), 10);
  if (!(status >= 100)) throw new ApiError(`bad status line ${JSON.stringify(lines[0].slice(0, 100))}`);
  const headers = {};
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':');
    if (colon < 0) continue;
    const name = lines[i].slice(0, colon).trim().toLowerCase();
    const value = Buffer.from(lines[i].slice(colon + 1).trim(), 'latin1').toString('utf8');
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const start = end + 4;
  if (status < 200) return parseResponse(buf.subarray(start)); // interim 1xx
  const close = /close/i.test(headers.connection || '');
  if (/chunked/i.test(headers['transfer-encoding'] || '')) {
    const parts = [];
    let at = start;
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol < 0) return null;
      const size = parseInt(buf.toString('latin1', at, eol).split(';')[0], 16);
      if (Number.isNaN(size)) throw new ApiError('bad chunk size');
      if (size === 0) {
        const tail = buf.indexOf('\r\n\r\n', eol);
        if (tail < 0 && buf.indexOf('\r\n', eol + 2) !== eol + 2) return null;
        return { status, headers, body: Buffer.concat(parts), close };
      }
      if (buf.length < eol + 2 + size + 2) return null;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
  }
  const length = headers['content-length'] !== undefined ? parseInt(headers['content-length'], 10) : 0;
  if (!(length >= 0)) throw new ApiError('bad Content-Length');
  if (buf.length < start + length) return null;
  return { status, headers, body: buf.subarray(start, start + length), close };
}

function headerValue(text) {
  return Buffer.from(String(text).replace(/[\r\n]/g, ' '), 'utf8').toString('latin1');
}

// ---------------------------------------------------------------------------------- the handler --

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;
const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
// Resolving and requiring as the RIC does, from where its own file is: "Require stack" names it as on Lambda.
const runtimeRequire = Module.createRequire(path.join(RUNTIME_DIR, 'index.mjs'));

function tryRequireFile(file, extension) {
  const p = file + (extension || '');
  return fs.existsSync(p) ? runtimeRequire(p) : undefined;
}

async function tryAwaitImport(file, extension) {
  const p = file + (extension || '');
  return fs.existsSync(p) ? await importWithNodePath(p) : undefined;
}

// Lambda's Node runtimes resolve ES module imports through NODE_PATH too (their node is patched for it), so that
// `import ... from '@aws-sdk/client-s3'` finds the SDK in /var/runtime/node_modules and packages in layers. Stock
// node does not. Kindling's way costs nothing unless it is needed: an import that fails on a package that is in a
// NODE_PATH node_modules directory registers a resolve hook that also looks there (module.register: a loader
// thread, tens of ms, once) and imports the handler again (under a new URL: a failed import stays cached).
const ESM_NODE_PATH_HOOK = `
let parents = [];
export function initialize(data) { parents = data.parents; }
export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || /^(\\.|\\/|[a-z][a-z0-9+.-]*:)/i.test(specifier)) throw e;
    for (const parentURL of parents) {
      try { return await nextResolve(specifier, { ...context, parentURL }); } catch (_) { /* the next one */ }
    }
    throw e;
  }
}`;
let esmNodePath = false;

async function importWithNodePath(p) {
  try {
    return await import(p);
  } catch (e) {
    const missing = e?.code === 'ERR_MODULE_NOT_FOUND' && /^Cannot find package '([^']+)'/.exec(e.message);
    const dirs = (env.NODE_PATH || '').split(':').filter((d) => d.endsWith('/node_modules'));
    if (esmNodePath || !missing || !dirs.some((d) => fs.existsSync(path.join(d, missing[1])))) throw e;
    esmNodePath = true;
    const { pathToFileURL } = require('url');
    Module.register(`data:text/javascript,${encodeURIComponent(ESM_NODE_PATH_HOOK)}`, {
      data: { parents: dirs.map((d) => pathToFileURL(path.join(path.dirname(d), 'kindling-node-path.mjs')).href) },
    });
    return await import(`${pathToFileURL(p).href}?node-path`);
  }
}

function folderHasTypeModule(folder) {
  if (folder.endsWith('/node_modules')) return false;
  const pj = path.join(folder, '/package.json');
  if (fs.existsSync(pj)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(pj));
      if (pkg) return pkg.type === 'module';
    } catch (e) {
      console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
      return false;
    }
  }
  if (folder === '/') return false;
  return folderHasTypeModule(path.resolve(folder, '..'));
}

async function tryRequire(appRoot, moduleRoot, module) {
  const lambdaStylePath = path.resolve(appRoot, moduleRoot, module);
  const extensionless = tryRequireFile(lambdaStylePath);
  if (extensionless) return extensionless;
  const jsPath = lambdaStylePath + '.js';
  const typeModule = fs.existsSync(jsPath) ? folderHasTypeModule(path.resolve(path.dirname(jsPath))) : false;
  if (!typeModule) {
    const loaded = tryRequireFile(lambdaStylePath, '.js');
    if (loaded) return loaded;
  }
  const loaded = (typeModule && (await tryAwaitImport(lambdaStylePath, '.js'))) ||
    (await tryAwaitImport(lambdaStylePath, '.mjs')) || tryRequireFile(lambdaStylePath, '.cjs');
  if (loaded) return loaded;
  return runtimeRequire(runtimeRequire.resolve(module, { paths: [appRoot, moduleRoot] }));
}

async function loadHandler(appRoot, fullHandlerString) {
  if (fullHandlerString.includes('..')) {
    throw new MalformedHandlerName(`'${fullHandlerString}' is not a valid handler name. Use absolute paths when ` +
      'specifying root directories in handler names.');
  }
  const handlerString = path.basename(fullHandlerString);
  const moduleRoot = fullHandlerString.substring(0, fullHandlerString.indexOf(handlerString));
  const match = handlerString.match(FUNCTION_EXPR);
  if (!match || match.length !== 3) throw new MalformedHandlerName('Bad handler');
  const [, module, handlerPath] = match;
  globalThis.awslambda = {
    streamifyResponse: (handler) => {
      handler[HANDLER_STREAMING] = 'response';
      return handler;
    },
  };
  let app;
  try {
    app = await tryRequire(appRoot, moduleRoot, module);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
  const handler = handlerPath.split('.').reduce((nested, key) => nested && nested[key], app);
  if (!handler) throw new HandlerNotFound(`${fullHandlerString} is undefined or not exported`);
  if (typeof handler !== 'function') throw new HandlerNotFound(`${fullHandlerString} is not a function`);
  if (handler[HANDLER_STREAMING] !== undefined && handler[HANDLER_STREAMING] !== null &&
      handler[HANDLER_STREAMING] !== false && handler[HANDLER_STREAMING] !== 'response') {
    throw new errorClasses.MalformedStreamingHandler('Only response streaming is supported.');
  }
  return handler;
}

// -------------------------------------------------------------------------------------- the loop --

let beforeExit = () => {};
let onUncaught = null; // what an uncaught exception or unhandled rejection does now (init or the current invoke)

function serialize(result) {
  try {
    return JSON.stringify(result === undefined ? null : result);
  } catch (_) {
    throw new Error('Unable to stringify response body');
  }
}

function errorBody(error) {
  const body = toRapidResponse(error);
  let text;
  try {
    text = JSON.stringify(body);
  } catch (_) {
    text = JSON.stringify({ errorType: String(body.errorType), errorMessage: String(body.errorMessage), trace: [] });
  }
  if (Buffer.byteLength(text) > RESPONSE_LIMIT) { // still an answer, not a 413 and an invoke left hanging
    const cut = (s, n) => (typeof s === 'string' && s.length > n ? s.slice(0, n) : s);
    text = JSON.stringify({ errorType: cut(body.errorType, 1024), errorMessage: cut(body.errorMessage, 65536),
      trace: (body.trace || []).slice(0, 100).map((l) => cut(l, 1024)) });
  }
  return [body, text];
}

function fatal(code, msg) {
  try {
    process.stderr.write(`[ERROR] kindling runtime: ${msg}\n`);
  } catch (_) { /* nothing more to say */ }
  process.exit(code);
}

class Runtime {
  constructor(client, handler) {
    this.client = client;
    this.handler = handler;
    this.isAsync = handler.constructor?.name === 'AsyncFunction';
    this.streaming = handler[HANDLER_STREAMING] === 'response';
  }

  schedule() {
    setImmediate(() => this.once().catch((e) => fatal(3, e.message)));
  }

  async post(urlPath, body, contentType, extra = '') {
    const res = await this.client.request('POST', API + urlPath, Buffer.from(body, 'utf8'),
      `Content-Type: ${contentType}\r\n${extra}`);
    if (res.status < 200 || res.status > 299) {
      process.stderr.write(`[WARNING] Runtime API answered ${res.status} to POST ${urlPath}: ` +
        `${res.body.subarray(0, 500).toString()}\n`);
    }
  }

  postError(error, id) {
    const [body, text] = errorBody(error);
    let extra = `Lambda-Runtime-Function-Error-Type: ${headerValue(body.errorType)}\r\n`;
    const cause = error !== null && typeof error === 'object' ? xrayCause(error) : '';
    if (cause && cause.length < 32768 && !/[\r\n]/.test(cause)) { // (headers stay far inside the API's limit)
      extra += `Lambda-Runtime-Function-XRay-Error-Cause: ${headerValue(cause)}\r\n`;
    }
    return this.post(`invocation/${encodeURIComponent(id)}/error`, text, 'application/json', extra);
  }

  async once() {
    const res = await this.client.request('GET', API + 'invocation/next');
    if (res.status !== 200) fatal(3, `GET invocation/next answered ${res.status}: ${res.body.subarray(0, 500)}`);
    const h = res.headers;
    const id = h['lambda-runtime-aws-request-id'];
    globalThis[REQUEST_ID] = id;
    globalThis[TENANT_ID] = h['lambda-runtime-aws-tenant-id'];
    if (h['lambda-runtime-trace-id']) env._X_AMZN_TRACE_ID = h['lambda-runtime-trace-id'];
    else delete env._X_AMZN_TRACE_ID;

    onUncaught = (error, code) => {
      const [body, text] = errorBody(error);
      this.client.sendAndExit('POST', `${API}invocation/${encodeURIComponent(id)}/error`, Buffer.from(text, 'utf8'),
        `Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: ${headerValue(body.errorType)}\r\n`, code);
    };
    let finished = false; // the first of callback/succeed/fail/done (or the promise) wins
    let completed = false;
    let waitForEmptyEventLoop = true;
    const next = () => this.schedule();
    const complete = (result) => {
      if (completed) {
        console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
        return;
      }
      completed = true;
      const body = serialize(result); // throws 'Unable to stringify response body' to its caller
      this.post(`invocation/${encodeURIComponent(id)}/response`, body, 'application/json').then(next, (e) => fatal(3, e.message));
    };
    const postError = (err) => {
      logError('Invoke Error', err);
      this.postError(err, id).then(next, (e) => fatal(3, e.message));
    };
    const done = (err, result) => {
      beforeExit = () => {};
      if (err !== undefined && err !== null) postError(err);
      else complete(result);
    };
    const once = (fn) => function () {
      if (!finished) {
        fn.apply(null, arguments);
        finished = true;
      }
    };
    const callback = once((err, result) => {
      beforeExit = () => {};
      if (err !== undefined && err !== null) postError(err);
      else if (!waitForEmptyEventLoop) complete(result);
      else beforeExit = () => setImmediate(() => complete(result));
    });
    const context = {
      get callbackWaitsForEmptyEventLoop() { return waitForEmptyEventLoop; },
      set callbackWaitsForEmptyEventLoop(value) { waitForEmptyEventLoop = value; },
      succeed: once((result) => done(null, result)),
      fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
      done: once(done),
      functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
      functionName: env.AWS_LAMBDA_FUNCTION_NAME,
      memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
      logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    };
    // A handler that leaves nothing to wait for and never answers: sync ones answer null, async ones fail.
    beforeExit = () => {
      completed = true;
      beforeExit = () => {};
      if (this.isAsync) {
        const error = new NodeJsExit(NODE_EXIT_MESSAGE);
        logError('Invoke Error', error);
        this.postError(error, id).then(next, (e) => fatal(3, e.message));
      } else {
        this.post(`invocation/${encodeURIComponent(id)}/response`, 'null', 'application/json').then(next, (e) => fatal(3, e.message));
      }
    };
    try {
      const deadline = Number(h['lambda-runtime-deadline-ms']);
      Object.assign(context, {
        clientContext: parseJson(h['lambda-runtime-client-context'], 'ClientContext'),
        identity: parseJson(h['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
        invokedFunctionArn: h['lambda-runtime-invoked-function-arn'],
        awsRequestId: id,
        tenantId: h['lambda-runtime-aws-tenant-id'],
        getRemainingTimeInMillis: () => deadline - Date.now(),
      });
      const event = JSON.parse(res.body.toString('utf8'));
      if (this.streaming) return this.stream(event, context, id, next);
      const result = this.handler(event, context, callback);
      if (result && typeof result.then === 'function') {
        result.then(context.succeed, context.fail).catch(context.fail);
      }
    } catch (err) {
      callback(err);
    }
  }

  /** A streaming handler (awslambda.streamifyResponse): its stream is collected and answered whole. */
  async stream(event, context, id, next) {
    const { Writable } = require('stream');
    const chunks = [];
    let size = 0;
    const responseStream = new Writable({
      write(chunk, _enc, cb) {
        size += chunk.length;
        if (size <= RESPONSE_LIMIT) chunks.push(Buffer.from(chunk));
        cb();
      },
    });
    responseStream.setContentType = () => {};
    beforeExit = () => {};
    try {
      const returned = this.handler(event, responseStream, context);
      if (!returned || typeof returned.then !== 'function') throw new Error('Streaming does not support non-async handlers.');
      await returned;
      if (!responseStream.writableFinished) throw new Error('Response stream is not finished.');
      const body = Buffer.concat(chunks);
      await this.client.request('POST', `${API}invocation/${encodeURIComponent(id)}/response`, body,
        'Content-Type: application/octet-stream\r\n');
      next();
    } catch (err) {
      logError('Invoke Error', err);
      this.postError(err, id).then(next, (e) => fatal(3, e.message));
    }
  }
}

function parseJson(text, name) {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

async function main() {
  patchConsole();
  const address = env.AWS_LAMBDA_RUNTIME_API;
  if (!address) fatal(2, 'AWS_LAMBDA_RUNTIME_API is not set');
  let client;
  try {
    client = new RuntimeApiClient(address);
  } catch (e) {
    fatal(2, e.message);
  }
  const postInitError = (error, code) => {
    const [body, text] = errorBody(error);
    client.request('POST', API + 'init/error', Buffer.from(text, 'utf8'),
      `Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: ${headerValue(body.errorType)}\r\n`)
      .finally(() => process.exit(code));
  };
  onUncaught = postInitError;
  process.on('uncaughtException', (error) => {
    logError('Uncaught Exception', error);
    onUncaught(error, 129);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const error = unhandledRejection(reason, promise);
    logError('Unhandled Promise Rejection', error);
    onUncaught(error, 128);
  });
  process.on('beforeExit', () => beforeExit());

  const handlerString = env._HANDLER || ''; // (as Lambda's: arguments a wrapper adds are not the handler)
  const handler = await loadHandler(TASK_ROOT, handlerString); // throws: an uncaught exception, as on Lambda
  if (handler.length === 3 && handler.constructor?.name !== 'AsyncFunction' &&
      handler[HANDLER_STREAMING] === undefined && env.AWS_LAMBDA_NODEJS_DISABLE_CALLBACK_WARNING === undefined) {
    console.warn('AWS Lambda plans to remove support for callback-based function handlers starting with Node.js 24. ' +
      'You will need to update this function to use an async handler to use Node.js 24 or later. For more ' +
      'information and to provide feedback on this change, see ' +
      'https://github.com/aws/aws-lambda-nodejs-runtime-interface-client/issues/137. To disable this warning, set ' +
      'the AWS_LAMBDA_NODEJS_DISABLE_CALLBACK_WARNING environment variable.');
  }
  new Runtime(client, handler).schedule();
}

main().catch((error) => {
  process.emit('uncaughtException', error);
});
