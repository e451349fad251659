// Package hs2 adapts github.com/databricks/databricks-sql-go (v1.14.0) to Apache Spark's
// HiveThriftServer2 in HTTP transport mode: the sink's spark dialect (an open-source Spark SQL
// server with Delta Lake; the tests' warehouse). It is an http.RoundTripper passed with
// dbsql.WithTransport; the driver wraps it with its own authenticating transport and retrying
// client. A Databricks warehouse needs none of it.
//
// What it does, per HTTP request:
//   - OpenSession: the driver announces its protocol only in TOpenSessionReq.client_protocol_i64
//     (field 1282, a Databricks extension) and leaves the standard i32 client_protocol (field 1) at
//     the Go zero value 0 = HIVE_CLI_SERVICE_PROTOCOL_V1. Spark reads field 1 only and answers a
//     V1 client with row-based TRowSets, which the driver cannot read (it sees zero rows). We
//     rewrite field 1 to HIVE_CLI_SERVICE_PROTOCOL_V10 (9) so that Spark answers column-based.
//   - GetOperationStatus replies: Spark reports a failed statement in errorMessage (field 5); the
//     driver builds its error text from displayMessage (field 1281, a Databricks extension) only.
//     We copy errorMessage into displayMessage when the latter is absent.
//   - Authorization: HiveServer2's HTTP servlet wants "Basic base64(user:password)" even with
//     hive.server2.authentication=NONE; we set it (replacing whatever the driver's authenticator set).
//   - The driver's telemetry feature-flag lookup (GET /api/2.0/connector-service/feature-flags/...,
//     sent to https://<host>:443) is answered locally with "no flags" (= telemetry off).
package hs2

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// HiveProtocolV10 is TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V10. Spark 3.5's server (hive-service-rpc
// 3.1.3, newest V11) answers min(client, V11); anything >= V6 (5) gets column-based results.
const HiveProtocolV10 int32 = 9

type Transport struct {
	Base           http.RoundTripper // nil: http.DefaultTransport
	ClientProtocol int32             // announced in TOpenSessionReq.client_protocol; 0: HiveProtocolV10; <0: leave the request alone
	NoErrorCopy    bool              // leave GetOperationStatus replies alone (for comparison)
	User, Password string            // Basic credentials for HiveServer2 HTTP mode; "": "ddb2delta" and "unused"
}

const featureFlagPath = "/api/2.0/connector-service/feature-flags/"

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, featureFlagPath) || strings.HasSuffix(req.URL.Path, "/telemetry-ext") {
		if req.Body != nil {
			req.Body.Close()
		}
		return synthetic(req, http.StatusOK, `{"flags":[],"ttl_seconds":86400}`), nil
	}
	if req.Method != http.MethodPost || req.Body == nil {
		return t.base().RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	name, args, err := callHeader(body)
	if err != nil {
		return nil, fmt.Errorf("hs2compat: not a Thrift binary call: %w", err)
	}
	if name == "OpenSession" && t.ClientProtocol >= 0 {
		v := t.ClientProtocol
		if v == 0 {
			v = HiveProtocolV10
		}
		if body, err = setClientProtocol(body, args, v); err != nil {
			return nil, fmt.Errorf("hs2compat: OpenSession: %w", err)
		}
	}
	r2 := req.Clone(req.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	user := t.User
	if user == "" {
		user = "ddb2delta"
	}
	pass := t.Password
	if pass == "" { // HiveServer2 splits "user:password" and fails on an empty password (even with NONE auth)
		pass = "unused"
	}
	r2.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	resp, err := t.base().RoundTrip(r2)
	if err != nil || name != "GetOperationStatus" || t.NoErrorCopy || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	reply, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if patched, perr := copyErrorMessage(reply); perr == nil {
		reply = patched
	} // else: hand the reply over untouched; the driver reports what it can
	resp.Body = io.NopCloser(bytes.NewReader(reply))
	resp.ContentLength = int64(len(reply))
	resp.Header.Set("Content-Length", strconv.Itoa(len(reply)))
	return resp, nil
}

func synthetic(req *http.Request, code int, body string) *http.Response {
	return &http.Response{
		Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), StatusCode: code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}
}

// --- minimal Thrift binary protocol walking ---

const (
	tStop   = 0
	tBool   = 2
	tByte   = 3
	tDouble = 4
	tI16    = 6
	tI32    = 8
	tI64    = 10
	tString = 11
	tStruct = 12
	tMap    = 13
	tSet    = 14
	tList   = 15
	tUUID   = 16
)

var errShort = errors.New("truncated Thrift message")

// callHeader parses a strict binary message header; it returns the method name and the offset of
// the argument (or result) struct.
func callHeader(b []byte) (string, int, error) {
	if len(b) < 8 {
		return "", 0, errShort
	}
	if v := binary.BigEndian.Uint32(b); v&0xffff0000 != 0x80010000 {
		return "", 0, fmt.Errorf("no strict binary protocol header (0x%08x)", v)
	}
	n := int(int32(binary.BigEndian.Uint32(b[4:])))
	if n < 0 || 8+n+4 > len(b) {
		return "", 0, errShort
	}
	return string(b[8 : 8+n]), 8 + n + 4, nil
}

// skip returns the offset just past a value of type typ starting at off.
func skip(b []byte, off int, typ byte, depth int) (int, error) {
	if depth > 64 {
		return 0, errors.New("nesting too deep")
	}
	need := func(n int) error {
		if n < 0 || off+n > len(b) {
			return errShort
		}
		return nil
	}
	switch typ {
	case tBool, tByte:
		return off + 1, need(1)
	case tI16:
		return off + 2, need(2)
	case tI32:
		return off + 4, need(4)
	case tDouble, tI64:
		return off + 8, need(8)
	case tUUID:
		return off + 16, need(16)
	case tString:
		if err := need(4); err != nil {
			return 0, err
		}
		n := int(int32(binary.BigEndian.Uint32(b[off:])))
		return off + 4 + n, need(4 + n)
	case tStruct:
		for {
			if err := need(1); err != nil {
				return 0, err
			}
			ft := b[off]
			if ft == tStop {
				return off + 1, nil
			}
			if err := need(3); err != nil {
				return 0, err
			}
			var err error
			if off, err = skip(b, off+3, ft, depth+1); err != nil {
				return 0, err
			}
		}
	case tMap:
		if err := need(6); err != nil {
			return 0, err
		}
		kt, vt, n := b[off], b[off+1], int(int32(binary.BigEndian.Uint32(b[off+2:])))
		off += 6
		for i := 0; i < n; i++ {
			var err error
			if off, err = skip(b, off, kt, depth+1); err != nil {
				return 0, err
			}
			if off, err = skip(b, off, vt, depth+1); err != nil {
				return 0, err
			}
		}
		return off, nil
	case tSet, tList:
		if err := need(5); err != nil {
			return 0, err
		}
		et, n := b[off], int(int32(binary.BigEndian.Uint32(b[off+1:])))
		off += 5
		for i := 0; i < n; i++ {
			var err error
			if off, err = skip(b, off, et, depth+1); err != nil {
				return 0, err
			}
		}
		return off, nil
	}
	return 0, fmt.Errorf("unknown Thrift type %d", typ)
}

// field finds field id (of type typ) in the struct at off; it returns the offset of its value, or
// -1 and the offset of the struct's STOP byte.
func field(b []byte, off int, id int16, typ byte) (val, stop int, err error) {
	for {
		if off >= len(b) {
			return 0, 0, errShort
		}
		ft := b[off]
		if ft == tStop {
			return -1, off, nil
		}
		if off+3 > len(b) {
			return 0, 0, errShort
		}
		fid := int16(binary.BigEndian.Uint16(b[off+1:]))
		if fid == id && ft == typ {
			return off + 3, 0, nil
		}
		if off, err = skip(b, off+3, ft, 1); err != nil {
			return 0, 0, err
		}
	}
}

func insert(b []byte, at int, ins []byte) []byte {
	out := make([]byte, 0, len(b)+len(ins))
	out = append(out, b[:at]...)
	out = append(out, ins...)
	return append(out, b[at:]...)
}

// setClientProtocol sets TOpenSessionReq.client_protocol (i32 field 1) of OpenSession_args.req
// (struct field 1).
func setClientProtocol(b []byte, args int, v int32) ([]byte, error) {
	req, _, err := field(b, args, 1, tStruct)
	if err != nil {
		return nil, err
	}
	if req < 0 {
		return nil, errors.New("no req struct in OpenSession args")
	}
	val, _, err := field(b, req, 1, tI32)
	if err != nil {
		return nil, err
	}
	if val >= 0 {
		binary.BigEndian.PutUint32(b[val:], uint32(v))
		return b, nil
	}
	ins := []byte{tI32, 0, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(ins[3:], uint32(v))
	return insert(b, req, ins), nil
}

// copyErrorMessage copies TGetOperationStatusResp.errorMessage (field 5) into displayMessage
// (field 1281) in a GetOperationStatus reply, when the reply has the one and not the other.
func copyErrorMessage(b []byte) ([]byte, error) {
	_, res, err := callHeader(b)
	if err != nil {
		return nil, err
	}
	resp, _, err := field(b, res, 0, tStruct) // GetOperationStatus_result.success
	if err != nil || resp < 0 {
		return nil, fmt.Errorf("no success struct: %v", err)
	}
	msg, _, err := field(b, resp, 5, tString)
	if err != nil || msg < 0 {
		return nil, fmt.Errorf("no errorMessage: %v", err)
	}
	dm, stop, err := field(b, resp, 1281, tString)
	if err != nil || dm >= 0 {
		return nil, fmt.Errorf("displayMessage present: %v", err)
	}
	end, err := skip(b, msg, tString, 0)
	if err != nil {
		return nil, err
	}
	text := b[msg+4 : end]
	if i := bytes.Index(text, []byte("\n\tat ")); i >= 0 { // Spark appends the Java stack trace
		text = text[:i]
	}
	ins := []byte{tString, 0x05, 0x01, 0, 0, 0, 0} // field 1281 = 0x0501
	binary.BigEndian.PutUint32(ins[3:], uint32(len(text)))
	ins = append(ins, text...)
	return insert(b, stop, ins), nil
}
