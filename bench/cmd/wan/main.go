// Command wan runs a simulated WAN link (toxiproxy, in-process) in front of
// a loopback server until it is signalled: latency each way and a
// bandwidth cap per connection upstream. It prints the address clients
// connect to on its first line of output.
//
//	wan -upstream 127.0.0.1:9000 -one-way 20ms -rate 20MiB
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

func main() {
	upstream := flag.String("upstream", "", "host:port of the server")
	oneWay := flag.Duration("one-way", 20*time.Millisecond, "latency added in each direction (RTT = 2x)")
	rate := flag.String("rate", "20MiB", "per-connection upstream cap in bytes/s (KiB, MiB suffixes; 0: none)")
	flag.Parse()
	bps, err := parseRate(*rate)
	if err != nil || *upstream == "" {
		fmt.Fprintln(os.Stderr, "usage: wan -upstream host:port [-one-way 20ms] [-rate 20MiB]")
		os.Exit(2)
	}
	w, err := testenv.StartWAN(*upstream, testenv.WANLink{OneWay: *oneWay, BytesPerSec: bps})
	if err != nil {
		fmt.Fprintln(os.Stderr, "wan:", err)
		os.Exit(1)
	}
	fmt.Println(w.Addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	w.Stop()
}

func parseRate(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1<<10, strings.TrimSuffix(s, "KiB")
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad rate %q", s)
	}
	return int64(n * float64(mult)), nil
}
