// sdp-launch: a Go service's container is started while its commit still builds; this
// waits for the binary to appear (the build's atomic rename into the mounted build folder),
// then runs the service's command in its own place (exec: same process, same PID).
//
// Usage: sdp-launch BINARY TIMEOUT_SECONDS COMMAND [ARG...]
//
// Exit codes: 64 bad usage, 75 the binary did not appear in time, 127 the command cannot be
// run. Built by the agent (sdp_node/launcher.py) with the node's Go; it uses only the
// standard library, so it runs in any image.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func ready(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular()
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: sdp-launch BINARY TIMEOUT_SECONDS COMMAND [ARG...]")
		os.Exit(64)
	}
	binary, command := os.Args[1], os.Args[3:]
	seconds, err := strconv.Atoi(os.Args[2])
	if err != nil || seconds <= 0 {
		fmt.Fprintf(os.Stderr, "sdp-launch: TIMEOUT_SECONDS must be a positive number, not %q\n", os.Args[2])
		os.Exit(64)
	}
	if !ready(binary) {
		go func() {
			time.Sleep(time.Duration(seconds) * time.Second)
			fmt.Fprintf(os.Stderr, "sdp-launch: %s did not appear within %ds (its build failed or was stopped)\n", binary, seconds)
			os.Exit(75)
		}()
		// The watch is set before the look that follows it, so a rename between the two is
		// not missed; without inotify, look every 10 ms.
		fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
		if err == nil {
			_, err = syscall.InotifyAddWatch(fd, filepath.Dir(binary),
				syscall.IN_MOVED_TO|syscall.IN_CREATE|syscall.IN_CLOSE_WRITE|syscall.IN_ATTRIB)
		}
		buffer := make([]byte, 4096)
		for !ready(binary) {
			if err != nil {
				time.Sleep(10 * time.Millisecond)
			} else if _, readErr := syscall.Read(fd, buffer); readErr != nil && readErr != syscall.EINTR {
				err = readErr
			}
		}
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
	path, err := exec.LookPath(command[0])
	if err == nil {
		err = syscall.Exec(path, command, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "sdp-launch: cannot run %s: %v\n", command[0], err)
	os.Exit(127)
}
