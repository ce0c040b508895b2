package uploader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sidecar limits: large enough for any real description, small enough that
// a stray multi-GB ".json" cannot exhaust memory or a platform's API.
const (
	maxSidecarBytes = 1 << 20
	maxTitleRunes   = 1000
	maxTags         = 100
)

// metadataKeys are the sidecar's own top-level keys.
const metadataKeys = "title, description, tags, external_id, custom_params, platform"

// ParseMetadata parses a sidecar file strictly: one JSON object with the
// fields title, description, tags, external_id, custom_params, platform and
// a key per destination type in platforms (the types whose extras may be
// given at the top level, DestinationType.SidecarKey; folded into
// Platform). Unknown keys are errors so a typo ("tittle") fails the job
// with a readable reason instead of silently losing metadata. A null value
// is the same as an absent key.
func ParseMetadata(data []byte, platforms []string) (Metadata, error) {
	var m Metadata
	if len(data) > maxSidecarBytes {
		return m, fmt.Errorf("sidecar is %d bytes, over the 1 MiB limit", len(data))
	}
	if !utf8.Valid(data) {
		return m, errors.New("sidecar: not valid UTF-8")
	}
	var top map[string]json.RawMessage
	if err := decodeOne(data, &top); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) || isNull(bytes.TrimSpace(data)) {
			return m, errors.New("sidecar: want a JSON object")
		}
		return m, fmt.Errorf("sidecar: %w", err)
	}
	if top == nil {
		return m, errors.New("sidecar: want a JSON object")
	}
	var unknown []string
	for k := range top {
		switch k {
		case "title", "description", "tags", "external_id", "custom_params", "platform":
		default:
			if !slices.Contains(platforms, k) {
				unknown = append(unknown, k)
			}
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		known := metadataKeys
		if len(platforms) > 0 {
			known += ", " + strings.Join(platforms, ", ")
		}
		return m, fmt.Errorf("sidecar: unknown key(s) %s (known: %s)", quoteAll(unknown), known)
	}

	if err := field(top, "title", "a string", &m.Title); err != nil {
		return Metadata{}, err
	}
	if n := utf8.RuneCountInString(m.Title); n > maxTitleRunes {
		return Metadata{}, fmt.Errorf("sidecar: title: %d characters, over the %d limit", n, maxTitleRunes)
	}
	for _, r := range m.Title {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			return Metadata{}, fmt.Errorf("sidecar: title: control character %U not allowed", r)
		}
	}
	if err := field(top, "description", "a string", &m.Description); err != nil {
		return Metadata{}, err
	}
	if err := field(top, "external_id", "a string", &m.ExternalID); err != nil {
		return Metadata{}, err
	}
	if err := field(top, "tags", "an array of strings", &m.Tags); err != nil {
		return Metadata{}, err
	}
	if len(m.Tags) > maxTags {
		return Metadata{}, fmt.Errorf("sidecar: tags: %d tags, over the %d limit", len(m.Tags), maxTags)
	}
	if err := field(top, "custom_params", "an object of strings", &m.Custom); err != nil {
		return Metadata{}, err
	}

	var nested map[string]json.RawMessage
	if err := field(top, "platform", "an object of objects", &nested); err != nil {
		return Metadata{}, err
	}
	for k, v := range top {
		if !slices.Contains(platforms, k) || isNull(v) {
			continue
		}
		if _, dup := nested[k]; dup {
			return Metadata{}, fmt.Errorf("sidecar: %q is given both at the top level and under \"platform\"", k)
		}
		if nested == nil {
			nested = make(map[string]json.RawMessage)
		}
		nested[k] = v
	}
	for k, v := range nested {
		if isNull(v) {
			continue
		}
		var probe map[string]json.RawMessage
		if err := decodeOne(v, &probe); err != nil || probe == nil {
			return Metadata{}, fmt.Errorf("sidecar: platform %q: want an object", k)
		}
		// Compact so the stored extras are canonical, whatever the
		// sidecar's formatting.
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return Metadata{}, fmt.Errorf("sidecar: platform %q: %w", k, err)
		}
		if m.Platform == nil {
			m.Platform = make(map[string]json.RawMessage)
		}
		m.Platform[k] = json.RawMessage(b.Bytes())
	}
	return m, nil
}

// field decodes top[key] into dst, naming the key and the wanted shape on a
// type mismatch. Absent and null leave dst untouched.
func field(top map[string]json.RawMessage, key, want string, dst any) error {
	raw, ok := top[key]
	if !ok || isNull(raw) {
		return nil
	}
	if err := decodeOne(raw, dst); err != nil {
		return fmt.Errorf("sidecar: %s: want %s", key, want)
	}
	return nil
}

// decodeOne decodes exactly one JSON value from data; trailing data is an
// error (json.Unmarshal would allow none, but states it less clearly).
func decodeOne(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
