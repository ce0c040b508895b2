package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
	"sort"
	"strings"

	"github.com/watchfolder/watchfolder/state"
)

// completionFlags lists each command's flags for the completion scripts.
// TestCompletionMatchesFlags checks it against the commands' real flags.
func completionFlags() map[string][]string {
	return map[string][]string{
		"run":        {"--config"},
		"check":      {"--config"},
		"list":       {"--config", "--state", "--folder", "--since", "--limit", "--json"},
		"show":       {"--config", "--json"},
		"status":     {"--config", "--json", "--watch", "--interval"},
		"version":    {"--config"},
		"retry":      {"--config", "--failed", "--json"},
		"forget":     {"--config", "--json", "--state", "--older-than", "--folder", "--dry-run"},
		"pause":      {"--config", "--json"},
		"resume":     {"--config", "--json"},
		"reload":     {"--config"},
		"db":         {"--config", "--json"},
		"migrate":    {"--config", "--to"},
		"completion": {},
		"man":        {"--config"},
		"doctor":     {"--config", "--json", "--offline", "--user"},
	}
}

func cmdCompletion(e *env, args []string) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(e.stdout, "usage: watchfolder completion bash|zsh|fish\n\n"+
			"Prints a completion script. bash: source <(watchfolder completion bash)\n"+
			"zsh: watchfolder completion zsh > \"${fpath[1]}/_watchfolder\"\n"+
			"fish: watchfolder completion fish > ~/.config/fish/completions/watchfolder.fish")
		return exitOK
	}
	if len(args) != 1 {
		fmt.Fprintln(e.stderr, "usage: watchfolder completion bash|zsh|fish")
		return exitUsage
	}
	flags := completionFlags()
	cmds := make([]string, 0, len(flags))
	for c := range flags {
		cmds = append(cmds, c)
	}
	sort.Strings(cmds)
	var states []string
	for _, s := range state.AllStates() {
		states = append(states, string(s))
	}
	var b strings.Builder
	switch args[0] {
	case "bash":
		writeBash(&b, cmds, flags, states)
	case "zsh":
		writeZsh(&b, cmds, flags, states)
	case "fish":
		writeFish(&b, cmds, flags, states)
	default:
		fmt.Fprintf(e.stderr, "watchfolder completion: unknown shell %q (bash, zsh or fish)\n", args[0])
		return exitUsage
	}
	fmt.Fprint(e.stdout, b.String())
	return exitOK
}

func writeBash(b *strings.Builder, cmds []string, flags map[string][]string, states []string) {
	fmt.Fprintf(b, `# bash completion for watchfolder; source <(watchfolder completion bash)
_watchfolder() {
    local cur prev cmd
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd="${COMP_WORDS[1]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%s" -- "$cur"))
        return
    fi
    case "$prev" in
        --state) COMPREPLY=($(compgen -W "%s" -- "${cur##*,}")); return ;;
        --folder) COMPREPLY=($(compgen -W "$(watchfolder __complete folders 2>/dev/null)" -- "$cur")); return ;;
        --config) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "$cmd" in
`, strings.Join(cmds, " "), strings.Join(states, " "))
	for _, c := range cmds {
		words := strings.Join(flags[c], " ")
		switch c {
		case "completion":
			words = "bash zsh fish"
		case "db":
			words = "check backup " + words
		}
		dyn := ""
		switch c {
		case "show", "retry", "forget":
			dyn = " $(watchfolder __complete jobs 2>/dev/null)"
		case "pause", "resume":
			dyn = " $(watchfolder __complete folders 2>/dev/null)"
		}
		fmt.Fprintf(b, "        %s) COMPREPLY=($(compgen -W \"%s%s\" -- \"$cur\")) ;;\n", c, words, dyn)
	}
	b.WriteString("    esac\n}\ncomplete -F _watchfolder watchfolder\n")
}

func writeZsh(b *strings.Builder, cmds []string, flags map[string][]string, states []string) {
	fmt.Fprintf(b, "#compdef watchfolder\n# zsh completion for watchfolder\n_watchfolder() {\n")
	fmt.Fprintf(b, "  local -a commands states\n  commands=(%s)\n  states=(%s)\n", strings.Join(cmds, " "), strings.Join(states, " "))
	b.WriteString(`  if (( CURRENT == 2 )); then
    compadd -a commands
    return
  fi
  if [[ ${words[CURRENT-1]} == --state ]]; then
    compadd -a states
    return
  fi
  if [[ ${words[CURRENT-1]} == --folder ]]; then
    compadd -- ${(f)"$(watchfolder __complete folders 2>/dev/null)"}
    return
  fi
  if [[ ${words[CURRENT-1]} == --config ]]; then
    _files
    return
  fi
  case ${words[2]} in
`)
	for _, c := range cmds {
		words := strings.Join(flags[c], " ")
		switch c {
		case "completion":
			words = "bash zsh fish"
		case "db":
			words = "check backup " + words
		}
		switch c {
		case "show", "retry", "forget":
			words += ` ${(f)"$(watchfolder __complete jobs 2>/dev/null)"}`
		case "pause", "resume":
			words += ` ${(f)"$(watchfolder __complete folders 2>/dev/null)"}`
		}
		fmt.Fprintf(b, "    %s) compadd -- %s ;;\n", c, words)
	}
	b.WriteString("  esac\n}\ncompdef _watchfolder watchfolder\n")
}

func writeFish(b *strings.Builder, cmds []string, flags map[string][]string, states []string) {
	b.WriteString("# fish completion for watchfolder\ncomplete -c watchfolder -f\n")
	fmt.Fprintf(b, "complete -c watchfolder -n __fish_use_subcommand -a %q\n", strings.Join(cmds, " "))
	for _, c := range cmds {
		cond := "__fish_seen_subcommand_from " + c
		for _, f := range flags[c] {
			name := strings.TrimPrefix(f, "--")
			switch name {
			case "state":
				fmt.Fprintf(b, "complete -c watchfolder -n %q -l state -x -a %q\n", cond, strings.Join(states, " "))
			case "config":
				fmt.Fprintf(b, "complete -c watchfolder -n %q -l config -r -F\n", cond)
			case "folder":
				fmt.Fprintf(b, "complete -c watchfolder -n %q -l folder -x -a '(watchfolder __complete folders 2>/dev/null)'\n", cond)
			default:
				fmt.Fprintf(b, "complete -c watchfolder -n %q -l %s\n", cond, name)
			}
		}
		switch c {
		case "completion":
			fmt.Fprintf(b, "complete -c watchfolder -n %q -a %q\n", cond, "bash zsh fish")
		case "db":
			fmt.Fprintf(b, "complete -c watchfolder -n %q -a 'check backup'\n", cond)
		case "show", "retry", "forget":
			fmt.Fprintf(b, "complete -c watchfolder -n %q -a '(watchfolder __complete jobs 2>/dev/null)'\n", cond)
		case "pause", "resume":
			fmt.Fprintf(b, "complete -c watchfolder -n %q -a '(watchfolder __complete folders 2>/dev/null)'\n", cond)
		}
	}
}

// complete prints candidates for the completion scripts, one per line:
// "folders" (names from the config) or "jobs" (recent job ids). It is
// quiet on any error: a completion must never print noise.
func (e *env) complete(args []string) int {
	cfgFlag := ""
	if len(args) == 3 && args[0] == "--config" {
		cfgFlag, args = args[1], args[2:]
	}
	if len(args) != 1 {
		return exitUsage
	}
	cfg, err := config.LoadClient(e.configPath(cfgFlag))
	if err != nil {
		return exitError
	}
	switch args[0] {
	case "folders":
		for _, f := range cfg.Folders {
			fmt.Fprintln(e.stdout, f.Name)
		}
	case "jobs":
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var jobs []daemon.JobView
		if err := controlOnce(ctx, cfg, http.MethodGet, "/v1/jobs", url.Values{"limit": {"50"}}, &jobs); err != nil {
			return exitError
		}
		for _, j := range jobs {
			fmt.Fprintln(e.stdout, j.ID)
		}
	default:
		return exitUsage
	}
	return exitOK
}
