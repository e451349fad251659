package hs2

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
)

func message(t *testing.T, name string, typ thrift.TMessageType, body func(ctx context.Context, p thrift.TProtocol)) []byte {
	t.Helper()
	ctx := context.Background()
	buf := thrift.NewTMemoryBuffer()
	p := thrift.NewTBinaryProtocolConf(buf, &thrift.TConfiguration{})
	if err := p.WriteMessageBegin(ctx, name, typ, 7); err != nil {
		t.Fatal(err)
	}
	body(ctx, p)
	_ = p.WriteMessageEnd(ctx)
	_ = p.Flush(ctx)
	return buf.Bytes()
}

// openSession writes OpenSession_args{req: TOpenSessionReq{[client_protocol], configuration, client_protocol_i64}}.
func openSession(t *testing.T, withI32 bool) []byte {
	return message(t, "OpenSession", thrift.CALL, func(ctx context.Context, p thrift.TProtocol) {
		_ = p.WriteStructBegin(ctx, "args")
		_ = p.WriteFieldBegin(ctx, "req", thrift.STRUCT, 1)
		_ = p.WriteStructBegin(ctx, "TOpenSessionReq")
		if withI32 {
			_ = p.WriteFieldBegin(ctx, "client_protocol", thrift.I32, 1)
			_ = p.WriteI32(ctx, 0)
		}
		_ = p.WriteFieldBegin(ctx, "configuration", thrift.MAP, 4)
		_ = p.WriteMapBegin(ctx, thrift.STRING, thrift.STRING, 1)
		_ = p.WriteString(ctx, "timezone")
		_ = p.WriteString(ctx, "UTC")
		_ = p.WriteFieldBegin(ctx, "client_protocol_i64", thrift.I64, 1282)
		_ = p.WriteI64(ctx, 42248)
		_ = p.WriteFieldStop(ctx)
		_ = p.WriteFieldStop(ctx)
	})
}

func readClientProtocol(t *testing.T, b []byte) int32 {
	_, args, err := callHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := field(b, args, 1, tStruct)
	if err != nil || req < 0 {
		t.Fatal("no req", err)
	}
	v, _, err := field(b, req, 1, tI32)
	if err != nil || v < 0 {
		t.Fatal("no client_protocol", err)
	}
	return int32(binary.BigEndian.Uint32(b[v:]))
}

func TestSetClientProtocol(t *testing.T) {
	for _, with := range []bool{true, false} {
		b := openSession(t, with)
		_, args, _ := callHeader(b)
		out, err := setClientProtocol(b, args, HiveProtocolV10)
		if err != nil {
			t.Fatal(err)
		}
		if got := readClientProtocol(t, out); got != HiveProtocolV10 {
			t.Fatalf("with=%v: client_protocol %d", with, got)
		}
		if _, err := skip(out, args, tStruct, 0); err != nil {
			t.Fatalf("with=%v: result does not parse: %v", with, err)
		}
	}
}

func TestCopyErrorMessage(t *testing.T) {
	msg := "org.apache.hive.service.cli.HiveSQLException: Error running query: [PARSE_SYNTAX_ERROR] boom\n\tat a.b.C(D.java:1)\n\tat e.f.G(H.java:2)"
	b := message(t, "GetOperationStatus", thrift.REPLY, func(ctx context.Context, p thrift.TProtocol) {
		_ = p.WriteStructBegin(ctx, "result")
		_ = p.WriteFieldBegin(ctx, "success", thrift.STRUCT, 0)
		_ = p.WriteStructBegin(ctx, "TGetOperationStatusResp")
		_ = p.WriteFieldBegin(ctx, "status", thrift.STRUCT, 1)
		_ = p.WriteFieldBegin(ctx, "statusCode", thrift.I32, 1)
		_ = p.WriteI32(ctx, 0)
		_ = p.WriteFieldStop(ctx)
		_ = p.WriteFieldBegin(ctx, "operationState", thrift.I32, 2)
		_ = p.WriteI32(ctx, 5)
		_ = p.WriteFieldBegin(ctx, "sqlState", thrift.STRING, 3)
		_ = p.WriteString(ctx, "42601")
		_ = p.WriteFieldBegin(ctx, "errorMessage", thrift.STRING, 5)
		_ = p.WriteString(ctx, msg)
		_ = p.WriteFieldStop(ctx)
		_ = p.WriteFieldStop(ctx)
	})
	out, err := copyErrorMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	_, res, _ := callHeader(out)
	resp, _, _ := field(out, res, 0, tStruct)
	dm, _, err := field(out, resp, 1281, tString)
	if err != nil || dm < 0 {
		t.Fatal("no displayMessage", err)
	}
	n := int(binary.BigEndian.Uint32(out[dm:]))
	got := string(out[dm+4 : dm+4+n])
	if want := msg[:strings.Index(msg, "\n\tat ")]; got != want {
		t.Fatalf("displayMessage %q, want %q", got, want)
	}
	if _, err := copyErrorMessage(out); err == nil {
		t.Fatal("second copy should be refused (displayMessage present)")
	}
}
