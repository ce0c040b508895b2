package main

import (
	"context"
	"fmt"
	"os/user"
	"strconv"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
)

// Exit-code bits of doctor, one per problem class, so a script can tell
// what is wrong from the code alone (several bits may be set).
const (
	doctorFolder      = 8  // a folder is missing, not a directory, or not writable by the service user
	doctorSystem      = 16 // inotify watch limit too low for the folders' trees
	doctorDestination = 32 // credentials, region, bucket or write permission refused
)

func cmdDoctor(e *env, args []string) int {
	fs, cfgPath := e.flags("doctor", "[--user NAME] [--offline] [--json]\n\n"+
		"Checks an installation before it is enabled: each folder exists, is a\n"+
		"directory the service user can write, is not on a file system where\n"+
		"inotify misses other clients' writes; the writer probe (read lease)\n"+
		"works; the inotify watch limit covers the folders' trees; each S3\n"+
		"store takes the credentials and region and allows a write (a probe\n"+
		"object, removed at once).\n\n"+
		"Exit code: 0 no problem, 2 invalid config; otherwise the sum of\n"+
		"  8 folder problems, 16 system limits, 32 destination problems.\n"+
		"Warnings (e.g. a network file system) do not change the exit code.")
	userName := fs.String("user", "watchfolder", "the service user whose access to the folders is checked")
	offline := fs.Bool("offline", false, "do not contact the destinations")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "watchfolder doctor: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	// Secrets are resolved: the destination checks need them.
	cfg := e.loadConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	su, err := serviceUser(*userName)
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder doctor: %v (give --user)\n", err)
		return exitUsage
	}
	probs := daemon.CheckFolders(cfg, su)
	probs = append(probs, daemon.CheckSystem(cfg)...)
	if !*offline {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		probs = append(probs, daemon.CheckDestinations(ctx, cfg, true)...)
		cancel()
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	probs = append(probs, daemon.CheckCluster(cctx, cfg, *offline)...)
	ccancel()
	code := exitOK
	for _, p := range probs {
		if !p.Fatal {
			continue
		}
		switch p.Class {
		case daemon.ClassFolder:
			code |= doctorFolder
		case daemon.ClassSystem:
			code |= doctorSystem
		case daemon.ClassDestination:
			code |= doctorDestination
		}
	}
	if *asJSON {
		if probs == nil {
			probs = []daemon.Problem{}
		}
		e.writeJSON(map[string]any{"config": cfg.Path, "user": su.Name, "problems": probs, "exit_code": code})
		return code
	}
	for _, p := range probs {
		kind := "warning"
		if p.Fatal {
			kind = "PROBLEM"
		}
		fmt.Fprintf(e.stdout, "%-7s [%s] %s\n", kind, p.Class, p)
	}
	dests := len(cfg.Destinations)
	if *offline {
		dests = 0
	}
	if code == exitOK {
		fmt.Fprintf(e.stdout, "ok: %d folders and %d destinations checked for user %s\n", len(cfg.Folders), dests, su.Name)
	}
	return code
}

// serviceUser looks the account up with its groups.
func serviceUser(name string) (*daemon.ServiceUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q", name, u.Uid)
	}
	su := &daemon.ServiceUser{Name: name, UID: uint32(uid)}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	if len(gids) == 0 || gids[0] != u.Gid {
		gids = append([]string{u.Gid}, gids...)
	}
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			su.GIDs = append(su.GIDs, uint32(n))
		}
	}
	return su, nil
}
