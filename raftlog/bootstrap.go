package raftlog

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// The data directory:
//
//	DIR/LOCK                        held (flock) while a server uses DIR
//	DIR/wal/                        raft-wal: the log and raft's stable state
//	DIR/wal/wal-meta.db             raft-wal's segment index (bbolt)
//	DIR/wal/NNN-NNN.wal             log segments
//	DIR/snapshots/TERM-INDEX-MS/    FSM snapshots: meta.json, state.bin
type dirLayout struct {
	lock, wal, snapshots string
}

func layout(dir string) dirLayout {
	return dirLayout{
		lock:      filepath.Join(dir, "LOCK"),
		wal:       filepath.Join(dir, "wal"),
		snapshots: filepath.Join(dir, "snapshots"),
	}
}

func snapshotFile(dir, id string) string { return filepath.Join(dir, id, "state.bin") }

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return nil
}

// lockDir takes an exclusive lock on DIR/LOCK, so that a second server on
// the same directory fails at once instead of waiting forever on the log
// store's own lock. The lock goes with the process.
func lockDir(dir string) (func() error, error) {
	path := layout(dir).lock
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another process (lock %s)", dir, path)
		}
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	return f.Close, nil
}

// newHistoryID returns 16 random bytes as 32 lowercase hex characters.
func newHistoryID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("history id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// segmentOf names the raft-wal segment file holding log index idx: the one
// with the highest base index at or below it (files are named
// BASEINDEX-ID.wal, both zero-padded).
func segmentOf(dir string, idx uint64) string {
	if dir == "" {
		return "(memory)"
	}
	files, _ := filepath.Glob(filepath.Join(layout(dir).wal, "*.wal"))
	best := ""
	for _, f := range files {
		var base, id uint64
		if _, err := fmt.Sscanf(filepath.Base(f), "%020d-%016x.wal", &base, &id); err != nil || base > idx {
			continue
		}
		if best == "" || f > best {
			best = f
		}
	}
	if best == "" {
		return layout(dir).wal
	}
	return best
}
