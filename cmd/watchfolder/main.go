// Command watchfolder turns shared folders into a reliable media ingest
// pipeline. This package is wiring only: one file per subcommand.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/watchfolder/watchfolder/config"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// Exit codes shared by all commands.
const (
	exitOK         = 0
	exitError      = 1 // the command ran and failed
	exitUsage      = 2 // bad flags or arguments, or an invalid config
	exitNotRunning = 3 // the command needs the daemon and it is not running
	exitNotFound   = 4 // no such job
)

type command struct {
	summary string
	run     func(env *env, args []string) int
}

// env is what every command gets: where to write and how to find config.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func commands() map[string]command {
	return map[string]command{
		"run":        {"run the daemon in the foreground", cmdRun},
		"check":      {"validate the config and print it with defaults (secrets redacted)", cmdCheck},
		"list":       {"list jobs", cmdList},
		"show":       {"show one job in full: history, destinations, ids", cmdShow},
		"status":     {"daemon overview: counts, uploads in flight, recent failures", cmdStatus},
		"version":    {"print the version", cmdVersion},
		"retry":      {"put failed jobs back into the pipeline (ID... or --failed)", cmdRetry},
		"forget":     {"delete finished jobs from the database (ID...)", cmdForget},
		"pause":      {"stop starting new jobs (one folder or all); survives restarts", cmdPause},
		"resume":     {"start new jobs again (one folder or all)", cmdResume},
		"reload":     {"reload the config without a restart (like systemctl reload)", cmdReload},
		"db":         {"db check: verify the state database (daemon stopped)", cmdDB},
		"migrate":    {"copy the jobs between state.db and etcd (--to etcd|bbolt; daemons stopped)", cmdMigrate},
		"completion": {"print a shell completion script: completion bash|zsh|fish", cmdCompletion},
	}
}

func main() {
	e := &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(e.main(os.Args[1:]))
}

func (e *env) main(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		e.usage(e.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "watchfolder: unknown command %q\n\n", args[0])
		e.usage(e.stderr)
		return exitUsage
	}
	return c.run(e, args[1:])
}

func (e *env) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: watchfolder COMMAND [flags]\n\ncommands:\n")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nEvery command takes --config FILE (default $WATCHFOLDER_CONFIG, then %s) and --help.\n", config.DefaultPath)
}

// flags returns a FlagSet with --config, printing its usage to stderr.
func (e *env) flags(name, synopsis string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgPath := fs.String("config", "", "config file (default $WATCHFOLDER_CONFIG, then "+config.DefaultPath+")")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: watchfolder %s %s\n\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs, cfgPath
}

// parse parses flags; ok false means exit with code.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

func (e *env) configPath(flagVal string) string {
	if flagVal != "" {
		return flagVal
	}
	if v := e.getenv("WATCHFOLDER_CONFIG"); v != "" {
		return v
	}
	return config.DefaultPath
}

// loadConfig loads and reports problems; nil means exit with exitUsage.
func (e *env) loadConfig(flagVal string) *config.Config {
	cfg, err := config.Load(e.configPath(flagVal))
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		return nil
	}
	return cfg
}

// loadClientConfig loads the config for commands that only read state:
// secrets are not resolved, so an operator needs no credentials to run them.
func (e *env) loadClientConfig(flagVal string) *config.Config {
	cfg, err := config.LoadClient(e.configPath(flagVal))
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		return nil
	}
	return cfg
}

func cmdVersion(e *env, args []string) int {
	fs, _ := e.flags("version", "")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	fmt.Fprintf(e.stdout, "watchfolder %s\n", version)
	return exitOK
}

// jobIDs parses job id arguments; ok false means a usage error was printed.
func jobIDs(e *env, name string, args []string) ([]uint64, bool) {
	ids := make([]uint64, 0, len(args))
	for _, a := range args {
		id, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			fmt.Fprintf(e.stderr, "watchfolder %s: %q is not a job id\n", name, a)
			return nil, false
		}
		ids = append(ids, id)
	}
	return ids, true
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
