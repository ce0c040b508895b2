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
	"github.com/watchfolder/watchfolder/internal/human"
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
		"db":         {"db check: verify the state database; db backup FILE: copy it", cmdDB},
		"migrate":    {"copy the jobs between state.db and etcd (--to etcd|bbolt; daemons stopped)", cmdMigrate},
		"completion": {"print a shell completion script: completion bash|zsh|fish", cmdCompletion},
		"man":        {"print the manual page (roff), as installed as watchfolder(1)", cmdMan},
		"doctor":     {"check the installation: folders, inotify limits, destinations (exit code per problem class)", cmdDoctor},
	}
}

func main() {
	e := &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(e.main(os.Args[1:]))
}

func (e *env) main(args []string) int {
	args, ok := e.hoistGlobals(args)
	if !ok {
		return exitUsage
	}
	if len(args) == 0 {
		e.usage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		if len(args) > 1 {
			if _, ok := commands()[args[1]]; ok {
				return e.main([]string{args[1], "--help"})
			}
		}
		e.usage(e.stdout)
		return exitOK
	case "--version", "-version", "-V":
		return cmdVersion(e, nil)
	case "__complete":
		return e.complete(args[1:])
	}
	c, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "watchfolder: unknown command %q\n\n", args[0])
		e.usage(e.stderr)
		return exitUsage
	}
	return c.run(e, args[1:])
}

// hoistGlobals moves global flags given before the command (`watchfolder
// --config X status`) after it, where every command parses them.
func (e *env) hoistGlobals(args []string) ([]string, bool) {
	var globals []string
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "--config" || a == "-config":
			if len(args) < 2 {
				fmt.Fprintln(e.stderr, "watchfolder: flag needs an argument: --config")
				return nil, false
			}
			globals = append(globals, "--config", args[1])
			args = args[2:]
			continue
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			globals = append(globals, a)
			args = args[1:]
			continue
		}
		break
	}
	if len(globals) == 0 {
		return args, true
	}
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "watchfolder: no command given")
		return nil, false
	}
	out := append([]string{args[0]}, globals...)
	return append(out, args[1:]...), true
}

func (e *env) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: watchfolder [--config FILE] COMMAND [flags] [args]\n\ncommands:\n")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nEvery command takes --config FILE (default $WATCHFOLDER_CONFIG, then %s) and --help;\n"+
		"flags may come before or after arguments. watchfolder --version prints the version.\n\n"+
		"Exit codes: 0 ok, 1 the command failed, 2 usage or config error (also an unknown folder),\n"+
		"3 the daemon is not running, 4 no such job; doctor: see watchfolder doctor --help.\n", config.DefaultPath)
}

// cliOutput is a FlagSet's output: help asked for (--help) goes to stdout,
// usage after a mistake to stderr.
type cliOutput struct {
	stdout, stderr io.Writer
	help           bool
}

func (o *cliOutput) Write(p []byte) (int, error) {
	if o.help {
		return o.stdout.Write(p)
	}
	return o.stderr.Write(p)
}

// flags returns a FlagSet with --config. Its usage lists flags in --flag
// spelling, on stdout for --help and on stderr after a usage error.
func (e *env) flags(name, synopsis string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(&cliOutput{stdout: e.stdout, stderr: e.stderr})
	cfgPath := fs.String("config", "", "config `FILE` (default $WATCHFOLDER_CONFIG, then "+config.DefaultPath+")")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: watchfolder %s %s\n\nflags:\n", name, synopsis)
		printFlags(w, fs)
	}
	return fs, cfgPath
}

// printFlags lists fs's flags as "  --name VALUE" lines, GNU style.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if kind != "" {
			head += " " + strings.ToUpper(kind)
		}
		line := fmt.Sprintf("%-24s %s", head, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			line += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintln(w, line)
	})
}

// parse parses flags given before or after positional arguments ("--"
// ends flags); ok false means exit with code.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	args = interspersed(fs, args)
	if o, isCLI := fs.Output().(*cliOutput); isCLI {
		for _, a := range args {
			if a == "--" {
				break
			}
			if a == "-h" || a == "--help" || a == "-help" {
				o.help = true
			}
		}
		defer func() { o.help = false }()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// interspersed moves flags (and the values of flags that take one) ahead
// of positional arguments, since the flag package stops at the first
// positional one.
func interspersed(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if len(pos) > 0 {
		flags = append(flags, "--")
	}
	return append(flags, pos...)
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

func humanBytes(n int64) string { return human.Bytes(n) }

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// stderrFile is stderr as an *os.File when it is one (not in tests).
func (e *env) stderrFile() *os.File {
	f, _ := e.stderr.(*os.File)
	return f
}
