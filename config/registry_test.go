package config

import (
	"bytes"
	"strings"
	"testing"
)

// TestDestinationDeclarations: each type's own declaration decides its
// keys, defaults, checks and warnings; config only walks them.
func TestDestinationDeclarations(t *testing.T) {
	base := "[[folder]]\nname = \"news\"\npath = \"/srv/news\"\ndestinations = [\"d\"]\n[destination.d]\n"
	tests := []struct {
		name    string
		dest    string
		errHas  string // "" for valid
		warnHas string
		key     string
		want    any
	}{
		{name: "bare host endpoint, secure default https", dest: "type = \"s3\"\nbucket = \"bkt\"\nendpoint = \"minio.local:9000\"\n",
			key: "secure", want: true},
		{name: "bare host endpoint, secure = false", dest: "type = \"s3\"\nbucket = \"bkt\"\nendpoint = \"minio.local:9000\"\nsecure = false\n",
			key: "endpoint", want: "minio.local:9000"},
		{name: "anonymous", dest: "type = \"s3\"\nbucket = \"bkt\"\nanonymous = true\n", key: "anonymous", want: true},
		{name: "skylark default key at the root", dest: "type = \"skylark\"\nbucket = \"bkt\"\n", key: "key", want: "{name}"},
		{name: "skylark prefixed key warns", dest: "type = \"skylark\"\nbucket = \"bkt\"\nkey = \"{folder}/{name}\"\n",
			warnHas: "destination.d.key: \"{folder}/{name}\" puts objects under a prefix"},
		{name: "bluebillywig secret in the SDK form", dest: "type = \"bluebillywig\"\npublication = \"p\"\naccount = \"1\"\napi_secret = \"7-abcdef\"\n",
			key: "api_key_id", want: "7"},
		{name: "bluebillywig without any key id", dest: "type = \"bluebillywig\"\npublication = \"p\"\naccount = \"1\"\napi_secret = \"abcdef\"\n",
			errHas: "destination.d.api_key_id: required unless api_secret has the form <id>-<secret>"},
		{name: "jw multipart threshold", dest: "type = \"jwplayer\"\nsite_id = \"s\"\napi_secret = \"x\"\nmultipart_threshold = \"8MiB\"\n",
			key: "multipart_threshold", want: "8MiB"},
		{name: "jw refuses S3 keys by name", dest: "type = \"jwplayer\"\nsite_id = \"s\"\napi_secret = \"x\"\nbucket = \"bkt\"\n",
			errHas: "destination.d.bucket: not a key of type jwplayer"},
		{name: "typo gets a hint", dest: "type = \"s3\"\nbucket = \"bkt\"\nregoin = \"x\"\n",
			errHas: "destination.d.regoin: unknown key (did you mean region?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(base+tt.dest), "t.toml")
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.warnHas != "" && !strings.Contains(strings.Join(c.Warnings(), "\n"), tt.warnHas) {
				t.Errorf("warnings %q, want %q", c.Warnings(), tt.warnHas)
			}
			if tt.key != "" {
				if got, _ := c.Destinations["d"].Value(tt.key); got != tt.want {
					t.Errorf("%s = %#v, want %#v", tt.key, got, tt.want)
				}
			}
			// check prints every declared key, secrets only as sources.
			var buf bytes.Buffer
			if err := c.WriteEffective(&buf); err != nil {
				t.Fatal(err)
			}
			for _, f := range c.Destinations["d"].Settings.Fields() {
				if !strings.Contains(buf.String(), "\n"+f.Key+" = ") {
					t.Errorf("effective output lacks %s", f.Key)
				}
			}
			if strings.Contains(buf.String(), "abcdef") {
				t.Errorf("secret in output:\n%s", buf.String())
			}
			if _, err := Parse(buf.Bytes(), "effective"); err != nil {
				t.Errorf("effective output does not parse again: %v\n%s", err, buf.String())
			}
		})
	}
}
