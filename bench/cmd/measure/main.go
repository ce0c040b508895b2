// Command measure runs a command and records its wall time, CPU time
// (user+sys, from the kernel's rusage of the child) and peak RSS (maxrss).
//
//	measure -scenario 1gib -tool mc -run 1 -out results.jsonl -log mc.log -- mc cp a b
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/bench/internal/result"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "measure:", err)
		os.Exit(1)
	}
}

func run() error {
	var rec result.Record
	out := flag.String("out", "", "append the result to this JSON-lines file")
	logPath := flag.String("log", "", "the command's stdout and stderr go here (default: discarded)")
	flag.StringVar(&rec.Scenario, "scenario", "", "scenario name")
	flag.StringVar(&rec.Tool, "tool", "", "tool name")
	flag.IntVar(&rec.Run, "run", 1, "run number")
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		return errors.New("no command given (usage: measure [flags] -- cmd args...)")
	}
	cmd := exec.Command(args[0], args[1:]...)
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			return fmt.Errorf("create log: %w", err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	if err != nil {
		return fmt.Errorf("%s failed after %s: %w (see %s)", args[0], wall.Round(time.Millisecond), err, *logPath)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return errors.New("no rusage on this platform")
	}
	rec.WallS = wall.Seconds()
	rec.UserS = cmd.ProcessState.UserTime().Seconds()
	rec.SysS = cmd.ProcessState.SystemTime().Seconds()
	rec.RSSMiB = float64(ru.Maxrss) / 1024 // Linux: KiB
	fmt.Println(rec.Line())
	if *out != "" {
		return result.Append(*out, rec)
	}
	return nil
}
