package config

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// maxSecretFile bounds what a file: secret may read, so a mistyped path
// (a log, a disk image) fails fast instead of filling memory.
const maxSecretFile = 64 << 10

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secret reads the secret at k and resolves it. Errors name the key and the
// variable or file, never the value.
func (t *table) secret(k string) Secret {
	s, ok := t.str(k)
	if !ok || s == "" {
		return Secret{}
	}
	if t.p.skipSecrets {
		return Secret{source: "unresolved"}
	}
	sec, warn, err := resolveSecret(s)
	if err != nil {
		t.errf(k, "%v", err)
		return Secret{}
	}
	if warn != "" {
		t.p.warn(t.key(k) + ": " + warn)
	}
	return sec
}

// resolveSecret turns "${NAME}", "file:/path" or a literal into a Secret.
// warn is set when the secret is readable by more people than it should be.
func resolveSecret(s string) (sec Secret, warn string, err error) {
	switch {
	case strings.HasPrefix(s, "${") && strings.HasSuffix(s, "}"):
		name := s[2 : len(s)-1]
		if !envName.MatchString(name) {
			return Secret{}, "", fmt.Errorf("invalid environment variable reference: want ${NAME} with NAME made of letters, digits and _")
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return Secret{}, "", fmt.Errorf("environment variable %s is not set", name)
		}
		if v == "" {
			return Secret{}, "", fmt.Errorf("environment variable %s is empty", name)
		}
		return Secret{value: v, source: "env:" + name}, "", nil

	case strings.HasPrefix(s, "file:"):
		p, err := expandEnv(strings.TrimPrefix(s, "file:"))
		if err != nil {
			return Secret{}, "", err
		}
		if !filepath.IsAbs(p) {
			return Secret{}, "", fmt.Errorf("secret file %q: path must be absolute", p)
		}
		p = filepath.Clean(p)
		v, mode, err := readSecretFile(p)
		if err != nil {
			return Secret{}, "", err
		}
		// Group-readable (0640 root:watchfolder) is how the service user
		// reads it; world-readable is the leak.
		if mode&0o007 != 0 {
			warn = fmt.Sprintf("secret file %s is readable by others (mode %#o): chmod 600", p, mode&fs.ModePerm)
		}
		return Secret{value: v, source: "file:" + p}, warn, nil
	}
	return Secret{value: s, source: "literal"}, "", nil
}

// expandEnv expands ${VAR} and $VAR in a secret file path, so that
// "file:${CREDENTIALS_DIRECTORY}/jw" works with systemd credentials. An
// unset variable is an error: it would silently turn into "/jw".
func expandEnv(p string) (string, error) {
	var missing []string
	out := os.Expand(p, func(name string) string {
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("secret file path %q: environment variable %s is not set", p, missing[0])
	}
	return out, nil
}

// readSecretFile reads a regular file and trims one trailing newline, which
// editors and `echo` add and which is never part of a key.
func readSecretFile(p string) (string, fs.FileMode, error) {
	// Stat first: opening a FIFO or a device would block or read forever.
	fi, err := os.Stat(p)
	if err != nil {
		return "", 0, fmt.Errorf("secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("secret file %s is not a regular file", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", 0, fmt.Errorf("secret file %s: %w", p, err)
	}
	if len(b) > maxSecretFile {
		return "", 0, fmt.Errorf("secret file %s is larger than %d bytes", p, maxSecretFile)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", 0, fmt.Errorf("secret file %s is empty", p)
	}
	return string(b), fi.Mode().Perm(), nil
}

// isLiteral reports whether the secret was written into the config itself.
func (s Secret) isLiteral() bool { return s.source == "literal" }
