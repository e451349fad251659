package kafkaclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		wants []string // empty: valid
	}{
		{"defaults", Defaults("sink"), nil},
		{"no brokers", Config{}, []string{"k.brokers: must list at least one broker"}},
		{"bad broker", Config{Brokers: []string{"host", "h:"}}, []string{`broker "host" is not host:port`, `broker "h:" is not host:port`}},
		{"tls files without tls", Config{Brokers: []string{"h:1"}, TLS: TLSConfig{CAFile: "ca.pem", CertFile: "c.pem"}},
			[]string{"k.tls: cert_file and key_file must be set together", "k.tls.enabled: must be true"}},
		{"credentials without mechanism", Config{Brokers: []string{"h:1"}, SASL: SASL{Username: "u"}}, []string{"k.sasl.mechanism: must be set"}},
		{"unknown mechanism", Config{Brokers: []string{"h:1"}, SASL: SASL{Mechanism: "OAUTHBEARER"}}, []string{`"OAUTHBEARER" is not one of`}},
		{"scram without user or password", Config{Brokers: []string{"h:1"}, SASL: SASL{Mechanism: "SCRAM-SHA-512"}},
			[]string{"k.sasl.username: must be set", "k.sasl.password: set exactly one"}},
		{"password twice", Config{Brokers: []string{"h:1"}, SASL: SASL{Mechanism: "PLAIN", Username: "u", Password: config.NewSecret("p"), PasswordFile: "/f"}},
			[]string{"k.sasl.password: set exactly one"}},
		{"plain ok", Config{Brokers: []string{"h:1"}, SASL: SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: "/f"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p config.Problems
			tt.cfg.Check(&p, "k")
			err := p.Err()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("unexpected problems: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no problems reported")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and returns its PEM path and
// the server's TLS config.
func selfSigned(t *testing.T) (string, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// TestOptsConnectOverTLSAndSASL runs a kfake cluster that requires TLS and SCRAM-SHA-512 and checks
// that the options built from config authenticate with the right password and fail with a wrong
// one or without the CA.
func TestOptsConnectOverTLSAndSASL(t *testing.T) {
	caPath, serverTLS := selfSigned(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "ddb", "right-password"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("right-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Config{Brokers: cluster.ListenAddrs(), ClientID: "test",
		TLS:  TLSConfig{Enabled: true, CAFile: caPath},
		SASL: SASL{Mechanism: "SCRAM-SHA-512", Username: "ddb", PasswordFile: pwFile}}

	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"password from file", func(*Config) {}, true},
		{"password from env secret", func(c *Config) { c.SASL.PasswordFile = ""; c.SASL.Password = config.NewSecret("right-password") }, true},
		{"wrong password", func(c *Config) { c.SASL.PasswordFile = ""; c.SASL.Password = config.NewSecret("wrong") }, false},
		{"untrusted server certificate", func(c *Config) { c.TLS.CAFile = "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			opts, err := cfg.Opts()
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(append(opts, kgo.RetryTimeout(time.Second), kgo.RequestRetries(0))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = Ready(cl)(ctx)
			if (err == nil) != tt.ok {
				t.Fatalf("ping: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestOptsReportsUnreadableFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ca", Config{Brokers: []string{"h:1"}, TLS: TLSConfig{Enabled: true, CAFile: missing}}, "kafka.tls.ca_file"},
		{"client cert", Config{Brokers: []string{"h:1"}, TLS: TLSConfig{Enabled: true, CertFile: missing, KeyFile: missing}}, "kafka.tls client certificate"},
		{"password", Config{Brokers: []string{"h:1"}, SASL: SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: missing}}, "kafka.sasl.password_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.Opts()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}
