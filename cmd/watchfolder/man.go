package main

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
)

// cmdMan prints watchfolder(1) in roff, built from the commands' own help
// so the manual cannot drift from the CLI. Packages ship its output.
func cmdMan(e *env, args []string) int {
	fs, _ := e.flags("man", "")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	w := e.stdout
	fmt.Fprintf(w, ".TH WATCHFOLDER 1 \"\" \"watchfolder %s\" \"User Commands\"\n", roff(version))
	fmt.Fprintln(w, ".SH NAME\nwatchfolder \\- deliver media files dropped into watched folders to S3 and video platforms")
	fmt.Fprintln(w, ".SH SYNOPSIS\n.B watchfolder\n[\\fB\\-\\-config\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIflags\\fR] [\\fIargs\\fR]")
	fmt.Fprintln(w, ".SH DESCRIPTION\n"+
		"watchfolder watches folders on a local file system, waits until each new file is complete, "+
		"uploads it to the configured destinations and files it into the folder's processed/ or failed/ "+
		"directory. It runs as the systemd service watchfolder.service; the other commands query and "+
		"steer it through its control socket.")
	var top bytes.Buffer
	(&env{stdout: &top, stderr: io.Discard, getenv: e.getenv}).usage(&top)
	fmt.Fprintln(w, ".SH OVERVIEW\n.nf")
	fmt.Fprint(w, roff(top.String()))
	fmt.Fprintln(w, ".fi\n.SH COMMANDS")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		if n != "man" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		var help bytes.Buffer
		sub := &env{stdout: &help, stderr: io.Discard, getenv: e.getenv}
		args := []string{n, "--help"}
		if n == "db" {
			args = []string{"db", "--help"}
		}
		sub.main(args)
		fmt.Fprintf(w, ".SS %s\n%s\n.PP\n.nf\n%s.fi\n", roff(n), roff(cmds[n].summary), roff(help.String()))
	}
	fmt.Fprintln(w, ".SH FILES\n"+
		".TP\n/etc/watchfolder/config.toml\nthe configuration (mode 0640, group watchfolder); every key is described in /usr/share/doc/watchfolder/config.example.toml\n"+
		".TP\n/var/lib/watchfolder/state.db\nthe job database\n"+
		".TP\n/run/watchfolder/control.sock\nthe control socket; members of the watchfolder group may use it")
	fmt.Fprintln(w, ".SH ENVIRONMENT\n.TP\nWATCHFOLDER_CONFIG\nthe config file when \\-\\-config is not given")
	fmt.Fprintln(w, ".SH SEE ALSO\nsystemctl(1), journalctl(1), systemd.exec(5)")
	return exitOK
}

// roff escapes text for roff: backslashes, and lines that would start
// with a control character.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}
