// Command dcstore-ferretdb runs an embedded FerretDB v1 (SQLite handler) for dcstore's tests.
//
// It listens on one loopback TCP address, keeps its SQLite files in -dir, never sends
// telemetry (the embedded package disables it), and exits cleanly on SIGINT/SIGTERM.
// SQLite runs in WAL mode (FerretDB's default) with synchronous=normal (acknowledged
// writes survive a crash of this process) and a long busy timeout, so concurrent
// writers on a slow shared machine wait for the lock instead of failing.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "", "directory for the SQLite databases (created if missing)")
	level := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	busy := flag.Int("busy-timeout-ms", 60000, "SQLite busy timeout: how long a write waits for the lock")
	sync := flag.String("synchronous", "normal", "SQLite synchronous mode (WAL): normal survives process crashes, full also power loss")
	flag.Parse()

	if *dir == "" {
		fmt.Fprintln(os.Stderr, "-dir is required")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err = os.MkdirAll(abs, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}

	var lvl slog.Level
	if err = lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: fmt.Sprintf("file:%s/?_pragma=busy_timeout(%d)&_pragma=synchronous(%s)", abs, *busy, *sync),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(os.Stderr, "dcstore-ferretdb listening on %s, data in %s\n", *listen, abs)
	if err = f.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
