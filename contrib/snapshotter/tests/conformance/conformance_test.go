// Conformance of a proxy snapshotter binary against containerd's own
// snapshotter test suite (github.com/containerd/containerd/snapshots/testsuite,
// containerd 1.6).
//
// Every test of the suite gets a fresh snapshotter process:
//
//	$SNAPSHOTTER_BIN $SNAPSHOTTER_ARGS ROOT/sock ROOT/state
//
// which must serve containerd's gRPC Snapshots API on the unix socket
// ROOT/sock; the suite talks to it through containerd's proxy client (the
// same client containerd uses for a proxy_plugins entry) and mounts what it
// returns with containerd's mount package (fuse3.* types go through
// /sbin/mount.fuse3).  At the end of the test the process gets SIGTERM and
// must exit with status 0 within 5 seconds (then it is killed).
//
// Environment:
//
//	SNAPSHOTTER_BIN      the binary to test (required)
//	SNAPSHOTTER_ARGS     extra arguments, split on white space, placed
//	                     before the socket path (e.g. "--mount-mode=self")
//	SNAPSHOTTER_PIDFILE  if set, the PID of every process started is
//	                     appended to it, so the caller can kill leftovers
//	SNAPSHOTTER_TIMEOUT  how long to wait for the socket (Go duration,
//	                     default 10s)
//	SNAPSHOTTER_SIGTERM_OK=1  also accept death by the SIGTERM itself (the
//	                     Go containerd-fuse-overlayfs-grpc has no handler);
//	                     the default demands exit status 0
//
// Needs root.  Build and run with ../conformance.sh.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// The name containerd would use for a proxy_plugins entry of this snapshotter;
// it is sent in every request's "snapshotter" field.
const snapshotterName = "fuse-overlayfs"

// unix(7): sun_path holds 108 bytes including the terminating NUL.
const maxSocketPath = 107

// How long the process may take to exit after SIGTERM before SIGKILL.
const termGrace = 5 * time.Second

var (
	shimBin  string
	shimArgs []string
	pidFile  string
	pidMu    sync.Mutex
	startTO  = 10 * time.Second
	termOK   bool
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "conformance: must run as root (the suite mounts the snapshots)")
		os.Exit(2)
	}
	shimBin = os.Getenv("SNAPSHOTTER_BIN")
	if shimBin == "" {
		fmt.Fprintln(os.Stderr, "conformance: SNAPSHOTTER_BIN is not set")
		os.Exit(2)
	}
	abs, err := filepath.Abs(shimBin)
	if err == nil {
		shimBin = abs
	}
	if st, err := os.Stat(shimBin); err != nil || st.IsDir() || st.Mode()&0111 == 0 {
		fmt.Fprintf(os.Stderr, "conformance: SNAPSHOTTER_BIN=%s is not an executable file (%v)\n", shimBin, err)
		os.Exit(2)
	}
	shimArgs = strings.Fields(os.Getenv("SNAPSHOTTER_ARGS"))
	pidFile = os.Getenv("SNAPSHOTTER_PIDFILE")
	termOK = os.Getenv("SNAPSHOTTER_SIGTERM_OK") == "1"
	if s := os.Getenv("SNAPSHOTTER_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "conformance: bad SNAPSHOTTER_TIMEOUT %q\n", s)
			os.Exit(2)
		}
		startTO = d
	}
	os.Exit(m.Run())
}

func TestFuseOverlayfs(t *testing.T) {
	testsuite.SnapshotterSuite(t, "FuseOverlayfs", newSnapshotter)
}

// shim is one snapshotter process.
type shim struct {
	cmd     *exec.Cmd
	stderr  string // file holding its stdout and stderr
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

func (s *shim) output() string {
	b, err := os.ReadFile(s.stderr)
	if err != nil {
		return fmt.Sprintf("<cannot read %s: %v>", s.stderr, err)
	}
	out := strings.TrimRight(string(b), "\n")
	const max = 16 << 10
	if len(out) > max {
		out = "...\n" + out[len(out)-max:]
	}
	if out == "" {
		return "<empty>"
	}
	return out
}

func (s *shim) describe() string {
	return fmt.Sprintf("%s (pid %d)", strings.Join(s.cmd.Args, " "), s.cmd.Process.Pid)
}

// stop sends SIGTERM, waits termGrace, then SIGKILL; the process must have
// exited with status 0 on its own.
func (s *shim) stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s had exited before the end of the test: %v; output:\n%s", s.describe(), exitText(s.waitErr), s.output())
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM to %s: %w", s.describe(), err)
	}
	select {
	case <-s.exited:
	case <-time.After(termGrace):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("%s did not exit within %v of SIGTERM (killed); output:\n%s", s.describe(), termGrace, s.output())
	}
	if s.waitErr != nil && !(termOK && diedOf(s.waitErr, syscall.SIGTERM)) {
		return fmt.Errorf("%s after SIGTERM: %v (want exit status 0); output:\n%s", s.describe(), exitText(s.waitErr), s.output())
	}
	return nil
}

func diedOf(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws, ok := ee.Sys().(syscall.WaitStatus)
		return ok && ws.Signaled() && ws.Signal() == sig
	}
	return false
}

// kill ends the process if it still runs, whatever its exit status.
func (s *shim) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(termGrace):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
	}
	return err.Error()
}

func recordPID(pid int) {
	if pidFile == "" {
		return
	}
	pidMu.Lock()
	defer pidMu.Unlock()
	f, err := os.OpenFile(pidFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: cannot record pid %d in %s: %v\n", pid, pidFile, err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, strconv.Itoa(pid))
}

func startShim(root string) (*shim, string, error) {
	sock := filepath.Join(root, "sock")
	state := filepath.Join(root, "state")
	if len(sock) > maxSocketPath {
		return nil, "", fmt.Errorf("socket path %s is longer than %d bytes: use a shorter TMPDIR", sock, maxSocketPath)
	}
	logf, err := os.CreateTemp(filepath.Dir(root), "shim-output-")
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()

	args := append(append([]string{}, shimArgs...), sock, state)
	cmd := exec.Command(shimBin, args...)
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Dies with the test binary even if that one is killed.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("cannot start %s: %w", shimBin, err)
	}
	recordPID(cmd.Process.Pid)
	s := &shim{cmd: cmd, stderr: logf.Name(), exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return s, sock, nil
}

// waitSocket waits until something accepts connections on sock.
func (s *shim) waitSocket(sock string) error {
	deadline := time.Now().Add(startTO)
	var lastErr error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before accepting on %s: %v; output:\n%s", s.describe(), sock, exitText(s.waitErr), s.output())
		default:
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept on %s after %v (last error: %v); output:\n%s", s.describe(), sock, startTO, lastErr, s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newSnapshotter is the testsuite.SnapshotterFunc: one process per test.
func newSnapshotter(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	s, sock, err := startShim(root)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (snapshots.Snapshotter, func() error, error) {
		s.kill()
		return nil, nil, err
	}
	if err := s.waitSocket(sock); err != nil {
		return fail(err)
	}

	dctx, cancel := context.WithTimeout(ctx, startTO)
	defer cancel()
	// The dial options containerd 1.6 uses for a proxy_plugins entry
	// (services/server: proxyClients.getClient), plus WithBlock to fail here.
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	conn, err := grpc.DialContext(dctx, dialer.DialAddress(sock),
		grpc.WithInsecure(),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
		grpc.WithBlock())
	if err != nil {
		return fail(fmt.Errorf("grpc dial %s: %w; output of %s:\n%s", sock, err, s.describe(), s.output()))
	}

	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotterName)
	cleanup := func() error {
		var errs []string
		if err := conn.Close(); err != nil {
			errs = append(errs, "closing the grpc connection: "+err.Error())
		}
		stopErr := s.stop()
		// In self-mount mode the shim leaves its overlays mounted when it exits
		// (containers may be using them; a restart finds them live), and the
		// suite then deletes the whole root: unmount them, deepest first.
		left := mountsUnder(root)
		for i := len(left) - 1; i >= 0; i-- {
			if err := syscall.Unmount(left[i], syscall.MNT_DETACH); err != nil {
				errs = append(errs, "unmounting "+left[i]+": "+err.Error())
			}
		}
		if err := stopErr; err != nil {
			errs = append(errs, err.Error())
		} else if out := s.output(); out != "<empty>" {
			// With -test.v (or when the test failed) this shows in the log.
			log.G(ctx).Infof("output of %s:", s.describe())
			for _, l := range strings.Split(out, "\n") {
				log.G(ctx).Info("| " + l)
			}
		}
		if len(errs) > 0 {
			return errors.New(strings.Join(errs, "; "))
		}
		return nil
	}
	return sn, cleanup, nil
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"<cannot read /proc/self/mountinfo: " + err.Error() + ">"}
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	return found
}

// unescapeMountinfo undoes the \ooo octal escapes of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
