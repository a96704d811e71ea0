"""Kindling Python runtime: the process inside one Lambda execution environment.

Started as ``python3.X -s bootstrap.py [handler]`` with Lambda's environment
(AWS_LAMBDA_RUNTIME_API, _HANDLER, LAMBDA_TASK_ROOT, ...).  It imports the
handler once, then loops on the Runtime API (2018-06-01): GET next -> call the
handler -> POST response / error.  Behaviour mirrors AWS's python runtime
(awslambdaric): error types and messages, the context object, the logging
handler, stdout/stderr flushing.

Stdlib only, and built for cold start: nothing heavy is imported before the
first GET /next.  No json/socket/re/enum/logging/http: JSON goes through the C
accelerator ``_json`` (falling back to the real ``json`` only to reproduce its
exact errors), HTTP is a small HTTP/1.1 client on one keep-alive ``_socket``.
``traceback`` is imported on errors only, and the root logging handler is
installed by a meta-path hook the moment user code imports ``logging``.

Python compiles a script given on the command line on every start and never
caches it; for this file that is ~4-5 ms, half a bare interpreter start.  So
the runtime's code is the string ``_BODY`` below: the parser skips a string in
~0.2 ms, and ``_load_body`` compiles it once into
``__pycache__/bootstrap.body.<cache_tag>.pyc`` (keyed on this file's mtime and
size and the interpreter's magic number) and afterwards just unmarshals it.
Line numbers match this file, so tracebacks show the right source lines.
``python3.X bootstrap.py --precompile`` writes that cache ahead of time (for a
read-only install; honours PYTHONPYCACHEPREFIX).

Exit status: 0 on SIGTERM (or after --precompile), 1 after an init error was
posted (or a handler raised SystemExit(1)), 2 when AWS_LAMBDA_RUNTIME_API is
missing or invalid, 3 when the Runtime API fails (connection lost, unexpected
status on /next).
"""

import sys


def _load_body(force_write=False):
    """Compile ``_BODY`` (or load its cached code object) into this module."""
    import os
    import marshal
    import _frozen_importlib_external as bootstrap_external

    filename = sys._getframe().f_code.co_filename
    code = cache = header = None
    try:
        st = os.stat(filename)
        header = bootstrap_external.MAGIC_NUMBER + b"%d:%d\n" % (st.st_mtime_ns, st.st_size)
        cache = bootstrap_external.cache_from_source(
            os.path.splitext(os.path.abspath(filename))[0] + ".body.py")
        with open(cache, "rb") as f:
            data = f.read()
        if data.startswith(header):
            code = marshal.loads(memoryview(data)[len(header):])
            if code.co_filename != filename:  # compiled at another path (the host's): say where it runs from
                import _imp
                _imp._fix_co_filename(code, filename)
    except Exception:
        pass
    if code is None:
        code = compile("\n" * _BODY_LINE + _BODY, filename, "exec")
        if cache is not None and (force_write or not sys.dont_write_bytecode):
            tmp = "%s.%d.tmp" % (cache, os.getpid())
            try:
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(header + marshal.dumps(code))
                os.replace(tmp, cache)
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    exec(code, globals())
    return cache


# Everything below, up to the closing quotes, is the runtime's source code.
_BODY_LINE = sys._getframe().f_lineno
_BODY = r'''
import sys
import os
import time
import _socket
import _signal
from _json import make_scanner as _make_scanner
from _json import make_encoder as _make_encoder
from _json import encode_basestring_ascii as _encode_str_ascii

_API_PREFIX = "/2018-06-01/runtime/"
_SELF_FILE = (lambda: 0).__code__.co_filename


def _log_settings():
    """(JSON format?, level name) from the environment: read at start, and again in a zygote's clone."""
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    return ((os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON",
            {None: "", "TRACE": "DEBUG"}.get(level, level).upper())


_LOG_FORMAT_JSON, _LOG_LEVEL = _log_settings()
_LAMBDA_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the "
    "function code. However, in rare cases, a Lambda runtime update can cause "
    "unexpected function behavior. For functions using managed runtimes, runtime "
    "updates can be triggered by a function change, or can be applied automatically. "
    "To determine if the runtime has been updated, check the runtime version in the "
    "INIT_START log entry. If this error correlates with a change in the runtime "
    "version, you may be able to mitigate this error by temporarily rolling back to "
    "the previous runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)

# Per-invoke state read by the logging filter.
_request_id = None
_tenant_id = None


class _Fault(Exception):
    """A runtime-detected failure with a Lambda error type (FaultException)."""

    def __init__(self, error_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace


class _ApiError(Exception):
    """The Runtime API connection failed or answered nonsense."""


# ---------------------------------------------------------------- JSON ----


class _ScanContext(object):
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")
    }.__getitem__
    memo = None


_scan_once = _make_scanner(_ScanContext())


def json_loads(data):
    """json.loads(data) for bytes/str, via the C scanner; errors are json's own."""
    try:
        if isinstance(data, str):
            s = data
            if s[:1] == "\ufeff":
                raise ValueError
        else:
            if data[:1] in (b"\xef", b"\xfe", b"\xff") or 0 in data[:4]:
                raise ValueError  # BOM or UTF-16/32: let json detect the encoding
            s = data.decode("utf-8", "surrogatepass")
        n = len(s)
        i = 0
        while i < n and s[i] in " \t\n\r":
            i += 1
        obj, end = _scan_once(s, i)
        if end != n and s[end:].strip(" \t\n\r"):
            raise ValueError
        return obj
    except Exception:
        import json  # slow path: reproduces json's exact result or exception

        return json.loads(data)


def _json_encoder(ensure_ascii):
    if ensure_ascii:
        encode_str = _encode_str_ascii
    else:
        from _json import encode_basestring as encode_str

    def dumps(obj):
        """json.dumps(obj), plus Decimal support like AWS's simplejson encoder."""
        if isinstance(obj, str):
            return encode_str(obj)
        decimals = []

        def default(o):
            mod = sys.modules.get("decimal")
            if mod is not None and isinstance(o, mod.Decimal):
                if o.is_nan():
                    return float("nan")
                decimals.append(str(o))
                return "\x00\x01D%d\x01\x00" % (len(decimals) - 1)
            raise TypeError(
                "Object of type %s is not JSON serializable" % o.__class__.__name__
            )

        out = "".join(
            _make_encoder({}, default, encode_str, None, ": ", ", ", False, False, True)(
                obj, 0
            )
        )
        for i, raw in enumerate(decimals):
            token = encode_str("\x00\x01D%d\x01\x00" % i)
            out = out.replace(token, raw, 1)
        return out

    return dumps


json_dumps = _json_encoder(True)


# ---------------------------------------------------------------- HTTP ----


class RuntimeApiClient(object):
    """Minimal HTTP/1.1 client on one keep-alive TCP connection."""

    def __init__(self, address):
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            host, port = address, "80"
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.host_header = ("Host: %s\r\nUser-Agent: kindling-python/%d.%d.%d\r\n" % (
            address, sys.version_info[0], sys.version_info[1], sys.version_info[2]
        )).encode("latin-1")
        self.sock = None
        self.buf = bytearray()
        self.answered = False

    def _connect(self):
        err = None
        # bytes host: a str would be run through the idna codec (imports re).
        for family, stype, proto, _, addr in _socket.getaddrinfo(
            self.host.encode("ascii", "ignore"), self.port, 0, _socket.SOCK_STREAM
        ):
            sock = None
            try:
                sock = _socket.socket(family, stype, proto)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                sock.connect(addr)
                self.sock = sock
                del self.buf[:]
                return
            except OSError as e:
                err = e
                if sock is not None:
                    sock.close()
        raise err or OSError("getaddrinfo returned nothing")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def request(self, method, path, body=None, headers=b""):
        """Send one request; return (status, {lower-case name: value}, body bytes)."""
        head = b"%s %s HTTP/1.1\r\n" % (method, path.encode("utf-8")) + self.host_header + headers
        if body is not None:
            head += b"Content-Length: %d\r\n\r\n" % len(body)
            data = head + body
        else:
            data = head + b"\r\n"
        for attempt in (0, 1):
            reused = self.sock is not None
            self.answered = False
            try:
                if not reused:
                    self._connect()
                self.sock.sendall(data)
                return self._read_response(method == b"HEAD")
            except (OSError, ValueError, _ApiError) as e:
                self.close()
                # A kept-alive connection the server had already dropped (nothing
                # came back): send again once on a fresh connection.
                if not reused or attempt or self.answered:
                    raise _ApiError("%s %s: %s" % (method.decode(), path, e))

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _ApiError("connection closed by the Runtime API")
        self.buf += chunk

    def _read_line(self):
        buf = self.buf
        start = 0
        while True:
            i = buf.find(b"\r\n", start)
            if i >= 0:
                line = bytes(buf[:i])
                del buf[: i + 2]
                return line
            start = max(len(buf) - 1, 0)
            self._fill()

    def _read_exact(self, n):
        buf = self.buf
        if len(buf) >= n:
            out = bytes(buf[:n])
            del buf[:n]
            return out
        out = bytearray(n)
        have = len(buf)
        out[:have] = buf
        del buf[:]
        view = memoryview(out)
        sock = self.sock
        while have < n:
            got = sock.recv_into(view[have:])
            if not got:
                raise _ApiError("connection closed by the Runtime API mid-body")
            have += got
        view.release()
        return out

    def _read_response(self, head_only):
        while True:
            if not self.buf:
                self._fill()
            self.answered = True
            line = self._read_line()
            version, _, rest = line.partition(b" ")
            try:
                status = int(rest[:3])
            except ValueError:
                raise _ApiError("bad status line %r" % line[:100])
            headers = {}
            while True:
                line = self._read_line()
                if not line:
                    break
                name, _, value = line.partition(b":")
                key = name.strip().decode("latin-1").lower()
                value = value.strip().decode("utf-8", "replace")
                headers[key] = headers[key] + ", " + value if key in headers else value
            if status >= 200 or status < 100:
                break  # skip interim 1xx responses
        close = "close" in headers.get("connection", "").lower() or (
            version == b"HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower()
        )
        if head_only or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self._read_line().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._read_line():
                        pass  # trailers
                    break
                parts.append(self._read_exact(size))
                self._read_exact(2)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        else:
            close = True  # body delimited by connection close
            chunks = [bytes(self.buf)]
            del self.buf[:]
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            body = b"".join(chunks)
        if close:
            self.close()
        return status, headers, body


# ------------------------------------------------------------- context ----


class CognitoIdentity(object):
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id, self.cognito_identity_pool_id)


class Client(object):
    __slots__ = ["installation_id", "app_title", "app_version_name",
                 "app_version_code", "app_package_name"]

    def __repr__(self):
        return ("Client([installation_id=%s,app_title=%s,app_version_name=%s,"
                "app_version_code=%s,app_package_name=%s])" % tuple(
                    getattr(self, k) for k in self.__slots__))


class ClientContext(object):
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return "ClientContext([custom=%s,env=%s,client=%s])" % (
            self.custom, self.env, self.client)


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, d.get(field))
    return obj


_W3C_FIELDS = ("traceparent", "tracestate", "baggage")


class LambdaContext(object):
    def __init__(self, invoke_id, client_context, cognito_identity,
                 epoch_deadline_time_in_ms, invoked_function_arn=None, tenant_id=None):
        env = os.environ
        self.aws_request_id = invoke_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        # A string, exactly like AWS (os.environ value).
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        w3c = {}
        if isinstance(client_context, dict) and "w3c" in client_context:
            raw = client_context.pop("w3c")
            if isinstance(raw, dict):
                w3c = {k: raw[k] for k in _W3C_FIELDS if isinstance(raw.get(k), str)}
        self._w3c_fields = w3c
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get(
                "cognitoIdentityPoolId")
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self):
        delta_ms = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta_ms if delta_ms > 0 else 0

    def w3c(self):
        return dict(self._w3c_fields)

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,"
            "function_name=%s,memory_limit_in_mb=%s,function_version=%s,"
            "invoked_function_arn=%s,client_context=%s,identity=%s,tenant_id=%s])" % (
                self.aws_request_id, self.log_group_name, self.log_stream_name,
                self.function_name, self.memory_limit_in_mb, self.function_version,
                self.invoked_function_arn, self.client_context, self.identity,
                self.tenant_id))


def _parse_json_header(value, name):
    try:
        return json_loads(value)
    except Exception as e:
        raise _Fault("Runtime.LambdaContextUnmarshalError",
                     "Unable to parse %s JSON: %s" % (name, e))


# ------------------------------------------------------------- logging ----


class _Unbuffered(object):
    """Flush after every write, like AWS's runtime does for stdout/stderr."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        pass

    def __getattr__(self, attr):
        return getattr(self.stream, attr)

    def write(self, msg):
        n = self.stream.write(msg)
        self.stream.flush()
        return n

    def writelines(self, msgs):
        self.stream.writelines(msgs)
        self.stream.flush()


class _StdoutLogSink(object):
    def log(self, msg, frame_type=None):
        sys.stdout.write(msg)


def _utc_stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def _install_logging(logging):
    """AWS's root handler: [LEVEL]\\ttime\\trequest-id\\tmessage on stdout."""
    logging.Formatter.converter = time.gmtime

    class LambdaLoggerHandler(logging.Handler):
        def __init__(self, log_sink):
            logging.Handler.__init__(self)
            self.log_sink = log_sink

        def emit(self, record):
            self.log_sink.log(self.format(record))

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id or ""
            record.tenant_id = _tenant_id
            return True

    handler = LambdaLoggerHandler(_StdoutLogSink())
    if _LOG_FORMAT_JSON:
        handler.setFormatter(_json_log_formatter(logging)())
    else:
        handler.setFormatter(logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    if _LOG_LEVEL in logging._nameToLevel:
        root.setLevel(_LOG_LEVEL)
    handler.addFilter(LambdaLoggerFilter())
    root.addHandler(handler)


def _json_log_formatter(logging):
    reserved = {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename",
        "module", "exc_info", "exc_text", "stack_info", "lineno", "funcName",
        "created", "msecs", "relativeCreated", "thread", "threadName",
        "processName", "process", "aws_request_id", "tenant_id", "_frame_type",
    }
    encode = _json_encoder(False)

    class JsonFormatter(logging.Formatter):
        def __init__(self):
            logging.Formatter.__init__(self, datefmt="%Y-%m-%dT%H:%M:%S")

        def formatTime(self, record, datefmt=None):
            return _utc_stamp(record.created)

        def format(self, record):
            record.levelno = min(50, max(0, record.levelno)) // 10 * 10
            record.levelname = logging.getLevelName(record.levelno)
            exc = record.exc_info
            stack = None
            if exc:
                import traceback

                stack = traceback.format_tb(exc[2])
            result = {
                "timestamp": self.formatTime(record, self.datefmt),
                "level": record.levelname,
                "message": record.getMessage(),
                "logger": record.name,
                "stackTrace": stack,
                "errorType": exc[0].__name__ if exc else None,
                "errorMessage": str(exc[1]) if exc else None,
                "requestId": getattr(record, "aws_request_id", None),
                "location": "%s:%s:%s" % (record.pathname, record.funcName, record.lineno)
                if exc else None,
            }
            if getattr(record, "tenant_id", None) is not None:
                result["tenantId"] = record.tenant_id
            for key, value in record.__dict__.items():
                if key not in reserved and key not in result:
                    result[key] = value
            return encode({k: v for k, v in result.items() if v is not None}) + "\n"

    return JsonFormatter


class _LoggingHook(object):
    """sys.meta_path entry that installs AWS's logging handler right after the
    ``logging`` module executes, i.e. before any user code can log.  Costs one
    string compare per first-time import; it removes itself once done."""

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or isinstance(loader, type):
            return None  # class-level loader: never patch it; logging goes unhooked
        original = loader.exec_module
        hook = self

        def exec_module(module):
            original(module)
            try:
                sys.meta_path.remove(hook)
            except ValueError:
                pass
            _install_logging(module)

        try:
            loader.exec_module = exec_module
        except Exception:
            return None
        return spec


def _setup_logging():
    if "logging" in sys.modules:
        _install_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingHook())


def _log_warning_line(msg):
    """What ``logging.warning(msg)`` prints through AWS's handler during init."""
    levels = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40,
              "CRITICAL": 50, "FATAL": 50, "NOTSET": 0}
    if levels.get(_LOG_LEVEL, 30) > 30:
        return
    t = time.time()
    if _LOG_FORMAT_JSON:
        line = json_dumps({"timestamp": _utc_stamp(t), "level": "WARNING", "message": msg,
                           "logger": "root", "requestId": _request_id or ""}) + "\n"
    else:
        line = "[WARNING]\t%s\t%s\t%s\n" % (_utc_stamp(t), _request_id or "", msg)
    sys.stdout.write(line)


def _log_error(error):
    """Print an error result the way AWS's runtime does (one write, stderr)."""
    if _LOG_FORMAT_JSON:
        rec = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
               "level": "ERROR"}
        rec.update(error)
        text = json_dumps(rec) + "\n"
    else:
        desc = "[ERROR]"
        if error.get("errorType"):
            desc += " " + error["errorType"]
        if error.get("errorMessage"):
            if error.get("errorType"):
                desc += ":"
            desc += " " + error["errorMessage"]
        lines = [desc, "Traceback (most recent call last):"]
        for element in error["stackTrace"]:
            lines.extend(element.splitlines() if element else [""])
        text = "\n".join(lines) + "\n"
    try:
        sys.stderr.write(text)
    except Exception:
        pass


# -------------------------------------------------------------- errors ----


def _make_error(message, error_type, stack_trace, invoke_id=None):
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": invoke_id if invoke_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def _user_frames(tb):
    """extract_tb as (file, line, name, text) tuples minus our leading frames."""
    import traceback

    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i, frame in enumerate(frames):
        if frame[0] != _SELF_FILE:
            return frames[i:]
    return frames


def _error_from_exception(exc, invoke_id=None):
    """(error result, x-ray fault) for the exception being handled."""
    if isinstance(exc, _Fault):
        return _make_error(exc.msg, exc.error_type, exc.trace, invoke_id), None
    import traceback

    frames = _user_frames(exc.__traceback__)
    name = type(exc).__name__
    error = _make_error(str(exc), name, traceback.format_list(frames), invoke_id)
    xray = {
        "working_directory": os.getcwd(),
        "exceptions": [{"message": str(exc), "type": name, "stack": [
            {"label": f[2], "path": f[0], "line": f[1]} for f in frames]}],
        "paths": list({f[0]: None for f in frames}),
    }
    return error, xray


# ------------------------------------------------------------- handler ----


def _get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise _Fault("Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (handler, e))
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise _Fault("Runtime.BuiltInModuleConflict",
                         "Cannot use built-in module %s as a handler module" % modname)
        import importlib

        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise _Fault("Runtime.ImportModuleError",
                     "Unable to import module '%s': %s" % (modname, e))
    except SyntaxError as e:
        raise _Fault("Runtime.UserCodeSyntaxError",
                     "Syntax error in module '%s': %s" % (modname, e),
                     ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)])
    try:
        return getattr(module, fname)
    except AttributeError:
        raise _Fault("Runtime.HandlerNotFound",
                     "Handler '%s' missing on module '%s'" % (fname, modname))


def _handle_invoke(client, request_handler, headers, body):
    invoke_id = headers.get("lambda-runtime-aws-request-id")
    try:
        client_context = headers.get("lambda-runtime-client-context")
        cognito = headers.get("lambda-runtime-cognito-identity")
        try:
            deadline_ms = int(headers.get("lambda-runtime-deadline-ms") or 0)
        except ValueError:
            deadline_ms = 0
        context = LambdaContext(
            invoke_id,
            _parse_json_header(client_context, "Client Context") if client_context else None,
            _parse_json_header(cognito, "Cognito Identity") if cognito else None,
            deadline_ms,
            headers.get("lambda-runtime-invoked-function-arn"),
            headers.get("lambda-runtime-aws-tenant-id"),
        )
        content_type = headers.get("content-type")
        if content_type and not content_type.startswith("application/json"):
            event = body if isinstance(body, bytes) else bytes(body)
        elif not body:
            event = None
        else:
            try:
                event = json_loads(body)
            except Exception as e:
                raise _Fault("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
        response = request_handler(event, context)
        if isinstance(response, bytes):
            result, result_type = response, b"application/unknown"
        else:
            try:
                result = json_dumps(response).encode("utf-8")
            except Exception as e:
                raise _Fault("Runtime.MarshalError", "Unable to marshal response: %s" % e)
            result_type = b"application/json"
    except Exception as e:
        error, xray = _error_from_exception(e, invoke_id)
        del e
        _log_error(error)
        extra = b"Lambda-Runtime-Function-Error-Type: %s\r\n" % _header_value(error["errorType"])
        if xray is not None:
            try:
                # (at most 32 KiB: the Runtime API refuses request heads over 64 KiB, which would lose the error)
                cause = json_dumps(xray).encode("utf-8")
                if len(cause) < 32 * 1024 and b"\r" not in cause and b"\n" not in cause:
                    extra += b"Lambda-Runtime-Function-XRay-Error-Cause: %s\r\n" % cause
            except Exception:
                pass
        _post(client, "invocation/%s/error" % invoke_id, json_dumps(error).encode("utf-8"),
              b"application/json", extra)
        return
    _post(client, "invocation/%s/response" % invoke_id, result, result_type)


def _header_value(text):
    return text.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ")


def _post(client, path, body, content_type, extra=b""):
    status, _, resp = client.request(
        b"POST", _API_PREFIX + path, body, b"Content-Type: " + content_type + b"\r\n" + extra)
    if not 200 <= status < 300:
        sys.stderr.write("[WARNING] Runtime API answered %d to POST %s: %s\n" % (
            status, path, resp[:500].decode("utf-8", "replace")))


# ---------------------------------------------------------------- main ----


def _on_sigterm(signum, frame):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)


def _fatal(code, msg):
    try:
        sys.stderr.write("[ERROR] kindling runtime: %s\n" % msg)
    except Exception:
        pass
    os._exit(code)


def _control_socket():
    """(fd, zygote?) of the spawner's control socket when this runtime is a template (fd 3) or a zygote (fd 4)
    (kindling/sandbox/template.py); (None, False) for an ordinary environment, which starts with fds 0-2 only."""
    for fd, zygote in ((3, False), (4, True)):
        try:
            if os.fstat(fd).st_mode & 0o170000 == 0o140000:  # S_IFSOCK
                return fd, zygote
        except OSError:
            pass
    return None, False


def main():
    global _request_id, _tenant_id
    _signal.signal(_signal.SIGTERM, _on_sigterm)
    sys.stdout = _Unbuffered(sys.stdout)
    sys.stderr = _Unbuffered(sys.stderr)

    control, zygote = _control_socket()
    if zygote:  # a runtime waiting, before any init, to be forked for a function: what returns is one
        import kindling_template
        kindling_template.serve(control, zygote=True)
        control = None  # (a clone: the zygote's socket is closed)
        global _LOG_FORMAT_JSON, _LOG_LEVEL
        _LOG_FORMAT_JSON, _LOG_LEVEL = _log_settings()

    env = os.environ
    address = env.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        _fatal(2, "AWS_LAMBDA_RUNTIME_API is not set")
    try:
        client = RuntimeApiClient(address)
    except ValueError:
        _fatal(2, "bad AWS_LAMBDA_RUNTIME_API %r" % address)
    handler = sys.argv[1] if len(sys.argv) > 1 else env.get("_HANDLER", "")

    # The task root replaces this script's directory at the head of sys.path.
    task_root = env.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # (This script's path as started, /var/runtime/...: the code cache's co_filename is where it was compiled.)
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path[0] = task_root
    else:
        sys.path.insert(0, task_root)
    # The AWS SDK the runtime carries (kindling/runtimes/sdk.py): after /var/task (and the layers and
    # /var/runtime of PYTHONPATH), so a function's own boto3 wins, as on Lambda. Imported only if the function does.
    sdk = os.path.join(here, "sdk", "python%d.%d" % sys.version_info[:2])
    at = sys.path.index(here) + 1 if here in sys.path else 1
    sys.path.insert(at, sdk)

    _setup_logging()
    try:
        request_handler = _get_handler(handler)
    except Exception as e:
        error, _ = _error_from_exception(e)
        del e
        _log_warning_line(_LAMBDA_WARNING)
        _log_error(error)
        try:
            _post(client, "init/error", json_dumps(error).encode("utf-8"), b"application/json",
                  b"Lambda-Runtime-Function-Error-Type: %s\r\n" % _header_value(
                      error["errorType"]))
        except _ApiError as api_error:
            _fatal(1, "could not post the init error: %s" % api_error)
        sys.stdout.flush()
        os._exit(1)

    if control is not None:  # a template: wait to be forked; what returns is a new environment
        import kindling_template
        kindling_template.serve(control)

    next_path = _API_PREFIX + "invocation/next"
    environ = os.environ
    while True:
        try:
            status, headers, body = client.request(b"GET", next_path)
        except _ApiError as e:
            _fatal(3, str(e))
        if status != 200:
            _fatal(3, "GET %s answered %d: %s" % (
                next_path, status, body[:500].decode("utf-8", "replace")))
        _request_id = headers.get("lambda-runtime-aws-request-id")
        _tenant_id = headers.get("lambda-runtime-aws-tenant-id")
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id is not None:
            environ["_X_AMZN_TRACE_ID"] = trace_id
        elif "_X_AMZN_TRACE_ID" in environ:
            del environ["_X_AMZN_TRACE_ID"]
        try:
            _handle_invoke(client, request_handler, headers, body)
        except _ApiError as e:
            _fatal(3, str(e))
'''


if __name__ == "__main__" and sys.argv[1:] == ["--precompile"]:
    print(_load_body(force_write=True))
else:
    _load_body()
    if __name__ == "__main__":
        main()  # noqa: F821 (defined by _BODY)
