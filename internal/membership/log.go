package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// logWriter turns the "[LEVEL] component: message" lines that serf and
// memberlist print through a *log.Logger into slog records at that level.
type logWriter struct {
	logger *slog.Logger
}

func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(logWriter{logger: l}, "", 0)
}

var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	for _, lp := range levelPrefixes {
		if bytes.HasPrefix(line, []byte(lp.prefix)) {
			level = lp.level
			line = bytes.TrimLeft(line[len(lp.prefix):], " ")
			break
		}
	}
	ctx := context.Background()
	if w.logger.Enabled(ctx, level) {
		w.logger.Log(ctx, level, string(line))
	}
	return len(p), nil
}
