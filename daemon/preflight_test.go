package daemon

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/watchfolder/watchfolder/config"
)

func TestClassifyProbeAnswers(t *testing.T) {
	api := func(code string) error { return &smithy.GenericAPIError{Code: code, Message: "m"} }
	tests := []struct {
		name    string
		err     error
		problem bool
		fatal   bool
		want    string
	}{
		{"object absent: all good", api("NoSuchKey"), false, false, ""},
		{"read not allowed: delivery may still work", api("AccessDenied"), false, false, ""},
		{"bad key id", api("InvalidAccessKeyId"), true, true, "refuses the credentials"},
		{"bad secret", api("SignatureDoesNotMatch"), true, true, "refuses the credentials"},
		{"wrong region", api("AuthorizationHeaderMalformed"), true, true, "another region"},
		{"no bucket yet", api("NoSuchBucket"), true, false, "does not exist"},
		{"no credentials at all", errors.New("failed to retrieve credentials: no EC2 IMDS role found"), true, true, "no credentials found"},
		{"network", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), true, false, "could not be checked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, done := classify("destination d", "bkt", tc.err)
			if done != tc.problem || len(p) != map[bool]int{true: 1, false: 0}[tc.problem] {
				t.Fatalf("classify = %v, %v", p, done)
			}
			if tc.problem && (p[0].Fatal != tc.fatal || !strings.Contains(p[0].Message, tc.want)) {
				t.Errorf("problem %+v, want fatal=%v and %q", p[0], tc.fatal, tc.want)
			}
		})
	}
}

func TestCheckFolders(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	private := filepath.Join(dir, "private")
	os.Mkdir(private, 0o755)
	os.Chmod(private, 0o755)
	shared := filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o775)
	os.Chmod(shared, 0o775|fs.ModeSetgid)
	cfg := &config.Config{Folders: []config.Folder{
		{Name: "missing", Path: filepath.Join(dir, "typo")},
		{Name: "file", Path: file},
		{Name: "private", Path: private},
		{Name: "shared", Path: shared},
	}}
	// A service user in the folders' group (root's group 0 here) but not
	// their owner: it may write group-writable folders only.
	u := &ServiceUser{Name: "svc", UID: 4242, GIDs: []uint32{0}}
	got := map[string]string{}
	for _, p := range CheckFolders(cfg, u) {
		if !p.Fatal || p.Class != ClassFolder {
			t.Errorf("%+v: want a fatal folder problem", p)
		}
		got[p.Subject] = p.Message
	}
	want := map[string]string{"folder missing": "does not exist", "folder file": "not a directory", "folder private": "cannot write"}
	for subj, msg := range want {
		if !strings.Contains(got[subj], msg) {
			t.Errorf("%s: %q, want %q", subj, got[subj], msg)
		}
	}
	if m, ok := got["folder shared"]; ok {
		t.Errorf("shared folder reported: %s", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "typo")); err == nil {
		t.Error("the check created the missing folder")
	}
}
