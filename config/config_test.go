package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration; error cases extend it.
const minimal = `
[[folder]]
name = "news"
path = "/srv/news"
destinations = ["archive"]

[destination.archive]
type = "s3"
bucket = "media"
`

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), "test.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// keyErrors returns the KeyErrors inside err, failing the test if err is
// not an *Error.
func keyErrors(t *testing.T, err error) []*KeyError {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *config.Error, got %T %v", err, err)
	}
	var out []*KeyError
	for _, p := range e.Problems {
		var ke *KeyError
		if errors.As(p, &ke) {
			out = append(out, ke)
		}
	}
	return out
}

func TestParseErrors(t *testing.T) {
	folder2 := func(extra string) string {
		return minimal + "\n[[folder]]\nname = \"sport\"\npath = \"/srv/sport\"\ndestinations = [\"archive\"]\n" + extra
	}
	dest := func(extra string) string {
		return minimal + extra
	}
	jw := `
[destination.jw]
type = "jwplayer"
site_id = "abcd1234"
api_secret = "s"
`
	tests := []struct {
		name, src, key, msg string
	}{
		{"unknown top-level key", "stat_dir = \"/x\"\n" + minimal, "stat_dir", "unknown key (did you mean state_dir?)"},
		{"unknown table", "[looging]\nlevel = \"info\"\n" + minimal, "looging", "unknown key"},
		{"unknown folder key", folder2("stabel_after = \"5s\"\n"), "folder[1].stabel_after", "unknown key (did you mean stable_after?)"},
		{"unknown destination key", dest("bukket = \"x\"\n"), "destination.archive.bukket", "unknown key (did you mean bucket?)"},
		{"key of the wrong type", minimal + jw + "bucket = \"b\"\n", "destination.jw.bucket", "not a key of type jwplayer"},
		{"key not for bluebillywig", minimal + "[destination.bb]\ntype = \"bluebillywig\"\npublication = \"pub\"\naccount = \"1\"\napi_key_id = \"2\"\napi_secret = \"s\"\nkey = \"{name}\"\n", "destination.bb.key", "not a key of type bluebillywig"},
		{"bad duration", folder2("stable_after = \"5 secs\"\n"), "folder[1].stable_after", `invalid duration "5 secs"`},
		{"duration as integer", folder2("stable_after = 5\n"), "folder[1].stable_after", "want a duration string"},
		{"negative duration", folder2("stable_after = \"-1s\"\n"), "folder[1].stable_after", "negative"},
		{"rescan too short", folder2("rescan_interval = \"10ms\"\n"), "folder[1].rescan_interval", "below the minimum 1s"},
		{"bad size", "[upload]\npart_size = \"16 parsecs\"\n" + minimal, "upload.part_size", "unknown unit"},
		{"part_size too small", "[upload]\npart_size = \"1MiB\"\n" + minimal, "upload.part_size", "1MiB is out of range 5MiB..5GiB"},
		{"part_size too big", "[upload]\npart_size = \"6GiB\"\n" + minimal, "upload.part_size", "out of range"},
		{"concurrency out of range", "[upload]\nconcurrency = 0\n" + minimal, "upload.concurrency", "out of range 1..64"},
		{"bad bandwidth", "[upload]\nmax_bandwidth = \"50MiB\"\n" + minimal, "upload.max_bandwidth", "size per second"},
		{"max_backoff below initial", "[retry]\ninitial_backoff = \"1m\"\nmax_backoff = \"10s\"\n" + minimal, "retry.max_backoff", "below initial_backoff"},
		{"zero initial_backoff", "[retry]\ninitial_backoff = \"0s\"\n" + minimal, "retry.initial_backoff", "greater than zero"},
		{"bad log level", "[log]\nlevel = \"verbose\"\n" + minimal, "log.level", `"verbose" is not one of`},
		{"bad metrics listen", "[metrics]\nlisten = \"9090\"\n" + minimal, "metrics.listen", "not host:port"},
		{"notify without url", minimal + "[[notify]]\ntimeout = \"5s\"\n", "notify[0].url", "required"},
		{"notify bad url", minimal + "[[notify]]\nurl = \"ftp://x\"\n", "notify[0].url", "http:// or https://"},
		{"notify bad event", minimal + "[[notify]]\nurl = \"https://x\"\nevents = [\"started\"]\n", "notify[0].events", `"started"`},
		{"missing bucket", "[[folder]]\nname = \"n\"\npath = \"/srv/n\"\ndestinations = [\"a\"]\n[destination.a]\ntype = \"s3\"\n", "destination.a.bucket", "required"},
		{"missing type", minimal + "[destination.x]\nbucket = \"b\"\n", "destination.x.type", "required"},
		{"bad type", minimal + "[destination.x]\ntype = \"ftp\"\n", "destination.x.type", `"ftp" is not one of`},
		{"bad destination name", minimal + "[destination.\"a b\"]\ntype = \"s3\"\nbucket = \"bbb\"\n", "destination.a b", "must match"},
		{"unknown destination name", strings.Replace(minimal, `["archive"]`, `["archive", "nope"]`, 1), "folder[0].destinations", `"nope": no [destination.nope] is defined`},
		{"empty destinations", strings.Replace(minimal, `["archive"]`, `[]`, 1), "folder[0].destinations", "must not be empty"},
		{"missing destinations", strings.Replace(minimal, "destinations = [\"archive\"]\n", "", 1), "folder[0].destinations", "required"},
		{"no folder", "[destination.a]\ntype = \"s3\"\nbucket = \"bbb\"\n", "folder", "at least one"},
		{"folder is a table", "[folder]\nname = \"x\"\n", "folder", "want an array of tables"},
		{"duplicate folder name", strings.Replace(folder2(""), `"sport"`, `"news"`, 1), "folder[1].name", `"news" is also the name of folder[0]`},
		{"bad folder name", strings.Replace(minimal, `"news"`, `"news room"`, 1), "folder[0].name", "must match"},
		{"missing path", strings.Replace(minimal, "path = \"/srv/news\"\n", "", 1), "folder[0].path", "required"},
		{"relative path", strings.Replace(minimal, `"/srv/news"`, `"srv/news"`, 1), "folder[0].path", "not an absolute path"},
		{"overlapping folders", strings.Replace(folder2(""), `"/srv/sport"`, `"/srv/news/sport"`, 1), "folder[1].path", `folder "sport" (/srv/news/sport) is inside folder "news" (/srv/news)`},
		{"folder containing another", strings.Replace(folder2(""), `"/srv/sport"`, `"/srv"`, 1), "folder[1].path", `contains folder "news"`},
		{"same path", strings.Replace(folder2(""), `"/srv/sport"`, `"/srv/news/"`, 1), "folder[1].path", `folder "sport" and folder "news" both watch /srv/news`},
		{"processed_dir == path", folder2("processed_dir = \"/srv/sport\"\n"), "folder[1].processed_dir", "must differ from path"},
		{"failed_dir == path", folder2("failed_dir = \"/srv/sport/\"\n"), "folder[1].failed_dir", "must differ from path"},
		{"failed_dir == processed_dir", folder2("processed_dir = \"/srv/out\"\nfailed_dir = \"/srv/out\"\n"), "folder[1].failed_dir", "must differ from processed_dir"},
		{"processed_dir inside other folder", folder2("processed_dir = \"/srv/news/done\"\n"), "folder[1].processed_dir", `inside folder "news"`},
		{"relative failed_dir", folder2("failed_dir = \"failed\"\n"), "folder[1].failed_dir", "not an absolute path"},
		{"state_dir inside folder", "state_dir = \"/srv/news/.state\"\n" + minimal, "state_dir", `inside folder "news"`},
		{"bad glob", folder2("include = [\"[a-\"]\n"), "folder[1].include", "syntax error in pattern"},
		{"absolute glob", folder2("exclude = [\"/sub/*.mp4\"]\n"), "folder[1].exclude", "relative to the folder"},
		{"bad brace glob", folder2("include = [\"*.{mov,mxf\"]\n"), "folder[1].include", "syntax error in pattern"},
		{"bad sidecar", folder2("sidecar = \"maybe\"\n"), "folder[1].sidecar", "not one of"},
		{"bad probe", folder2("probe = \"sometimes\"\n"), "folder[1].probe", "not one of"},
		{"bad ACL", dest("acl = \"public\"\n"), "destination.archive.acl", `"public" is not one of`},
		{"bad storage class", dest("storage_class = \"COLD\"\n"), "destination.archive.storage_class", `"COLD" is not one of`},
		{"template with ..", dest("key = \"{folder}/../{name}\"\n"), "destination.archive.key", `".." segment`},
		{"absolute template", dest("key = \"/{folder}/{name}\"\n"), "destination.archive.key", "absolute"},
		{"unknown placeholder", dest("key = \"{folder}/{title}\"\n"), "destination.archive.key", "unknown placeholder {title}"},
		{"bad endpoint", dest("endpoint = \"ftp://minio:9000\"\n"), "destination.archive.endpoint", "http:// or https://"},
		{"bad bare endpoint", dest("endpoint = \"minio 9000\"\n"), "destination.archive.endpoint", "neither an http(s) URL nor a host[:port]"},
		{"secure against the scheme", dest("endpoint = \"http://minio:9000\"\nsecure = true\n"), "destination.archive.secure", "contradicts"},
		{"secure without endpoint", dest("secure = false\n"), "destination.archive.secure", "only used with a bare-host endpoint"},
		{"anonymous with keys", dest("anonymous = true\naccess_key_id = \"A\"\nsecret_access_key = \"B\"\n"), "destination.archive.anonymous", "unsigned"},
		{"endpoint with credentials", dest("endpoint = \"https://u:p@minio:9000\"\n"), "destination.archive.endpoint", "credentials"},
		{"bad path_style", dest("path_style = \"yes\"\n"), "destination.archive.path_style", "want true or false, got string"},
		{"access key without secret", dest("access_key_id = \"AKIA1\"\n"), "destination.archive.secret_access_key", "required when access_key_id is set"},
		{"secret without access key", dest("secret_access_key = \"s\"\n"), "destination.archive.access_key_id", "required when secret_access_key is set"},
		{"profile with static keys", dest("access_key_id = \"AKIA1\"\nsecret_access_key = \"s\"\nprofile = \"p\"\n"), "destination.archive.profile", "cannot be combined"},
		{"kms key without aws:kms", dest("sse = \"AES256\"\nsse_kms_key_id = \"k\"\n"), "destination.archive.sse_kms_key_id", "only used with sse"},
		{"bad checksum", dest("checksum = \"sha1\"\n"), "destination.archive.checksum", "not one of"},
		{"bad metadata name", dest("metadata = { \"a b\" = \"x\" }\n"), "destination.archive.metadata.a b", "header token"},
		{"metadata value not a string", dest("metadata = { a = 1 }\n"), "destination.archive.metadata.a", "want a string"},
		{"bad content type", dest("content_type = \"video\"\n"), "destination.archive.content_type", "not a media type"},
		{"env secret unset", dest("access_key_id = \"AKIA1\"\nsecret_access_key = \"${WF_TEST_SURELY_UNSET}\"\n"), "destination.archive.secret_access_key", "environment variable WF_TEST_SURELY_UNSET is not set"},
		{"file secret missing", dest("access_key_id = \"AKIA1\"\nsecret_access_key = \"file:/nonexistent/wf-secret\"\n"), "destination.archive.secret_access_key", "/nonexistent/wf-secret"},
		{"file secret path var unset", dest("access_key_id = \"AKIA1\"\nsecret_access_key = \"file:${WF_TEST_SURELY_UNSET}/x\"\n"), "destination.archive.secret_access_key", "WF_TEST_SURELY_UNSET is not set"},
		{"bb acl", minimal + "[destination.bb]\ntype = \"bluebillywig\"\npublication = \"pub\"\naccount = \"1\"\napi_key_id = \"2\"\napi_secret = \"s\"\nacl = \"private\"\n", "destination.bb.acl", `must be "public-read"`},
		{"bb publication", minimal + "[destination.bb]\ntype = \"bluebillywig\"\npublication = \"My Pub\"\naccount = \"1\"\napi_key_id = \"2\"\napi_secret = \"s\"\n", "destination.bb.publication", "DNS label"},
		{"bb secret missing", minimal + "[destination.bb]\ntype = \"bluebillywig\"\npublication = \"pub\"\naccount = \"1\"\napi_key_id = \"2\"\n", "destination.bb.api_secret", "required"},
		{"jw v2 without site_id", minimal + "[destination.jw]\ntype = \"jwplayer\"\napi_secret = \"s\"\n", "destination.jw.site_id", "required"},
		{"jw v1 without api_key", minimal + "[destination.jw]\ntype = \"jwplayer\"\napi = \"v1\"\napi_secret = \"s\"\n", "destination.jw.api_key", "required"},
		{"jw v1 with site_id", minimal + "[destination.jw]\ntype = \"jwplayer\"\napi = \"v1\"\napi_key = \"k\"\nsite_id = \"x\"\napi_secret = \"s\"\n", "destination.jw.site_id", "only used with api"},
		{"jw bad wait_for", minimal + jw + "wait_for = \"processed\"\n", "destination.jw.wait_for", "not one of"},
		{"jw bad api_url", minimal + jw + "api_url = \"api.jwplayer.com\"\n", "destination.jw.api_url", "http:// or https://"},
		{"jw zero poll", minimal + jw + "poll_interval = \"0s\"\n", "destination.jw.poll_interval", "greater than zero"},
		{"wistia token missing", minimal + "[destination.w]\ntype = \"wistia\"\nbucket = \"bbb\"\n", "destination.w.token", "required"},
		{"skylark api_url without token", minimal + "[destination.s]\ntype = \"skylark\"\nbucket = \"bbb\"\napi_url = \"https://api.skylark.test\"\n", "destination.s.token", "required when api_url is set"},
		{"skylark bad wait_for", minimal + "[destination.s]\ntype = \"skylark\"\nbucket = \"bbb\"\nwait_for = \"ready\"\n", "destination.s.wait_for", "not one of"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "test.toml")
			if err == nil {
				t.Fatalf("no error; want %s: %s", tc.key, tc.msg)
			}
			for _, ke := range keyErrors(t, err) {
				if ke.Key == tc.key && strings.Contains(ke.Msg, tc.msg) {
					if !strings.Contains(err.Error(), tc.key+": ") {
						t.Errorf("message %q does not name %s", err, tc.key)
					}
					return
				}
			}
			t.Errorf("want %s: ...%s...; got\n%v", tc.key, tc.msg, err)
		})
	}
}

func TestSyntaxErrorNamesLineAndColumn(t *testing.T) {
	_, err := Parse([]byte("state_dir = \"/x\"\n\n[log]\nlevel = = 1\n"), "bad.toml")
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("want *SyntaxError, got %T %v", err, err)
	}
	if se.Line != 4 || se.Col == 0 {
		t.Errorf("position = line %d col %d, want line 4 and a column", se.Line, se.Col)
	}
	if !strings.HasPrefix(err.Error(), "config bad.toml: line 4, column ") {
		t.Errorf("message = %q", err)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	src := `
state_dir = "relative"
bogus = 1

[upload]
part_size = "1KiB"

[[folder]]
name = "a"
path = "/srv/a"
destinations = ["missing"]
stable_after = "soon"

[[folder]]
name = "b"
path = "/srv/a/b"
destinations = ["x"]

[destination.x]
type = "s3"
acl = "nope"
`
	_, err := Parse([]byte(src), "/etc/x.toml")
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"state_dir", "upload.part_size", "destination.x.bucket", "destination.x.acl",
		"folder[0].stable_after", "folder[0].destinations", "folder[1].path", "bogus",
	}
	got := keyErrors(t, err)
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(got), len(want), err)
	}
	for _, k := range want {
		if !strings.Contains(err.Error(), "\n  "+k+": ") {
			t.Errorf("missing %s in\n%v", k, err)
		}
	}
	if !strings.HasPrefix(err.Error(), fmt.Sprintf("config /etc/x.toml: %d problems:\n  ", len(want))) {
		t.Errorf("header: %q", strings.SplitN(err.Error(), "\n", 2)[0])
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal+`
[destination.jw]
type = "jwplayer"
site_id = "abcd1234"
api_secret = "s"

[destination.jw1]
type = "jwplayer"
api = "v1"
api_key = "k"
api_secret = "s"

[destination.bb]
type = "bluebillywig"
publication = "pub"
account = "42"
api_key_id = "7"
api_secret = "s"

[destination.w]
type = "wistia"
bucket = "wis"
token = "t"

[destination.sky]
type = "skylark"
bucket = "sky"

[[notify]]
url = "https://hooks.test/x"
`)
	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	check("path", c.Path, "test.toml")
	check("state_dir", c.StateDir, "/var/lib/watchfolder")
	check("control_socket", c.ControlSocket, "/run/watchfolder/control.sock")
	check("shutdown_timeout", c.ShutdownTimeout, 30*time.Second)
	check("log", c.Log, Log{Level: "info", Format: "text"})
	check("retry", c.Retry, Retry{MaxAttempts: 8, InitialBackoff: 5 * time.Second, MaxBackoff: 10 * time.Minute})
	check("upload", c.Upload, Upload{PartSize: 16 * MiB, Concurrency: 32, MaxFiles: 16, MultipartThreshold: 16 * MiB})
	check("metrics", c.Metrics, Metrics{})
	check("folder", c.Folders, []Folder{{
		Name: "news", Path: "/srv/news", ProcessedDir: "/srv/news/processed", FailedDir: "/srv/news/failed",
		Destinations: []string{"archive"}, StableAfter: 5 * time.Second, RescanInterval: time.Minute,
		Sidecar: "optional", SidecarWait: 30 * time.Second, Probe: "require",
	}})
	check("notify", len(c.Notify), 1)
	n := c.Notify[0]
	check("notify.events", n.Events, []string{"done", "failed"})
	check("notify.timeout", n.Timeout, 10*time.Second)
	check("notify.secret set", n.Secret.IsSet(), false)

	val := func(dest, key string) any {
		t.Helper()
		v, ok := c.Destinations[dest].Value(key)
		if !ok {
			t.Errorf("destination %s has no key %s", dest, key)
		}
		return v
	}
	check("s3.bucket", val("archive", "bucket"), "media")
	check("s3.key", val("archive", "key"), "{folder}/{relpath}")
	// Empty: the SDK chain (AWS_REGION, profile) then the bucket's own
	// region decide, not a forced us-east-1.
	check("s3.region", val("archive", "region"), "")
	check("s3.checksum", val("archive", "checksum"), "crc32c")
	check("s3.anonymous", val("archive", "anonymous"), false)
	if _, ok := c.Destinations["archive"].Value("register_timeout"); ok {
		t.Error("s3 has a register_timeout")
	}

	check("jw.api", val("jw", "api"), "v2")
	check("jw.api_url", val("jw", "api_url"), "https://api.jwplayer.com")
	check("jw.upload_url", val("jw", "upload_url"), "")
	check("jw.wait_for", val("jw", "wait_for"), "")
	check("jw.register_timeout", val("jw", "register_timeout"), 2*time.Hour)
	check("jw.poll_interval", val("jw", "poll_interval"), 15*time.Second)
	check("jw.multipart_threshold", val("jw", "multipart_threshold"), "100000000B")
	if _, ok := c.Destinations["jw"].Value("bucket"); ok {
		t.Error("jwplayer has S3 keys")
	}
	check("jw1.api_url", val("jw1", "api_url"), "https://api.jwplatform.com")
	check("jw1.api_key", val("jw1", "api_key"), "k")

	check("bb.bucket", val("bb", "bucket"), "mm.pub.bbvms.com")
	check("bb.acl", val("bb", "acl"), "public-read")
	if _, ok := c.Destinations["bb"].Value("key"); ok {
		t.Error("bluebillywig has a key template")
	}
	check("bb.api_url", val("bb", "api_url"), "https://pub.bbvms.com")
	check("bb.register_timeout", val("bb", "register_timeout"), 30*time.Minute)
	check("bb.poll_interval", val("bb", "poll_interval"), 10*time.Second)

	check("wistia.upload_url", val("w", "upload_url"), "https://upload.wistia.com")
	check("wistia.api_url", val("w", "api_url"), "https://api.wistia.com")
	check("wistia.wait_for", val("w", "wait_for"), "")
	check("wistia.register_timeout", val("w", "register_timeout"), 2*time.Hour)
	check("wistia.poll_interval", val("w", "poll_interval"), 15*time.Second)
	check("wistia.key", val("w", "key"), "{folder}/{relpath}")
	check("wistia.token", val("w", "token").(Secret).Value(), "t")

	check("skylark.wait_for", val("sky", "wait_for"), "processed")
	check("skylark.api_url", val("sky", "api_url"), "")
	check("skylark.register_timeout", val("sky", "register_timeout"), 2*time.Hour)
	check("skylark.poll_interval", val("sky", "poll_interval"), 15*time.Second)
	// Skylark ingests the bucket root: the default key is the file name.
	check("skylark.key", val("sky", "key"), "{name}")

	if c.Folder("news") != &c.Folders[0] || c.Folder("nope") != nil {
		t.Error("Folder lookup")
	}
}

func TestExplicitValues(t *testing.T) {
	c := mustParse(t, `
shutdown_timeout = "1m30s"
[upload]
part_size = 8388608
multipart_threshold = "64 mb"
max_bandwidth = "50MiB/s"
[metrics]
listen = "127.0.0.1:9090"
[[folder]]
name = "news"
path = "/srv/news/"
processed_dir = "/srv/done/news/"
destinations = ["archive"]
include = ["*.mp4", "*.MOV"]
stable_after = "0s"
[destination.archive]
type = "s3"
bucket = "media"
endpoint = "http://127.0.0.1:9000/"
metadata = { project = "news", "X-Team" = "desk" }
sse = "aws:kms"
sse_kms_key_id = "arn:aws:kms:eu-west-1:111122223333:key/abc"
`)
	if c.ShutdownTimeout != 90*time.Second || c.Upload.PartSize != 8*MiB || c.Upload.MultipartThreshold != 64_000_000 || c.Upload.MaxBandwidth != 50*MiB {
		t.Errorf("got %+v %+v", c.ShutdownTimeout, c.Upload)
	}
	f := c.Folders[0]
	if f.Path != "/srv/news" || f.ProcessedDir != "/srv/done/news" || f.FailedDir != "/srv/news/failed" || f.StableAfter != 0 {
		t.Errorf("folder %+v", f)
	}
	d := c.Destinations["archive"]
	ep, _ := d.Value("endpoint")
	meta, _ := d.Value("metadata")
	kms, _ := d.Value("sse_kms_key_id")
	if ep != "http://127.0.0.1:9000/" || meta.(map[string]string)["X-Team"] != "desk" || kms == "" {
		t.Errorf("s3 endpoint %v metadata %v kms %v", ep, meta, kms)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false},
		{"1024", 1024, false},
		{"16MiB", 16 << 20, false},
		{"16 mib", 16 << 20, false},
		{"5GB", 5e9, false},
		{"5 kb", 5000, false},
		{"3B", 3, false},
		{"1TiB", 1 << 40, false},
		{" 2 KiB ", 2048, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"1.5GiB", 0, true},
		{"-1", 0, true},
		{"10 parsecs", 0, true},
		{"9999999999 TiB", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestSecretsResolved(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jw"), []byte("jw-file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WF_TEST_SAK", "sak-from-env")
	t.Setenv("WF_TEST_CREDS", dir)
	c := mustParse(t, minimal+`
access_key_id = "AKIA1"
secret_access_key = "${WF_TEST_SAK}"
[destination.jw]
type = "jwplayer"
site_id = "abcd1234"
api_secret = "file:${WF_TEST_CREDS}/jw"
[[notify]]
url = "https://x.test/"
secret = "literal-hmac"
`)
	tests := []struct {
		name      string
		s         Secret
		value, as string
	}{
		{"env", secretOf(c, "archive", "secret_access_key"), "sak-from-env", "[redacted env:WF_TEST_SAK]"},
		{"file", secretOf(c, "jw", "api_secret"), "jw-file-secret", "[redacted file:" + filepath.Join(dir, "jw") + "]"},
		{"literal", c.Notify[0].Secret, "literal-hmac", "[redacted literal]"},
		{"unset", secretOf(c, "archive", "session_token"), "", ""},
	}
	for _, tc := range tests {
		if tc.s.Value() != tc.value || tc.s.String() != tc.as || fmt.Sprintf("%#v", tc.s) != tc.as {
			t.Errorf("%s: value %q (want %q), String %q (want %q)", tc.name, tc.s.Value(), tc.value, tc.s.String(), tc.as)
		}
	}
}

func TestSecretErrorsAreAbsentOrEmpty(t *testing.T) {
	t.Setenv("WF_TEST_EMPTY", "")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ val, msg string }{
		{"${WF_TEST_EMPTY}", "WF_TEST_EMPTY is empty"},
		{"${NOT-A-NAME}", "invalid environment variable reference"},
		{"file:" + empty, "is empty"},
		{"file:" + dir, "not a regular file"},
		{"file:relative/path", "must be absolute"},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(minimal+"[[notify]]\nurl = \"https://x.test\"\nsecret = \""+tc.val+"\"\n"), "t.toml")
		if err == nil || !strings.Contains(err.Error(), "notify[0].secret: ") || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("secret %q: got %v, want notify[0].secret: ...%s", tc.val, err, tc.msg)
		}
	}
}

// exampleUncommented turns every "#key = ..." and "#[table]" line of the
// example into live configuration, so the documented defaults are checked
// too, not only the few live lines.
func exampleUncommented(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^#(\[|[a-z_]+ = )`)
	return re.ReplaceAll(data, []byte("$1"))
}

func setExampleEnv(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"jw", "notify"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("secret-"+f+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	for _, v := range []string{"BB_API_SECRET", "BB_AWS_ACCESS_KEY_ID", "BB_AWS_SECRET_ACCESS_KEY", "WISTIA_TOKEN"} {
		t.Setenv(v, "secret-"+v)
	}
}

func TestExampleLoads(t *testing.T) {
	c, err := Load("../config.example.toml")
	if err != nil {
		t.Fatalf("config.example.toml: %v", err)
	}
	if len(c.Folders) != 1 || c.Destinations["archive"] == nil {
		t.Fatalf("example: %+v", c)
	}

	setExampleEnv(t)
	full, err := Parse(exampleUncommented(t), "example-uncommented")
	if err != nil {
		t.Fatalf("uncommented example: %v", err)
	}
	if n := len(full.Destinations); n != 5 {
		t.Errorf("uncommented example has %d destinations, want 5", n)
	}
	if len(full.Notify) != 1 {
		t.Errorf("uncommented example has %d notify, want 1", len(full.Notify))
	}
	// Every "#key = default" line must really be the default.
	for _, pair := range []struct {
		name      string
		got, want any
	}{
		{"top", []any{full.StateDir, full.ControlSocket, full.ShutdownTimeout}, []any{c.StateDir, c.ControlSocket, c.ShutdownTimeout}},
		{"log", full.Log, c.Log},
		{"retry", full.Retry, c.Retry},
		{"upload", full.Upload, c.Upload},
		{"metrics", full.Metrics, c.Metrics},
		{"folder", full.Folders, c.Folders},
		{"archive", full.Destinations["archive"], c.Destinations["archive"]},
	} {
		if !reflect.DeepEqual(pair.got, pair.want) {
			t.Errorf("%s: documented default %+v differs from the real default %+v", pair.name, pair.got, pair.want)
		}
	}
}

func TestWriteEffectiveRedactsAndRoundTrips(t *testing.T) {
	setExampleEnv(t)
	src := string(exampleUncommented(t)) + `
[destination.lit]
type = "s3"
bucket = "lit-bucket"
access_key_id = "AKIALITERAL"
secret_access_key = "literal-sak-value"
session_token = "literal-session-value"
metadata = { project = "news \"quoted\"", "x.y" = "z" }
`
	c := mustParse(t, src)
	var buf bytes.Buffer
	if err := c.WriteEffective(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	dump := out + fmt.Sprintf("%v %+v %#v", c, c, c)
	for _, d := range c.Destinations {
		dump += fmt.Sprintf("%v %+v %#v", *d, *d, *d)
	}
	for _, secret := range []string{
		"literal-sak-value", "literal-session-value", "secret-jw", "secret-notify",
		"secret-BB_API_SECRET", "secret-BB_AWS_SECRET_ACCESS_KEY", "secret-WISTIA_TOKEN",
	} {
		if strings.Contains(dump, secret) {
			t.Errorf("secret %q appears in output", secret)
		}
	}
	for _, want := range []string{
		`secret_access_key = "[redacted literal]"`,
		`api_secret = "[redacted env:BB_API_SECRET]"`,
		`secret = "[redacted file:`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}

	// The output is valid configuration describing the same thing.
	again, err := Parse(buf.Bytes(), "effective")
	if err != nil {
		t.Fatalf("effective output does not parse: %v\n%s", err, out)
	}
	strip := func(c *Config) *Config {
		cc := *c
		cc.Path, cc.warnings, cc.mode = "", nil, 0
		cc.Notify = append([]Notify(nil), c.Notify...)
		for i := range cc.Notify {
			// Secrets and hook URLs (tokens in their paths) are redacted.
			cc.Notify[i].Secret, cc.Notify[i].URL = Secret{}, ""
		}
		cc.Destinations = nil
		return &cc
	}
	if a, b := strip(c), strip(again); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip differs:\n%+v\n%+v", a, b)
	}
	// Destinations: the same declared keys with the same values, secrets
	// compared by whether they are set.
	fields := func(c *Config) map[string][]string {
		out := map[string][]string{}
		for n, d := range c.Destinations {
			for _, f := range d.Settings.Fields() {
				v := fmt.Sprint(f.Value)
				if s, ok := f.Value.(Secret); ok {
					v = fmt.Sprint(s.IsSet())
				}
				out[n] = append(out[n], f.Key+"="+v)
			}
		}
		return out
	}
	if a, b := fields(c), fields(again); !reflect.DeepEqual(a, b) {
		t.Errorf("destinations differ after the round trip:\n%v\n%v", a, b)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	t.Setenv("WF_TEST_SAK", "env-secret-value")
	src := minimal + `
secret_access_key = "${WF_TEST_SAK}"
session_token = 12
[[notify]]
url = "https://x.test"
secret = "literal-secret-value"
timeout = "never"
`
	_, err := Parse([]byte(src), "t.toml")
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"env-secret-value", "literal-secret-value"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error reveals %q: %v", s, err)
		}
	}
	if !strings.Contains(err.Error(), "destination.archive.access_key_id: required") {
		t.Errorf("error: %v", err)
	}
}

func TestWarnings(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose-secret")
	if err := os.WriteFile(loose, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	lit := minimal + "access_key_id = \"AKIA1\"\nsecret_access_key = \"literal\"\n[destination.spare]\ntype = \"s3\"\nbucket = \"spare\"\n"
	tests := []struct {
		name string
		src  string
		mode os.FileMode
		want []string
	}{
		{"literal secret, world readable", lit, 0o644, []string{"holds literal secrets and is readable by others (mode 0644)", "destination.spare is not used"}},
		{"literal secret, private", lit, 0o600, []string{"destination.spare is not used"}},
		{"literal secret, group only (packaged 0640 root:watchfolder)", lit, 0o640, []string{"destination.spare is not used"}},
		{"no secrets, world readable", minimal, 0o644, nil},
		{"secret file readable by others", minimal + "access_key_id = \"AKIA1\"\nsecret_access_key = \"file:" + loose + "\"\n", 0o600,
			[]string{"destination.archive.secret_access_key: secret file " + loose + " is readable by others (mode 0644)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml")
			if err := os.WriteFile(p, []byte(tc.src), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil { // umask
				t.Fatal(err)
			}
			c, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			w := c.Warnings()
			if len(w) != len(tc.want) {
				t.Fatalf("warnings %q, want %d", w, len(tc.want))
			}
			for i := range w {
				if !strings.Contains(w[i], tc.want[i]) {
					t.Errorf("warning %q lacks %q", w[i], tc.want[i])
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/watchfolder.toml")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/watchfolder.toml") {
		t.Errorf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err == nil {
			// A valid config must also print and warn without trouble.
			var buf bytes.Buffer
			if werr := c.WriteEffective(&buf); werr != nil {
				t.Fatal(werr)
			}
			_ = c.Warnings()
		} else if err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

func secretOf(c *Config, dest, key string) Secret {
	v, _ := c.Destinations[dest].Value(key)
	s, _ := v.(Secret)
	return s
}
