// Package testenv starts the real services tests run against (MinIO on a
// loopback port). The binaries are installed by `make test-deps` into .bin/.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// MinIO is a running MinIO server owned by a test binary.
type MinIO struct {
	Endpoint  string // http://127.0.0.1:PORT
	Addr      string // 127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	Dir       string

	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// RepoRoot finds the module root by walking up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Binary returns the path of a tool installed into .bin/ by `make test-deps`
// (WATCHFOLDER_BIN_DIR overrides the directory).
func Binary(name string) (string, error) {
	dir := os.Getenv("WATCHFOLDER_BIN_DIR")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, ".bin")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not installed at %s: run `make test-deps` (make test does it)", name, p)
	}
	return p, nil
}

// FreeAddr returns a loopback address with a port that was free just now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartMinIO starts a MinIO server in a fresh temporary directory and waits
// until it is live. Call Stop when done (StartMinIOT does it via Cleanup).
func StartMinIO() (*MinIO, error) {
	bin, err := Binary("minio")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "wf-minio-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	// A port can be taken between FreeAddr and MinIO's bind: try a few.
	for range 3 {
		m, err := startAt(bin, dir)
		if err == nil {
			return m, nil
		}
		lastErr = err
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func startAt(bin, dir string) (*MinIO, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	m := &MinIO{
		Endpoint: "http://" + addr, Addr: addr,
		AccessKey: "wftestaccess", SecretKey: "wftestsecret-0123456789",
		Region: "us-east-1", Dir: dir, done: make(chan struct{}),
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	m.cmd = exec.Command(bin, "server", data, "--address", addr, "--quiet")
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CONFIG_DIR="+filepath.Join(dir, "config"))
	logf, err := os.Create(filepath.Join(dir, "minio.log"))
	if err != nil {
		return nil, err
	}
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start minio: %w", err)
	}
	go func() { m.cmd.Wait(); logf.Close(); close(m.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			out, _ := os.ReadFile(filepath.Join(dir, "minio.log"))
			return nil, fmt.Errorf("minio exited early: %s", strings.TrimSpace(string(out)))
		default:
		}
		resp, err := http.Get(m.Endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.Stop()
	return nil, errors.New("minio did not become live within 60s")
}

// Stop kills the server and removes its data.
func (m *MinIO) Stop() {
	m.once.Do(func() {
		if m.cmd != nil && m.cmd.Process != nil {
			m.cmd.Process.Kill()
			<-m.done
		}
		os.RemoveAll(m.Dir)
	})
}

// StartMinIOT starts MinIO for one test and stops it at cleanup.
func StartMinIOT(tb testing.TB) *MinIO {
	tb.Helper()
	m, err := StartMinIO()
	if err != nil {
		tb.Fatalf("minio: %v", err)
	}
	tb.Cleanup(m.Stop)
	return m
}

// Client returns an S3 client for the server with root credentials.
func (m *MinIO) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:                     m.Region,
		BaseEndpoint:               aws.String(m.Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// MakeBucket creates a bucket (names need at least 3 characters).
func (m *MinIO) MakeBucket(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		tb.Fatalf("create bucket %s: %v", name, err)
	}
}

// GetObject returns an object's bytes.
func (m *MinIO) GetObject(tb testing.TB, bucket, key string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := m.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		tb.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	var b strings.Builder
	buf := make([]byte, 1<<20)
	for {
		n, err := out.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return []byte(b.String())
}

// ListKeys lists every key in a bucket.
func (m *MinIO) ListKeys(tb testing.TB, bucket string) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var keys []string
	p := s3.NewListObjectsV2Paginator(m.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			tb.Fatalf("list s3://%s: %v", bucket, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// RunWithMinIO is a TestMain body for packages whose tests share one MinIO:
// it starts the server, stores it in *dst, runs the tests, stops it and
// exits with the tests' code.
func RunWithMinIO(m *testing.M, dst **MinIO) {
	s, err := StartMinIO()
	if err != nil {
		fmt.Fprintln(os.Stderr, "minio:", err)
		os.Exit(1)
	}
	*dst = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}
