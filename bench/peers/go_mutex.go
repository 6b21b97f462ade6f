// mutex (tern's workload, see bench/run.sh): a root goroutine starts T
// goroutines that each increment one shared plain counter I times under one
// sync.Mutex (lock, increment, unlock per iteration); main waits for them.
//
//	mutex [--workers N] [T] [I]
//
// GOMAXPROCS is --workers (default 2). One op = one Lock + Unlock.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "error:", msg)
	fmt.Fprintln(os.Stderr, "usage: mutex [--workers N] [T] [I]")
	os.Exit(2)
}

func positive(s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		usage(fmt.Sprintf("bad argument %q", s))
	}
	return v
}

func main() {
	workers := int64(2)
	sizes := []int64{100, 10000} // T, I
	npos := 0
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--workers":
			if i+1 >= len(args) {
				usage("--workers needs a value")
			}
			i++
			workers = positive(args[i])
		case strings.HasPrefix(a, "--workers="):
			workers = positive(strings.TrimPrefix(a, "--workers="))
		default:
			if npos >= len(sizes) {
				usage(fmt.Sprintf("unexpected argument %q", a))
			}
			sizes[npos] = positive(a)
			npos++
		}
	}
	t, iters := sizes[0], sizes[1]
	if iters > (1<<63-1)/t {
		usage("T*I does not fit in 63 bits")
	}
	runtime.GOMAXPROCS(int(workers))

	var mu sync.Mutex
	var counter int64 // guarded by mu only
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(int(t))
	go func() {
		for j := int64(0); j < t; j++ {
			go func() {
				for k := int64(0); k < iters; k++ {
					mu.Lock()
					counter++
					mu.Unlock()
				}
				wg.Done()
			}()
		}
	}()
	wg.Wait()
	el := time.Since(start)

	mu.Lock()
	end := counter
	mu.Unlock()
	if end != t*iters {
		fmt.Fprintln(os.Stderr, "error: verification failed: counter == T*I (no increment lost)")
		os.Exit(1)
	}
	secs := el.Seconds()
	n := t * iters
	fmt.Printf("RESULT workload=mutex runtime=go n=%d secs=%.6f per_op_ns=%.2f ops_per_s=%.0f\n",
		n, secs, secs*1e9/float64(n), float64(n)/secs)
}
