package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"golang.org/x/sys/unix"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// Problem classes reported by the checks below; watchfolder doctor turns
// each into its own exit-code bit.
const (
	ClassFolder      = "folder"      // a watched folder is missing, not a directory, not writable
	ClassSystem      = "system"      // inotify limits, writer probe, file system kind
	ClassDestination = "destination" // credentials, region, bucket, write permission
)

// Problem is one finding of a check. Fatal problems stop `run`; the others
// are warnings (the daemon copes, e.g. by retrying).
type Problem struct {
	Class   string `json:"class"`
	Subject string `json:"subject"` // folder or destination name
	Message string `json:"message"`
	Fatal   bool   `json:"fatal"`
}

func (p Problem) String() string { return p.Subject + ": " + p.Message }

// Preflight runs the start-up checks that must hold before the daemon
// tells systemd it is ready: every folder exists (a typo must not make an
// empty folder that is watched instead of the real one) and every S3
// store accepts the credentials and region. Problems that may clear by
// themselves (store unreachable, bucket not there yet) are logged only.
func Preflight(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	probs := CheckFolders(cfg, nil)
	probs = append(probs, CheckDestinations(ctx, cfg, false)...)
	var fatal []string
	for _, p := range probs {
		if p.Fatal {
			fatal = append(fatal, p.String())
			continue
		}
		log.Warn("start-up check", "subject", p.Subject, "problem", p.Message)
	}
	if len(fatal) > 0 {
		return fmt.Errorf("start-up checks failed:\n  %s", strings.Join(fatal, "\n  "))
	}
	return nil
}

// ServiceUser identifies whose access CheckFolders judges (the account the
// unit runs as). Nil: the current process.
type ServiceUser struct {
	Name string
	UID  uint32
	GIDs []uint32 // primary group first
}

// CheckFolders checks that each folder exists and is a directory and, for
// a known service user, that it can write there.
func CheckFolders(cfg *config.Config, u *ServiceUser) []Problem {
	var out []Problem
	for _, f := range cfg.Folders {
		subj := "folder " + f.Name
		fi, err := os.Stat(f.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, Problem{ClassFolder, subj, fmt.Sprintf("path %s does not exist; create it (watchfolder never creates a watched folder) or fix the path", f.Path), true})
			continue
		case err != nil:
			out = append(out, Problem{ClassFolder, subj, err.Error(), true})
			continue
		case !fi.IsDir():
			out = append(out, Problem{ClassFolder, subj, fmt.Sprintf("path %s is not a directory", f.Path), true})
			continue
		}
		if u != nil && !canWrite(fi, u) {
			out = append(out, Problem{ClassFolder, subj, fmt.Sprintf("user %s cannot write %s (%s %d:%d); make the folder writable by its group and add %s to that group",
				u.Name, f.Path, fi.Mode().Perm(), statUID(fi), statGID(fi), u.Name), true})
		}
	}
	return out
}

func statUID(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		return st.Uid
	}
	return 0
}

func statGID(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		return st.Gid
	}
	return 0
}

// canWrite applies the permission bits (write and search) as the kernel
// would for u; ACLs are not looked at.
func canWrite(fi fs.FileInfo, u *ServiceUser) bool {
	if u.UID == 0 {
		return true
	}
	m := fi.Mode().Perm()
	if statUID(fi) == u.UID {
		return m&0o300 == 0o300
	}
	for _, g := range u.GIDs {
		if statGID(fi) == g {
			return m&0o030 == 0o030
		}
	}
	return m&0o003 == 0o003
}

// Linux file system magic numbers (statfs(2)) where inotify sees only
// changes made through this host: files written by other NFS/SMB clients
// or through FUSE are found by the periodic rescan only.
var remoteFS = map[int64]string{
	0x6969:     "nfs",
	0xff534d42: "cifs",
	0xfe534d42: "smb2",
	0x517b:     "smb",
	0x65735546: "fuse",
	0x01021997: "9p",
	0x5346414f: "afs",
	0x47504653: "gpfs",
	0x0bd00bd0: "lustre",
	0x00c36400: "ceph",
}

// CheckSystem checks what the kernel must allow for each folder: a file
// system where inotify sees the editors' writes, enough inotify watches
// for its directory tree, and the writer probe (a read lease).
func CheckSystem(cfg *config.Config) []Problem {
	var out []Problem
	dirs := 0
	for _, f := range cfg.Folders {
		subj := "folder " + f.Name
		var sfs unix.Statfs_t
		if err := unix.Statfs(f.Path, &sfs); err != nil {
			continue // CheckFolders reports a missing folder
		}
		if name, ok := remoteFS[int64(sfs.Type)]; ok {
			out = append(out, Problem{ClassSystem, subj, fmt.Sprintf("%s is on %s: inotify does not see files other clients write there; only the rescan (rescan_interval) finds them. Watch the folder on the server that exports it.", f.Path, name), false})
		}
		filepath.WalkDir(f.Path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() {
				if p == f.ProcessedDir || p == f.FailedDir {
					return filepath.SkipDir
				}
				dirs++
			}
			return nil
		})
		if err := probeLease(f.Path); err != nil {
			out = append(out, Problem{ClassSystem, subj, fmt.Sprintf("the writer probe (read lease) does not work in %s: %v; files are judged finished by stable_after alone", f.Path, err), false})
		}
	}
	if max, err := readInt("/proc/sys/fs/inotify/max_user_watches"); err == nil && dirs > 0 {
		// Other programs of the same user need watches too: want headroom.
		if int64(dirs)*2 > max {
			out = append(out, Problem{ClassSystem, "inotify", fmt.Sprintf("the folders hold %d directories but fs.inotify.max_user_watches is %d; raise it (sysctl -w fs.inotify.max_user_watches=%d, and in /etc/sysctl.d/)", dirs, max, roundUp(int64(dirs)*4)), true})
		}
	}
	return out
}

func roundUp(n int64) int64 {
	const step = 65536
	return (n + step - 1) / step * step
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// probeLease takes and releases a read lease on a scratch file in dir, as
// the watcher does on files it judges.
func probeLease(dir string) error {
	f, err := os.CreateTemp(dir, ".watchfolder-probe-*")
	if err != nil {
		return fmt.Errorf("create a probe file: %w", err)
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	r, err := os.Open(name)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		return err
	}
	_, err = unix.FcntlInt(r.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
	return err
}

// tokenChecked is a destination that can ask its platform's API whether
// its token is accepted (a cheap authenticated read). Platforms that
// implement it are checked by doctor.
type tokenChecked interface {
	CheckToken(ctx context.Context) error
}

// s3Backed is a destination that delivers through an S3 engine of its
// own (plain S3; platforms that ingest from a bucket may expose theirs).
type s3Backed interface{ S3() *s3engine.S3 }

// CheckDestinations builds each destination as the daemon would and asks
// each S3 store whether it takes the credentials and region, with a read
// of an object that does not exist (its error code tells bad credentials
// from a missing permission, which HEAD cannot say). With write, it also
// puts and removes a small probe object.
func CheckDestinations(ctx context.Context, cfg *config.Config, write bool) []Problem {
	quiet := slog.New(slog.DiscardHandler)
	var (
		mu  sync.Mutex
		out []Problem
		wg  sync.WaitGroup
	)
	add := func(p ...Problem) {
		mu.Lock()
		out = append(out, p...)
		mu.Unlock()
	}
	// Side by side: a start must not wait for one slow store after another.
	for name, dc := range cfg.Destinations {
		if dc.Settings == nil {
			continue // config reports unknown types
		}
		wg.Go(func() {
			subj := "destination " + name
			d, err := dc.Settings.Build(ctx, uploader.BuildEnv{Name: name, Logger: quiet, APIClient: &http.Client{Timeout: 30 * time.Second}})
			if err != nil {
				add(Problem{ClassDestination, subj, err.Error(), true})
				return
			}
			if sb, ok := d.(s3Backed); ok {
				eng := sb.S3()
				add(probeBucket(ctx, subj, eng.Bucket(), eng.Client(), write)...)
			}
			if tc, ok := d.(tokenChecked); ok && write {
				tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				if err := tc.CheckToken(tctx); err != nil {
					add(Problem{ClassDestination, subj, "the platform refuses the API token: " + err.Error(), true})
				}
				cancel()
			}
		})
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Subject < out[j].Subject })
	return out
}

func probeBucket(ctx context.Context, subj, bucket string, c *s3.Client, write bool) []Problem {
	// One try, bounded: an unreachable store is only a warning and must
	// not hold the start up (the uploads retry on their own).
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	once := func(o *s3.Options) { o.RetryMaxAttempts = 1 }
	key := fmt.Sprintf(".watchfolder-probe-%d", time.Now().UnixNano())
	_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}, once)
	if p, done := classify(subj, bucket, err); done {
		return p
	}
	if !write {
		return nil
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader([]byte("watchfolder doctor probe; safe to delete\n"))}); err != nil {
		return []Problem{{ClassDestination, subj, fmt.Sprintf("bucket %s refuses a write: %s", bucket, describe(err)), true}}
	}
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		return []Problem{{ClassDestination, subj, fmt.Sprintf("bucket %s: could not remove the probe object %s: %s", bucket, key, describe(err)), false}}
	}
	return nil
}

// classify sorts the answer to the probe read. done false means the
// credentials and region were accepted (the object is simply not there,
// or reading is not allowed, which delivery does not need).
func classify(subj, bucket string, err error) ([]Problem, bool) {
	if err == nil {
		return nil, false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "AccessDenied", "Forbidden":
			return nil, false
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "InvalidClientTokenId":
			return []Problem{{ClassDestination, subj, fmt.Sprintf("the store refuses the credentials (%s); check access_key_id/secret_access_key or the credential chain", ae.ErrorCode()), true}}, true
		case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException", "InvalidRegion":
			msg := fmt.Sprintf("bucket %s is in another region (%s)", bucket, ae.ErrorCode())
			if r := bucketRegion(err); r != "" {
				msg = fmt.Sprintf("bucket %s is in region %s; set region = %q or leave region empty", bucket, r, r)
			}
			return []Problem{{ClassDestination, subj, msg, true}}, true
		case "NoSuchBucket":
			return []Problem{{ClassDestination, subj, fmt.Sprintf("bucket %s does not exist; uploads fail until it is created", bucket), false}}, true
		}
	}
	if r := bucketRegion(err); r != "" {
		return []Problem{{ClassDestination, subj, fmt.Sprintf("bucket %s is in region %s; set region = %q or leave region empty", bucket, r, r), true}}, true
	}
	if !errors.As(err, &ae) && strings.Contains(err.Error(), "credentials") {
		return []Problem{{ClassDestination, subj, "no credentials found: set access_key_id/secret_access_key, a profile, or the AWS environment variables for the service", true}}, true
	}
	// Network trouble may clear by itself: the uploads retry.
	return []Problem{{ClassDestination, subj, fmt.Sprintf("bucket %s could not be checked: %s", bucket, describe(err)), false}}, true
}

// bucketRegion is the region S3 names in its answer, if any.
func bucketRegion(err error) string {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

// describe shortens an SDK error to its code and message; the SDK never
// puts secrets in these.
func describe(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	return err.Error()
}
