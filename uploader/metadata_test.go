package uploader

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseMetadata(t *testing.T) {
	long := strings.Repeat("x", 1001)
	tags := `[` + strings.TrimSuffix(strings.Repeat(`"t",`, 101), ",") + `]`
	tests := []struct {
		name    string
		in      string
		want    Metadata
		wantErr string
	}{
		{name: "empty object", in: `{}`},
		{name: "full", in: `{
			"title": "Clip\tone\nline two", "description": "d", "tags": ["a", "b"],
			"external_id": "ext-1", "custom_params": {"k": "v"},
			"platform": {"wistia": {"project_id": "p1"}},
			"skylark": {"uid": "asse_1"}
		}`, want: Metadata{
			Title: "Clip\tone\nline two", Description: "d", Tags: []string{"a", "b"}, ExternalID: "ext-1",
			Custom: map[string]string{"k": "v"},
			Platform: map[string]json.RawMessage{
				"wistia":  json.RawMessage(`{"project_id":"p1"}`),
				"skylark": json.RawMessage(`{"uid":"asse_1"}`),
			},
		}},
		{name: "nulls are absent", in: `{"title": null, "tags": null, "jwplayer": null}`},
		{name: "unicode title", in: `{"title": "Café — 東京"}`, want: Metadata{Title: "Café — 東京"}},
		{name: "title 1000 runes", in: `{"title": "` + strings.Repeat("é", 1000) + `"}`, want: Metadata{Title: strings.Repeat("é", 1000)}},

		{name: "not an object", in: `["title"]`, wantErr: "sidecar: want a JSON object"},
		{name: "null", in: `null`, wantErr: "sidecar: want a JSON object"},
		{name: "empty", in: ``, wantErr: "sidecar: EOF"},
		{name: "syntax", in: `{"title": "a",}`, wantErr: "sidecar: invalid character"},
		{name: "trailing", in: `{} {}`, wantErr: "trailing data"},
		{name: "trailing brace", in: `{}}`, wantErr: "trailing data"},
		{name: "unknown keys", in: `{"tittle": "a", "Title": "b", "title": "c"}`, wantErr: `unknown key(s) "Title", "tittle"`},
		{name: "title type", in: `{"title": 5}`, wantErr: "sidecar: title: want a string"},
		{name: "tags type", in: `{"tags": "a,b"}`, wantErr: "sidecar: tags: want an array of strings"},
		{name: "tags element type", in: `{"tags": ["a", 1]}`, wantErr: "sidecar: tags: want an array of strings"},
		{name: "too many tags", in: `{"tags": ` + tags + `}`, wantErr: "tags: 101 tags, over the 100 limit"},
		{name: "custom type", in: `{"custom_params": {"a": 1}}`, wantErr: "custom_params: want an object of strings"},
		{name: "title too long", in: `{"title": "` + long + `"}`, wantErr: "title: 1001 characters, over the 1000 limit"},
		{name: "title control", in: `{"title": "a\u0007b"}`, wantErr: "title: control character U+0007"},
		{name: "title CR", in: `{"title": "a\rb"}`, wantErr: "title: control character U+000D"},
		{name: "title C1 control", in: `{"title": "a\u0085b"}`, wantErr: "title: control character U+0085"},
		{name: "platform not object", in: `{"skylark": "asse_1"}`, wantErr: `platform "skylark": want an object`},
		{name: "nested platform not object", in: `{"platform": {"wistia": [1]}}`, wantErr: `platform "wistia": want an object`},
		{name: "platform type", in: `{"platform": []}`, wantErr: "platform: want an object of objects"},
		{name: "platform twice", in: `{"skylark": {}, "platform": {"skylark": {}}}`, wantErr: `"skylark" is given both`},
		{name: "invalid utf8", in: "{\"title\": \"\xff\"}", wantErr: "not valid UTF-8"},
		{name: "too big", in: `{"description": "` + strings.Repeat("a", 1<<20) + `"}`, wantErr: "sidecar is 1048595 bytes, over the 1 MiB limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMetadata([]byte(tc.in), testPlatforms)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// FuzzParseMetadata: never panics; what it accepts obeys the limits and
// survives a round trip through the JSON the daemon stores.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{`{}`, `{"title":"a","tags":["x"],"platform":{"skylark":{"uid":"u"}}}`, `{"custom_params":{"a":"b"}}`, `[]`, `{"title":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetadata(data, testPlatforms)
		if err != nil {
			return
		}
		if len([]rune(m.Title)) > maxTitleRunes || len(m.Tags) > maxTags {
			t.Fatalf("limits not enforced: %d title runes, %d tags", len([]rune(m.Title)), len(m.Tags))
		}
		for _, r := range m.Title {
			if r < 0x20 && r != '\n' && r != '\t' {
				t.Fatalf("control character %U accepted in title", r)
			}
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("marshal accepted metadata: %v", err)
		}
		m2, err := ParseMetadata(b, testPlatforms)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if !sameMetadata(m, m2) {
			t.Fatalf("round trip changed metadata:\n%#v\n%#v", m, m2)
		}
	})
}

// sameMetadata compares semantically (platform extras as decoded JSON,
// empty and nil collections alike).
func sameMetadata(a, b Metadata) bool {
	if a.Title != b.Title || a.Description != b.Description || a.ExternalID != b.ExternalID ||
		len(a.Tags) != len(b.Tags) || len(a.Custom) != len(b.Custom) || len(a.Platform) != len(b.Platform) {
		return false
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return false
		}
	}
	for k, v := range a.Custom {
		if b.Custom[k] != v {
			return false
		}
	}
	for k, v := range a.Platform {
		var x, y any
		if json.Unmarshal(v, &x) != nil || json.Unmarshal(b.Platform[k], &y) != nil || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

// testPlatforms are the sidecar platform keys the parser is tested with (the
// daemon passes config.SidecarPlatforms, derived from the registry).
var testPlatforms = []string{"bluebillywig", "jwplayer", "wistia", "skylark"}
