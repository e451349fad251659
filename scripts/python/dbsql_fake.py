"""dbsql_fake: a protocol-level fake of a Databricks SQL warehouse, for tests.

What it is
    One local HTTP server (127.0.0.1 only) that speaks the warehouse's Thrift-over-HTTP service
    (TCLIService, TBinaryProtocol in the body of a POST to any path such as
    /sql/1.0/warehouses/<id>), as github.com/databricks/databricks-sql-go talks to it, plus a small
    JSON control API under /fake/ through which a test scripts the answers and reads back what
    the driver sent. The Thrift types come from the generated code inside the
    databricks-sql-connector wheel (installed with --no-deps; see dbsql-fake-requirements.txt).

What it fakes
    OpenSession (answers protocol SPARK_CLI_SERVICE_PROTOCOL_V8 or the client's, if lower: V8 is
    what the Go driver needs to send query parameters), ExecuteStatement, GetOperationStatus,
    GetResultSetMetadata, FetchResults, CancelOperation, CloseOperation, CloseSession. Results go
    back as column-based row sets (no Arrow), inside "direct results" when the driver asks for
    them (it does at V1 and above, which saves it the 1 s status poll), paged by the driver's
    maxRows. An error answers with operation state ERROR_STATE, sqlState and displayMessage, as
    the real service does, so the driver's DBExecutionError carries SqlState() and the message.
    Staging statements (PUT '<local>' INTO '/Volumes/..' [OVERWRITE], GET '/Volumes/..' TO
    '<local>', REMOVE '/Volumes/..') are answered with the staging row the driver expects
    (operation, presigned URL, headers JSON, local file) whose URL points at this server's
    /fake/staged/<volume path>, where the bytes are kept in memory.
    Any bearer token is accepted; whether an Authorization header came is recorded (never its
    value).

What it does not do
    It executes no SQL: a statement gets what the first matching rule says, else an empty result
    (no columns, no rows, 0 rows affected). No Arrow, CloudFetch, LZ4, catalog RPCs (GetTables,
    ...), OAuth, TLS, async states, or "file exists" checks on PUT without OVERWRITE.

Control API (JSON)
    POST /fake/rules      a rule or a list of rules, appended; the first rule whose `match` (a
                          Python regex, searched case-insensitively, dot matching newlines) fits
                          answers. Each rule has one of:
          "result":  {"columns": [{"name": "n", "type": "bigint"}], "rows": [[1]],
                      "affected_rows": 1}   types: string varchar char bigint long int integer
                      smallint tinyint boolean double float decimal(p,s) timestamp date binary;
                      timestamps as "2024-01-02 03:04:05.123456", decimals as strings or numbers
          "error":   {"sqlstate": "42P01", "message": "[TABLE_OR_VIEW_NOT_FOUND] ... SQLSTATE: 42P01"}
          "staging": {"headers": {...}, "http_status": 403}   for PUT/GET/REMOVE statements: extra
                      headers handed to the driver, and the status the presigned URL answers with
        and optionally "once": true (the rule is dropped after its first use). A statement that
        no rule answers: PUT/GET/REMOVE get the staging answer, anything else the empty result.
    GET  /fake/statements every executed statement, in order: statement, parameters, conf_overlay,
                          session_conf, catalog, schema, authorization (bool), outcome (result,
                          error, staging or default), closed, cancelled
    GET  /fake/sessions   every opened session: configuration, catalog, schema, authorization, closed
    GET  /fake/staged     {"<volume path>": size}; GET|PUT|DELETE /fake/staged/<volume path> reads,
                          stores, removes one staged file (what the driver's PUT/GET/REMOVE use)
    POST /fake/reset      forget rules, statements and staged files (open sessions stay open: a
                          client's connection pool goes on using them)
    GET  /fake/health     {"ok": true}

With databricks-sql-go (v1.14.0): WithServerHostname("http://127.0.0.1") + WithPort(N) talks
plain HTTP; only the DSN form can say enableTelemetry=false, without which each new connection
also probes https://<host>:443 for a feature flag (fails, harmless, logs "request failed").
Staging runs only through ExecContext with driverctx.NewContextWithStagingInfo; script a 4xx
http_status for upload failures (the driver retries 429 and 5xx with backoff).

Run: python dbsql_fake.py --port N   (N=0 picks a free port); prints
"dbsql_fake ready on http://127.0.0.1:<port>" once it listens; stops on SIGTERM or SIGINT.
"""
import argparse
import json
import re
import signal
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from databricks.sql.thrift_api.TCLIService import TCLIService
from databricks.sql.thrift_api.TCLIService import ttypes as T
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

SERVER_PROTOCOL = T.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V8
OK = T.TStatus(statusCode=T.TStatusCode.SUCCESS_STATUS)

# type name -> (TTypeId, TColumn field, column class, python conversion, value used under a null)
TYPES = {
    "string": (T.TTypeId.STRING_TYPE, "stringVal", T.TStringColumn, str, ""),
    "bigint": (T.TTypeId.BIGINT_TYPE, "i64Val", T.TI64Column, int, 0),
    "int": (T.TTypeId.INT_TYPE, "i32Val", T.TI32Column, int, 0),
    "smallint": (T.TTypeId.SMALLINT_TYPE, "i16Val", T.TI16Column, int, 0),
    "tinyint": (T.TTypeId.TINYINT_TYPE, "byteVal", T.TByteColumn, int, 0),
    "boolean": (T.TTypeId.BOOLEAN_TYPE, "boolVal", T.TBoolColumn, bool, False),
    "double": (T.TTypeId.DOUBLE_TYPE, "doubleVal", T.TDoubleColumn, float, 0.0),
    "float": (T.TTypeId.FLOAT_TYPE, "doubleVal", T.TDoubleColumn, float, 0.0),
    "decimal": (T.TTypeId.DECIMAL_TYPE, "stringVal", T.TStringColumn, str, ""),
    "timestamp": (T.TTypeId.TIMESTAMP_TYPE, "stringVal", T.TStringColumn, str, ""),
    "date": (T.TTypeId.DATE_TYPE, "stringVal", T.TStringColumn, str, ""),
    "binary": (T.TTypeId.BINARY_TYPE, "binaryVal", T.TBinaryColumn,
               lambda v: v.encode() if isinstance(v, str) else bytes(v), b""),
}
ALIASES = {"varchar": "string", "char": "string", "long": "bigint", "integer": "int",
           "short": "smallint", "byte": "tinyint", "bool": "boolean"}

STAGING_RE = [
    ("PUT", re.compile(r"^\s*PUT\s+'([^']*)'\s+INTO\s+'([^']*)'", re.I)),   # local, remote
    ("GET", re.compile(r"^\s*GET\s+'([^']*)'\s+TO\s+'([^']*)'", re.I)),     # remote, local
    ("REMOVE", re.compile(r"^\s*REMOVE\s+'([^']*)'", re.I)),                # remote
]


def base_type(name):
    base = re.match(r"\s*([a-z_]*)", name.lower()).group(1)
    base = ALIASES.get(base, base)
    if base not in TYPES:
        raise ValueError(f"unsupported column type {name!r}")
    return base


def validate_rule(rule):
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
        raise ValueError("a rule is an object with a string 'match'")
    re.compile(rule["match"])
    kinds = [k for k in ("result", "error", "staging") if k in rule]
    if len(kinds) > 1:
        raise ValueError("a rule has at most one of result, error, staging")
    for col in rule.get("result", {}).get("columns", []):
        base_type(col["type"])
    for row in rule.get("result", {}).get("rows", []):
        if len(row) != len(rule["result"].get("columns", [])):
            raise ValueError(f"row {row!r} does not match the columns")


class Result:
    """One statement's answer: columns [(name, type)], rows, rows affected, or an error."""

    def __init__(self, columns=(), rows=(), affected=0, error=None, staging=False):
        self.columns, self.rows, self.affected = list(columns), list(rows), affected
        self.error, self.staging = error, staging
        self.cursor = 0

    def schema(self):
        descs = []
        for pos, (name, typ) in enumerate(self.columns, start=1):
            entry = T.TPrimitiveTypeEntry(type=TYPES[base_type(typ)][0])
            m = re.match(r"\s*decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", typ, re.I)
            if m:
                entry.typeQualifiers = T.TTypeQualifiers(qualifiers={
                    "precision": T.TTypeQualifierValue(i32Value=int(m.group(1))),
                    "scale": T.TTypeQualifierValue(i32Value=int(m.group(2)))})
            descs.append(T.TColumnDesc(columnName=name, position=pos, typeDesc=T.TTypeDesc(
                types=[T.TTypeEntry(primitiveEntry=entry)])))
        return T.TTableSchema(columns=descs)

    def metadata(self):
        return T.TGetResultSetMetadataResp(
            status=OK, schema=self.schema(), resultFormat=T.TSparkRowSetType.COLUMN_BASED_SET,
            lz4Compressed=False, isStagingOperation=self.staging)

    def status(self):
        if self.error:
            msg = self.error.get("message", "error")
            return T.TGetOperationStatusResp(
                status=OK, operationState=T.TOperationState.ERROR_STATE, errorCode=0,
                sqlState=self.error.get("sqlstate"), errorMessage=msg, displayMessage=msg)
        return T.TGetOperationStatusResp(
            status=OK, operationState=T.TOperationState.FINISHED_STATE, hasResultSet=True,
            numModifiedRows=self.affected)

    def fetch(self, max_rows):
        """The next page of rows as a TFetchResultsResp; the cursor moves past it."""
        start = self.cursor
        page = self.rows[start:start + max_rows] if max_rows and max_rows > 0 else self.rows[start:]
        self.cursor = start + len(page)
        cols = []
        for i, (_, typ) in enumerate(self.columns):
            _, field, cls, conv, null = TYPES[base_type(typ)]
            values, nulls = [], bytearray((len(page) + 7) // 8)
            for r, row in enumerate(page):
                if row[i] is None:
                    nulls[r // 8] |= 1 << (r % 8)
                    values.append(null)
                else:
                    values.append(conv(row[i]))
            cols.append(T.TColumn(**{field: cls(values=values, nulls=bytes(nulls))}))
        return T.TFetchResultsResp(
            status=OK, hasMoreRows=self.cursor < len(self.rows), resultSetMetadata=self.metadata(),
            results=T.TRowSet(startRowOffset=start, rows=[], columns=cols))


class Fake:
    """The fake's state; one lock guards it, since requests run in threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.base_url = ""
        self.sessions, self.ops = {}, {}
        self.reset()

    def reset(self):
        self.rules, self.statements, self.staged = [], [], {}

    def answer(self, text):
        """The Result for a statement, from the first matching rule or the defaults."""
        rule = next((r for r in self.rules if re.search(r["match"], text, re.I | re.S)), None)
        if rule and rule.get("once"):
            self.rules.remove(rule)
        rule = rule or {}
        if "error" in rule:
            return Result(error=rule["error"]), "error"
        if "result" in rule:
            res = rule["result"]
            cols = [(c["name"], c["type"]) for c in res.get("columns", [])]
            return Result(cols, res.get("rows", []), res.get("affected_rows", 0)), "result"
        for op, rx in STAGING_RE:
            m = rx.match(text)
            if m:
                return self.staging(op, m, rule.get("staging", {})), "staging"
        if "staging" in rule:
            return Result(error={"sqlstate": "42000", "message": "not a staging statement"}), "error"
        return Result(), "default"

    def staging(self, op, m, conf):
        remote = m.group(2) if op == "PUT" else m.group(1)
        local = m.group(1) if op == "PUT" else (m.group(2) if op == "GET" else "")
        url = self.base_url + "/fake/staged" + urllib.parse.quote("/" + remote.lstrip("/"))
        if conf.get("http_status"):
            url += f"?status={int(conf['http_status'])}"
        headers = json.dumps(conf.get("headers", {}))
        cols = [("operation", "string"), ("presignedUrl", "string"), ("headers", "string")]
        row = [op, url, headers]
        if op != "REMOVE":
            cols.append(("localFile", "string"))
            row.append(local)
        return Result(cols, [row], staging=True)


FAKE = Fake()
REQUEST = threading.local()  # what the thrift handler needs from the HTTP request


def new_id():
    return T.THandleIdentifier(guid=uuid.uuid4().bytes, secret=uuid.uuid4().bytes)


def param_json(p):
    v = p.value
    value = None if v is None else next(
        (x for x in (v.stringValue, v.doubleValue, v.booleanValue) if x is not None), None)
    return {"ordinal": p.ordinal, "name": p.name, "type": p.type, "value": value}


class Handler:
    """TCLIService, as far as the Go driver uses it."""

    def OpenSession(self, req):
        version = req.client_protocol_i64 if req.client_protocol_i64 is not None else req.client_protocol
        version = min(version, SERVER_PROTOCOL) if version and version > 0 else SERVER_PROTOCOL
        handle = T.TSessionHandle(sessionId=new_id(), serverProtocolVersion=version)
        ns = req.initialNamespace
        with FAKE.lock:
            FAKE.sessions[handle.sessionId.guid] = {
                "session_id": str(uuid.UUID(bytes=handle.sessionId.guid)),
                "configuration": dict(req.configuration or {}),
                "catalog": ns.catalogName if ns else None, "schema": ns.schemaName if ns else None,
                "authorization": REQUEST.auth, "closed": False}
        return T.TOpenSessionResp(status=OK, serverProtocolVersion=version, sessionHandle=handle,
                                  canUseMultipleCatalogs=True)

    def CloseSession(self, req):
        with FAKE.lock:
            sess = FAKE.sessions.get(req.sessionHandle.sessionId.guid)
            if sess:
                sess["closed"] = True
        return T.TCloseSessionResp(status=OK)

    def ExecuteStatement(self, req):
        handle = T.TOperationHandle(operationId=new_id(), hasResultSet=True,
                                    operationType=T.TOperationType.EXECUTE_STATEMENT)
        with FAKE.lock:
            sess = FAKE.sessions.get(req.sessionHandle.sessionId.guid)
            if sess is None:
                return T.TExecuteStatementResp(status=T.TStatus(
                    statusCode=T.TStatusCode.INVALID_HANDLE_STATUS, errorMessage="invalid session"))
            result, outcome = FAKE.answer(req.statement)
            record = {
                "statement_id": str(uuid.UUID(bytes=handle.operationId.guid)),
                "session_id": sess["session_id"], "statement": req.statement,
                "parameters": [param_json(p) for p in req.parameters or []],
                "conf_overlay": dict(req.confOverlay or {}), "session_conf": sess["configuration"],
                "catalog": sess["catalog"], "schema": sess["schema"],
                "authorization": REQUEST.auth, "outcome": outcome,
                "closed": False, "cancelled": False}
            if result.error:
                record["error"] = result.error
            FAKE.statements.append(record)
            FAKE.ops[handle.operationId.guid] = (result, record)
            resp = T.TExecuteStatementResp(status=OK, operationHandle=handle)
            if req.getDirectResults is not None:  # the whole answer at once, if it fits
                direct = T.TSparkDirectResults(operationStatus=result.status())
                if not result.error:
                    direct.resultSetMetadata = result.metadata()
                    direct.resultSet = result.fetch(req.getDirectResults.maxRows)
                if result.error or not direct.resultSet.hasMoreRows:
                    direct.closeOperation = T.TCloseOperationResp(status=OK)
                    record["closed"] = True
                resp.directResults = direct
            return resp

    def _op(self, handle, resp_type, action):
        """action(result, record) for a known operation, else resp_type with an invalid handle."""
        with FAKE.lock:
            op = FAKE.ops.get(handle.operationId.guid)
            if op is None:
                return resp_type(status=T.TStatus(statusCode=T.TStatusCode.INVALID_HANDLE_STATUS,
                                                  errorMessage="fake: unknown operation handle"))
            return action(*op)

    def GetOperationStatus(self, req):
        return self._op(req.operationHandle, T.TGetOperationStatusResp, lambda res, _: res.status())

    def GetResultSetMetadata(self, req):
        return self._op(req.operationHandle, T.TGetResultSetMetadataResp, lambda res, _: res.metadata())

    def FetchResults(self, req):
        return self._op(req.operationHandle, T.TFetchResultsResp, lambda res, _: res.fetch(req.maxRows))

    def CancelOperation(self, req):
        def cancel(_, record):
            record["cancelled"] = True
            return T.TCancelOperationResp(status=OK)
        return self._op(req.operationHandle, T.TCancelOperationResp, cancel)

    def CloseOperation(self, req):
        def close(_, record):
            record["closed"] = True
            return T.TCloseOperationResp(status=OK)
        return self._op(req.operationHandle, T.TCloseOperationResp, close)


PROCESSOR = TCLIService.Processor(Handler())


class HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # with unbuffered writes, Nagle costs each reply ~40 ms
    wbufsize = 1 << 16              # headers and body leave in one write (flushed per request)
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("dbsql_fake: " + (fmt % args) + "\n")

    def reply(self, code, body=b"", ctype="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body, indent=1).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def staged_path(self):
        """The volume path of /fake/staged/<path>, and the status asked for in ?status=."""
        url = urllib.parse.urlsplit(self.path)
        status = urllib.parse.parse_qs(url.query).get("status")
        return urllib.parse.unquote(url.path[len("/fake/staged"):]), int(status[0]) if status else None

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        with FAKE.lock:
            if path == "/fake/health":
                return self.reply(200, {"ok": True})
            if path == "/fake/statements":
                return self.reply(200, FAKE.statements)
            if path == "/fake/sessions":
                return self.reply(200, list(FAKE.sessions.values()))
            if path in ("/fake/staged", "/fake/staged/"):
                return self.reply(200, {p: len(b) for p, b in FAKE.staged.items()})
            if path.startswith("/fake/staged/"):
                name, status = self.staged_path()
                if status:
                    return self.reply(status, b"fake: scripted failure", "text/plain")
                if name not in FAKE.staged:
                    return self.reply(404, b"fake: no such staged file", "text/plain")
                return self.reply(200, FAKE.staged[name], "application/octet-stream")
        self.reply(404, {"error": "not found"})

    def do_PUT(self):
        if not self.path.startswith("/fake/staged/"):
            return self.reply(404, {"error": "not found"})
        data = self.body()
        name, status = self.staged_path()
        if status:
            return self.reply(status, b"fake: scripted failure", "text/plain")
        with FAKE.lock:
            FAKE.staged[name] = data
        self.reply(200)

    def do_DELETE(self):
        if not self.path.startswith("/fake/staged/"):
            return self.reply(404, {"error": "not found"})
        name, status = self.staged_path()
        if status:
            return self.reply(status, b"fake: scripted failure", "text/plain")
        with FAKE.lock:
            found = FAKE.staged.pop(name, None) is not None
        self.reply(204 if found else 404)

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        data = self.body()
        if path == "/fake/reset":
            with FAKE.lock:
                FAKE.reset()
            return self.reply(200, {"ok": True})
        if path == "/fake/rules":
            try:
                rules = json.loads(data)
                rules = rules if isinstance(rules, list) else [rules]
                for rule in rules:
                    validate_rule(rule)
            except (ValueError, KeyError, TypeError, AttributeError, re.error) as e:
                return self.reply(400, {"error": str(e)})
            with FAKE.lock:
                FAKE.rules.extend(rules)
                return self.reply(200, {"rules": len(FAKE.rules)})
        if path.startswith("/fake/"):
            return self.reply(404, {"error": "not found"})
        # Everything else is a Thrift call.
        REQUEST.auth = bool(self.headers.get("Authorization"))
        out = TTransport.TMemoryBuffer()
        PROCESSOR.process(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(data)),
                          TBinaryProtocol.TBinaryProtocol(out))
        self.reply(200, out.getvalue(), "application/x-thrift")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--verbose", action="store_true", help="log each request line to stderr")
    args = ap.parse_args()
    HTTPHandler.verbose = args.verbose
    server = ThreadingHTTPServer(("127.0.0.1", args.port), HTTPHandler)
    server.daemon_threads = True
    FAKE.base_url = f"http://127.0.0.1:{server.server_port}"

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"dbsql_fake ready on {FAKE.base_url}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
