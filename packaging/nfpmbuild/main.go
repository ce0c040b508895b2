// Command nfpmbuild builds the .deb and .rpm packages from nfpm.yaml with
// the nfpm library (the nfpm command itself pulls in packagers we do not
// ship, whose modules the proxy does not serve).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)

func main() {
	cfgPath := flag.String("config", "nfpm.yaml", "nfpm config (environment variables are expanded)")
	out := flag.String("out", "dist", "output directory")
	flag.Parse()
	formats := flag.Args()
	if len(formats) == 0 {
		formats = []string{"deb", "rpm"}
	}
	if err := build(*cfgPath, *out, formats); err != nil {
		fmt.Fprintf(os.Stderr, "nfpmbuild: %v\n", err)
		os.Exit(1)
	}
}

func build(cfgPath, out string, formats []string) error {
	// Expand ${VAR} everywhere, paths included (nfpm itself expands only
	// some fields).
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	cfg, err := nfpm.ParseWithEnvMapping(strings.NewReader(os.ExpandEnv(string(raw))), os.Getenv)
	if err != nil {
		return fmt.Errorf("read %s: %w", cfgPath, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, format := range formats {
		info, err := cfg.Get(format)
		if err != nil {
			return fmt.Errorf("%s: %w", format, err)
		}
		info = nfpm.WithDefaults(info)
		if err := nfpm.Validate(info); err != nil {
			return fmt.Errorf("%s: %w", format, err)
		}
		pkgr, err := nfpm.Get(format)
		if err != nil {
			return err
		}
		info.Target = filepath.Join(out, pkgr.ConventionalFileName(info))
		f, err := os.Create(info.Target)
		if err != nil {
			return err
		}
		if err := pkgr.Package(info, f); err != nil {
			f.Close()
			os.Remove(info.Target)
			return fmt.Errorf("%s: %w", format, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Println(info.Target)
	}
	return nil
}
