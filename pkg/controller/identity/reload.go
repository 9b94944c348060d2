package identity

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// WatchIssuer re-reads the issuer directory (and anchors file) every
// interval until ctx is done, and calls set with the new issuer whenever the
// files changed and still form a valid issuer — a rotated Secret takes effect
// without a restart. An invalid new issuer is logged and the old one kept.
func WatchIssuer(ctx context.Context, dir, anchorsFile string, interval time.Duration, set func(*Issuer), log *slog.Logger) {
	if anchorsFile == "" {
		anchorsFile = filepath.Join(dir, "ca.crt")
	}
	files := []string{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), anchorsFile}
	read := func() []byte {
		var all []byte
		for _, f := range files {
			b, _ := os.ReadFile(f)
			all = append(append(all, b...), 0)
		}
		return all
	}
	last, lastBad := read(), []byte(nil)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := read()
		if bytes.Equal(cur, last) || bytes.Equal(cur, lastBad) {
			continue
		}
		is, err := LoadIssuer(dir, anchorsFile, time.Now())
		if err != nil {
			// Secret volumes update their files one by one: this may be a
			// moment between two of them, so look again when they change.
			log.Warn("keeping the current issuer", "err", err)
			lastBad = cur
			continue
		}
		last = cur
		set(is)
		log.Info("issuer reloaded", "dir", dir, "not_after", is.NotAfter().UTC().Format(time.RFC3339))
	}
}
