// Package early sets up the Go runtime for a process that lives for a few
// milliseconds. berth-cni imports it first so that its init runs before
// the inits of the heavier packages (Go initialises packages in import-path
// order once their dependencies are done, and this one depends only on
// runtime).
//
// On the VMs the benchmarks run on a page fault costs ~19 µs and a thread
// switch is expensive, so an exec's cost is mostly the pages it touches:
//
//   - One P. With two, the main goroutine comes back on the other P after
//     it blocks (on the ipamd socket) and allocates from that P's
//     cache: fresh spans for every size class it uses again. ADD touched
//     317–411 pages (median 365) with two Ps and 317–346 (median 328) with
//     one, set here; GOMAXPROCS=1 in the environment would be 305–324, but
//     the runtime has made the second P before any init runs.
//   - The main goroutine's stack at 16 KiB before the other inits run.
//     Every command outgrows the first 8 KiB (the CNI library's regexp
//     compiles in an init, JSON decoding recurses); growing later copies a
//     deeper stack and unwinds it through the pclntab. Counted under perf,
//     median of 24 ADDs and 10 VERSIONs: ADD 290 → 270 page faults,
//     VERSION 258 → 239; growing to 32 or 64 KiB here saved less (278,
//     285 for ADD).
//
// No command uses a netlink library in the plugin (ipamd does the kernel
// work; the DEL without ipamd uses cni-plugin/internal/rtnl, whose buffer
// is on the heap), so nothing needs a deeper stack at once.
package early

import "runtime"

func init() {
	runtime.GOMAXPROCS(1)
	grow16()
}

// grow16 has a frame that does not fit in the first 8 KiB stack and does
// in 16 KiB.
//
//go:noinline
func grow16() byte {
	var b [12 << 10]byte
	return last(b[:])
}

// last keeps b (and so the frame) from being optimised away.
//
//go:noinline
func last(b []byte) byte { return b[len(b)-1] }
