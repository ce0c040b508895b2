package state

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockHolders names the processes holding a lock on path, for the message
// of ErrLocked ("" when they cannot be found, e.g. outside Linux). It reads
// /proc/locks, whose lines name the inode as MAJOR:MINOR:INODE.
func lockHolders(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return ""
	}
	defer f.Close()
	want := ":" + strconv.FormatUint(st.Ino, 10)
	self := os.Getpid()
	var who []string
	seen := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || !strings.HasSuffix(fields[5], want) {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || pid == self || seen[pid] {
			continue
		}
		seen[pid] = true
		comm, _ := os.ReadFile("/proc/" + fields[4] + "/comm")
		mode := "reading"
		if fields[3] == "WRITE" {
			mode = "writing"
		}
		who = append(who, fmt.Sprintf("pid %d (%s, %s)", pid, strings.TrimSpace(string(comm)), mode))
	}
	if len(who) == 0 {
		return ""
	}
	return "; held by " + strings.Join(who, ", ")
}
