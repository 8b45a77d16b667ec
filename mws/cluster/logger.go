package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// slogWriter adapts memberlist's *log.Logger output to slog. log.Logger
// calls Write once per message. Memberlist's chatter (DEBUG, INFO, WARN)
// goes to debug level; its ERR lines (a peer with another key, address
// conflicts) need an operator and go to warn.
type slogWriter struct{ l *slog.Logger }

func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelDebug
	for _, pre := range []struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG] ", slog.LevelDebug},
		{"[INFO] ", slog.LevelDebug},
		{"[WARN] ", slog.LevelDebug},
		{"[ERR] ", slog.LevelWarn},
	} {
		if rest, ok := bytes.CutPrefix(msg, []byte(pre.tag)); ok {
			msg, level = rest, pre.level
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	w.l.Log(context.Background(), level, "memberlist: "+string(msg))
	return len(p), nil
}
