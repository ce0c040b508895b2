// Package systemd installs the .deb that `make package` builds into a
// minimal Debian root, boots systemd as PID 1 of its own PID and mount
// namespace over it, and runs the service as an admin would: start, drop
// files, reload, watchdog, journal, CLI access, stop and resume. The root
// shares the host's network namespace, so the service reaches the test's
// MinIO on the loopback.
package systemd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// box is a booted systemd over an overlay of the cached Debian root.
type box struct {
	t       *testing.T
	unshare *exec.Cmd
	pid     int // systemd, as the host sees it
	upper   string
}

func TestPackageUnderSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test boots systemd in namespaces and needs root (CI runs as root)")
	}
	repo, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	rootfs := debianRoot(t, repo)
	deb := buildPackages(t, repo)
	t.Logf("root file system and package ready after %s", time.Since(started).Round(time.Millisecond))

	minio := testenv.StartMinIOT(t)
	minio.MakeBucket(t, "sd-news")
	minio.MakeBucket(t, "sd-promo")

	b := boot(t, rootfs)
	b.copyIn(deb, "/root/watchfolder.deb", 0o644)
	if out, code := b.sh("dpkg -i /root/watchfolder.deb"); code != 0 {
		t.Fatalf("dpkg -i: exit %d\n%s", code, out)
	}

	// The package sets up, and starts nothing on its own.
	if out, _ := b.sh("stat -c '%a %U %G' /etc/watchfolder/config.toml /etc/watchfolder"); out != "640 root watchfolder\n750 root watchfolder\n" {
		t.Errorf("config modes after install:\n%s", out)
	}
	if out, _ := b.sh("systemctl is-enabled watchfolder; systemctl is-active watchfolder"); !strings.Contains(out, "disabled") || !strings.Contains(out, "inactive") {
		t.Errorf("a fresh install must leave the service disabled and stopped:\n%s", out)
	}
	for _, p := range []string{"/usr/share/man/man1/watchfolder.1.gz", "/usr/share/bash-completion/completions/watchfolder", "/usr/share/doc/watchfolder/config.example.toml"} {
		if _, code := b.sh("test -s " + p); code != 0 {
			t.Errorf("%s is not installed", p)
		}
	}

	// The admin's side: folders outside the shipped ReadWritePaths, a
	// drop-in naming them, the secret in a file the group can read.
	b.mustSh("mkdir -p /media/ingest/news /media/ingest/promo /media/ingest/broken && chgrp -R watchfolder /media/ingest && chmod -R 2775 /media/ingest")
	b.write("/etc/watchfolder/minio.secret", minio.SecretKey+"\n")
	b.mustSh("chgrp watchfolder /etc/watchfolder/minio.secret && chmod 0640 /etc/watchfolder/minio.secret")
	b.mustSh("mkdir -p /etc/systemd/system/watchfolder.service.d")
	// A short watchdog and restart delay so the test need not wait a minute.
	b.write("/etc/systemd/system/watchfolder.service.d/site.conf", "[Service]\nReadWritePaths=/media/ingest\nWatchdogSec=3s\nRestartSec=1s\n")
	b.mustSh("systemctl daemon-reload")
	dest := func(name, bucket string) string {
		return fmt.Sprintf("[destination.%s]\ntype = \"s3\"\nbucket = %q\nkey = \"{folder}/{relpath}\"\nendpoint = %q\npath_style = true\naccess_key_id = %q\nsecret_access_key = \"file:/etc/watchfolder/minio.secret\"\n",
			name, bucket, minio.Endpoint, minio.AccessKey)
	}
	folder := func(name, destName string) string {
		// probe = "off": the test drops bytes, not media.
		return fmt.Sprintf("[[folder]]\nname = %q\npath = \"/media/ingest/%s\"\ndestinations = [%q]\nstable_after = \"1s\"\nrescan_interval = \"2s\"\nprobe = \"off\"\n", name, name, destName)
	}
	// A short shutdown_timeout: stop must cut the 24 MiB upload below short
	// (at 4 MiB/s) so that it resumes after the next start.
	base := "shutdown_timeout = \"4s\"\n[upload]\nmax_bandwidth = \"4MiB/s\"\npart_size = \"5MiB\"\n\n" +
		folder("news", "news") + folder("broken", "nobucket") + dest("news", "sd-news") + dest("nobucket", "sd-no-such-bucket")
	b.write("/etc/watchfolder/config.toml", base)

	// start returns only once the daemon said READY=1: right away the
	// unit is active and the control socket answers.
	if out, code := b.sh("systemctl start watchfolder"); code != 0 {
		st, _ := b.sh("systemctl status --no-pager -l watchfolder; journalctl --no-pager -n 60")
		t.Fatalf("systemctl start: exit %d\n%s\n%s", code, out, st)
	}
	if out, _ := b.sh("systemctl show -p ActiveState -p SubState watchfolder"); out != "ActiveState=active\nSubState=running\n" {
		t.Errorf("right after start:\n%s", out)
	}
	if out, code := b.sh("watchfolder status"); code != 0 {
		t.Errorf("status right after start: exit %d\n%s", code, out)
	}
	// The packaged modes (0640 root:watchfolder) are the intended setup:
	// no warning about them.
	if j := b.journal("-p warning"); strings.Contains(j, "readable by") {
		t.Errorf("warnings about the packaged file modes:\n%s", j)
	}

	// A dropped file is delivered and filed, inside the sandbox.
	clip := bytes.Repeat([]byte("news clip "), 10000)
	b.write("/media/ingest/news/clip.mp4", string(clip))
	b.await("clip.mp4 filed", 60*time.Second, func() bool {
		_, code := b.sh("test -f /media/ingest/news/processed/clip.mp4")
		return code == 0
	})
	if got := minio.GetObject(t, "sd-news", "news/clip.mp4"); !bytes.Equal(got, clip) {
		t.Errorf("object news/clip.mp4 differs (%d bytes)", len(got))
	}

	// Reload applies a changed config: a new folder.
	b.write("/etc/watchfolder/config.toml", base+folder("promo", "promo")+dest("promo", "sd-promo"))
	b.mustSh("systemctl reload watchfolder")
	b.await("reload applied", 20*time.Second, func() bool {
		return strings.Contains(b.journal(""), "configuration reloaded")
	})
	b.write("/media/ingest/promo/p.mp4", "promo")
	b.await("p.mp4 filed from the new folder", 30*time.Second, func() bool {
		_, code := b.sh("test -f /media/ingest/promo/processed/p.mp4")
		return code == 0
	})
	if got := minio.GetObject(t, "sd-promo", "promo/p.mp4"); string(got) != "promo" {
		t.Errorf("object promo/p.mp4 = %q", got)
	}
	// A broken config is refused; the service stays up on the old one.
	pid := b.mainPID()
	b.write("/etc/watchfolder/config.toml", base+"[[folder]]\nname = \"half\"\n")
	b.mustSh("systemctl reload watchfolder")
	b.await("reload refused", 20*time.Second, func() bool {
		return strings.Contains(b.journal(""), "refused")
	})
	if out, _ := b.sh("systemctl is-active watchfolder"); strings.TrimSpace(out) != "active" || b.mainPID() != pid {
		t.Errorf("after a broken reload: %s, pid %d (was %d)", out, b.mainPID(), pid)
	}
	b.write("/etc/watchfolder/config.toml", base)
	b.mustSh("systemctl reload watchfolder")

	// journalctl -p err shows the failed upload; no secret anywhere.
	b.write("/media/ingest/broken/lost.mp4", "lost")
	b.await("failure at priority err", 60*time.Second, func() bool {
		return strings.Contains(b.journal("-p err"), "lost.mp4")
	})
	if strings.Contains(b.journal("-o verbose"), minio.SecretKey) {
		t.Error("the secret key appears in the journal")
	}
	if j := b.journal("-p err"); strings.Contains(j, "clip.mp4") {
		t.Errorf("a delivered file is logged at priority err:\n%s", j)
	}

	// Operators in the watchfolder group may use the CLI; others may not.
	b.mustSh("useradd -m -G watchfolder alice && useradd -m bob")
	if out, code := b.sh("runuser -u alice -- watchfolder status"); code != 0 {
		t.Errorf("group member: status exit %d\n%s", code, out)
	}
	if out, code := b.sh("runuser -u bob -- watchfolder status"); code == 0 || !strings.Contains(strings.ToLower(out), "permission denied") {
		t.Errorf("non-member: status exit %d, want a refusal\n%s", code, out)
	}

	// A frozen daemon stops answering the watchdog and is restarted.
	pid = b.mainPID()
	b.mustSh(fmt.Sprintf("kill -STOP %d", pid))
	b.await("restart by the watchdog", 30*time.Second, func() bool {
		p := b.mainPID()
		out, _ := b.sh("systemctl is-active watchfolder")
		return p != 0 && p != pid && strings.TrimSpace(out) == "active"
	})
	if j := b.journal(""); !strings.Contains(j, "Watchdog timeout") {
		t.Errorf("the journal does not record a watchdog timeout:\n%s", j)
	}

	// Stop during an upload finishes within TimeoutStopSec; the upload
	// resumes after the next start.
	big := bytes.Repeat([]byte("0123456789abcdef"), 24<<20/16) // 24 MiB at 4 MiB/s
	b.write("/media/ingest/news/big.mp4", string(big))
	var bigID uint64
	b.await("big.mp4 uploading", 30*time.Second, func() bool {
		out, _ := b.sh("watchfolder list --state uploading --json")
		var jobs []struct {
			ID      uint64
			RelPath string
		}
		json.Unmarshal([]byte(out), &jobs)
		for _, j := range jobs {
			if j.RelPath == "big.mp4" {
				bigID = j.ID
			}
		}
		return bigID != 0
	})
	stopAt := time.Now()
	b.mustSh("systemctl stop watchfolder")
	took := time.Since(stopAt)
	limit := b.timeoutStop()
	t.Logf("systemctl stop took %s (TimeoutStopSec %s)", took.Round(time.Millisecond), limit)
	if took >= limit {
		t.Errorf("stop took %s, TimeoutStopSec is %s", took, limit)
	}
	if out, _ := b.sh("systemctl show -p Result watchfolder"); strings.TrimSpace(out) != "Result=success" {
		t.Errorf("after stop: %s", out)
	}
	b.mustSh("systemctl start watchfolder")
	b.await("big.mp4 filed after restart", 90*time.Second, func() bool {
		_, code := b.sh("test -f /media/ingest/news/processed/big.mp4")
		return code == 0
	})
	if got := minio.GetObject(t, "sd-news", "news/big.mp4"); !bytes.Equal(got, big) {
		t.Errorf("object news/big.mp4 differs after resume (%d bytes)", len(got))
	}
	if out, _ := b.sh("watchfolder show --json /media/ingest/news/processed/big.mp4"); !strings.Contains(out, `"state": "done"`) || !strings.Contains(out, fmt.Sprintf(`"id": %d,`, bigID)) {
		t.Errorf("show by filed path: want job %d done:\n%s", bigID, out)
	}
	if !strings.Contains(b.journal(""), "resuming unfinished jobs") {
		t.Error("the restarted daemon did not resume the interrupted job")
	}

	// Upgrades: a service the admin has not enabled is neither restarted
	// nor started; an enabled, running one is restarted; the admin's
	// config is kept.
	reinstall := func() {
		t.Helper()
		if out, code := b.sh("dpkg -i /root/watchfolder.deb"); code != 0 {
			t.Fatalf("dpkg -i (upgrade): exit %d\n%s", code, out)
		}
	}
	pid = b.mainPID()
	reinstall()
	if p := b.mainPID(); p != pid {
		t.Errorf("upgrade restarted a service that is not enabled (pid %d -> %d)", pid, p)
	}
	b.mustSh("systemctl enable watchfolder")
	reinstall()
	b.await("restart of the enabled service on upgrade", 30*time.Second, func() bool {
		p := b.mainPID()
		return p != 0 && p != pid
	})
	b.mustSh("systemctl stop watchfolder")
	reinstall()
	if out, _ := b.sh("systemctl is-active watchfolder"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("upgrade started a stopped service: %s", out)
	}
	if out, _ := b.sh("cat /etc/watchfolder/config.toml"); out != base {
		t.Errorf("upgrade replaced the admin's config:\n%s", out)
	}
	t.Logf("whole test %s", time.Since(started).Round(time.Millisecond))
}

// debianRoot returns the cached root file system, building it the first
// time (scripts/debian-root.sh).
func debianRoot(t *testing.T, repo string) string {
	out, err := exec.Command("bash", filepath.Join(repo, "scripts", "debian-root.sh")).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("debian root: %v\n%s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// buildPackages runs `make package` into a temporary directory, checks
// the .rpm from the outside (rpm is not what the Debian root runs) and
// returns the .deb.
func buildPackages(t *testing.T, repo string) string {
	dist := filepath.Join(t.TempDir(), "dist")
	cmd := exec.Command("make", "-s", "-C", repo, "package", "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dist, "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("make package made %v %v", debs, rpms)
	}
	out, err := exec.Command("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:octal} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]", rpms[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qp: %v\n%s", err, out)
	}
	for _, want := range []string{
		"/etc/watchfolder/config.toml cn 100640 root:watchfolder",
		"/etc/watchfolder  40750 root:watchfolder",
		"/usr/bin/watchfolder  100755 root:root",
		"/usr/lib/systemd/system/watchfolder.service",
		"/usr/share/man/man1/watchfolder.1.gz",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rpm lacks %q:\n%s", want, out)
		}
	}
	scripts, _ := exec.Command("rpm", "-qp", "--scripts", rpms[0]).CombinedOutput()
	for _, want := range []string{"systemd-sysusers", "systemd-tmpfiles", "daemon-reload", "is-enabled"} {
		if !strings.Contains(string(scripts), want) {
			t.Errorf("rpm scriptlets lack %s", want)
		}
	}
	if strings.Contains(string(scripts), "systemctl start") || strings.Contains(string(scripts), "enable --now") {
		t.Errorf("rpm scriptlets start the service:\n%s", scripts)
	}
	return debs[0]
}

// boot starts systemd over an overlay of rootfs (the cache stays clean)
// and waits until it has finished starting up.
func boot(t *testing.T, rootfs string) *box {
	dir := t.TempDir()
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`set -e
mount -t overlay overlay -o lowerdir=%[1]s,upperdir=%[2]s,workdir=%[3]s %[4]s
mount -t proc proc %[4]s/proc
exec chroot %[4]s /lib/systemd/systemd --system`, rootfs, upper, work, merged)
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount", "--propagation", "private", "bash", "-c", script)
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	b := &box{t: t, unshare: cmd, upper: upper}
	t.Cleanup(b.shutdown)
	// systemd is unshare's only child.
	deadline := time.Now().Add(30 * time.Second)
	for b.pid == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("systemd did not start:\n%s", console.String())
		}
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if f := strings.Fields(string(kids)); len(f) == 1 {
			comm, _ := os.ReadFile("/proc/" + f[0] + "/comm")
			if strings.TrimSpace(string(comm)) == "systemd" {
				b.pid, _ = strconv.Atoi(f[0])
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.await("systemd up", 60*time.Second, func() bool {
		out, _ := b.sh("systemctl is-system-running")
		s := strings.TrimSpace(out)
		return s == "running" || s == "degraded"
	})
	return b
}

func (b *box) shutdown() {
	if b.pid != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(b.pid), "-m", "-p", "-r", "-w", "systemctl", "poweroff").Run()
		cancel()
	}
	done := make(chan struct{})
	go func() { b.unshare.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.unshare.Process.Kill()
		if b.pid != 0 {
			// SIGKILL to PID 1 of the namespace ends everything in it.
			exec.Command("kill", "-KILL", strconv.Itoa(b.pid)).Run()
		}
		<-done
	}
}

// sh runs a shell command inside the booted system; output is stdout and
// stderr together.
func (b *box) sh(script string) (string, int) {
	return b.shIn(script, nil)
}

func (b *box) shIn(script string, stdin []byte) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(b.pid), "-m", "-p", "-r", "-w",
		"/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "SYSTEMD_PAGER=", "/bin/sh", "-c", script)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

func (b *box) mustSh(script string) string {
	b.t.Helper()
	out, code := b.sh(script)
	if code != 0 {
		b.t.Fatalf("%s: exit %d\n%s", script, code, out)
	}
	return out
}

// write replaces a file's content in place (its owner and mode stay).
func (b *box) write(path, content string) {
	b.t.Helper()
	if out, code := b.shIn(fmt.Sprintf("cat > '%s'", path), []byte(content)); code != 0 {
		b.t.Fatalf("write %s: exit %d\n%s", path, code, out)
	}
}

func (b *box) copyIn(hostPath, path string, mode os.FileMode) {
	b.t.Helper()
	data, err := os.ReadFile(hostPath)
	if err != nil {
		b.t.Fatal(err)
	}
	b.write(path, string(data))
	b.mustSh(fmt.Sprintf("chmod %o '%s'", mode, path))
}

func (b *box) journal(args string) string {
	out, _ := b.sh("journalctl --no-pager -q -u watchfolder " + args)
	return out
}

func (b *box) mainPID() int {
	out, _ := b.sh("systemctl show -p MainPID --value watchfolder")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

func (b *box) timeoutStop() time.Duration {
	out, _ := b.sh("systemctl show -p TimeoutStopUSec --value watchfolder")
	// systemd spells timespans "1min 30s".
	span := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(out), "min", "m"), " ", "")
	d, err := time.ParseDuration(span)
	if err != nil {
		b.t.Fatalf("TimeoutStopUSec %q: %v", out, err)
	}
	return d
}

// await polls cond until it holds or the deadline passes.
func (b *box) await(what string, limit time.Duration, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s\njournal:\n%s", what, b.journal(""))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
