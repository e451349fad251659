package delta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/storage"
)

// LogDir is the directory of a table's commits.
const LogDir = "_delta_log/"

// CommitName is the name of version v's commit file.
func CommitName(v int64) string { return fmt.Sprintf("%s%020d.json", LogDir, v) }

// ErrConflict is returned (wrapped) when another writer committed a change this commit
// conflicts with: the caller rebuilds its commit from the new snapshot.
var ErrConflict = errors.New("conflicting concurrent commit")

// ErrUnsupported is returned (wrapped) for a table needing protocol features this package lacks.
var ErrUnsupported = errors.New("unsupported table protocol")

// Snapshot is the state of a table at one version. It is immutable: commits return new ones.
type Snapshot struct {
	Version  int64 // -1: the table does not exist yet
	Protocol *Protocol
	Metadata *Metadata
	Files    map[string]*Add    // live data files by path
	Txns     map[string]Txn     // by app id
	Removed  map[string]*Remove // tombstones by FileKey (path and deletion vector), for vacuum
	// CheckpointVersion is the version of the last checkpoint read or written (-1: none).
	CheckpointVersion int64
}

// Empty is the snapshot of a table that does not exist yet.
func Empty() *Snapshot {
	return &Snapshot{Version: -1, Files: map[string]*Add{}, Txns: map[string]Txn{}, Removed: map[string]*Remove{}, CheckpointVersion: -1}
}

// Schema returns the table's schema (nil before the table exists).
func (s *Snapshot) Schema() (*deltatype.StructType, error) {
	if s.Metadata == nil {
		return nil, nil
	}
	return s.Metadata.Schema()
}

// TxnVersion returns the version an application last committed, and whether it committed.
func (s *Snapshot) TxnVersion(appID string) (int64, bool) {
	t, ok := s.Txns[appID]
	return t.Version, ok
}

// Clone returns a copy of the snapshot that later commits do not change.
func (s *Snapshot) Clone() *Snapshot {
	c := *s
	c.Files, c.Txns, c.Removed = maps.Clone(s.Files), maps.Clone(s.Txns), maps.Clone(s.Removed)
	return &c
}

// apply advances the snapshot, in place, by the commit of version v. A snapshot is owned by one
// goroutine: committing and updating change it rather than copy the table's state (the state of
// a large table, or of one with many tombstones, would be copied at every commit); Clone gives a
// copy that stays. A commit that needs a protocol this package lacks leaves it unchanged.
func (s *Snapshot) apply(v int64, actions []Action) error {
	for _, a := range actions {
		if a.Protocol != nil && len(unsupported(a.Protocol)) > 0 {
			return fmt.Errorf("version %d: %w: %s", v, ErrUnsupported, describeProtocol(a.Protocol))
		}
	}
	s.Version = v
	for _, a := range actions {
		switch {
		case a.Protocol != nil:
			s.Protocol = a.Protocol
		case a.MetaData != nil:
			s.Metadata = a.MetaData
		case a.Add != nil:
			s.Files[a.Add.Path] = a.Add
			delete(s.Removed, FileKey(a.Add.Path, a.Add.DeletionVector))
		case a.Remove != nil:
			// Files are keyed by path and deletion vector: a commit changing a file's deletion
			// vector removes the old one and adds the new one, in either order.
			if live, ok := s.Files[a.Remove.Path]; ok && live.DeletionVector.UniqueID() == a.Remove.DeletionVector.UniqueID() {
				delete(s.Files, a.Remove.Path)
			}
			s.Removed[FileKey(a.Remove.Path, a.Remove.DeletionVector)] = a.Remove
		case a.Txn != nil:
			s.Txns[a.Txn.AppID] = *a.Txn
		}
	}
	return nil
}

// pruneTombstones forgets removals older than horizon (Unix ms): vacuum may have deleted their
// files, and checkpoints no longer carry them.
func (s *Snapshot) pruneTombstones(horizon int64) {
	for p, r := range s.Removed {
		if r.DeletionTimestamp < horizon {
			delete(s.Removed, p)
		}
	}
}

// Table reads and commits to one Delta table.
type Table struct {
	Store storage.Store
	// CheckpointInterval writes a checkpoint after every N-th version (0: never). Default: 10.
	CheckpointInterval int64
	// TombstoneRetention: checkpoints drop remove actions older than this (vacuum has deleted
	// their files by then). Default: 7 days.
	TombstoneRetention time.Duration
	// Now is the clock used for timestamps in actions (tests replace it).
	Now func() time.Time
	// Log receives what the table's readers and writers want an operator to know. Default: none.
	Log *slog.Logger

	ckptMu      sync.Mutex
	ckptWG      sync.WaitGroup
	ckptBusy    bool
	ckptNext    *Snapshot // due while one was being written
	ckptVersion int64     // last checkpoint written, -1: none
	ckptErr     error
}

func (t *Table) log() *slog.Logger {
	if t.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Log
}

// NewTable returns the table in store.
func NewTable(store storage.Store) *Table {
	return &Table{Store: store, CheckpointInterval: 10, TombstoneRetention: 7 * 24 * time.Hour, Now: time.Now, ckptVersion: -1}
}

// lastCheckpoint is the _last_checkpoint file.
type lastCheckpoint struct {
	Version int64 `json:"version"`
	Size    int64 `json:"size"`
	Parts   int   `json:"parts,omitempty"`
}

// Snapshot loads the table's latest state: from its last checkpoint, if any, and the commits
// after it.
func (t *Table) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := Empty()
	b, err := t.Store.Read(ctx, LogDir+"_last_checkpoint")
	switch {
	case err == nil:
		var lc lastCheckpoint
		if err := json.Unmarshal(b, &lc); err != nil {
			return nil, fmt.Errorf("%s: _last_checkpoint: %w", t.Store.Location(), err)
		}
		if lc.Parts > 1 {
			return nil, fmt.Errorf("%s: checkpoint %d has %d parts: %w (multi-part checkpoints)", t.Store.Location(), lc.Version, lc.Parts, ErrUnsupported)
		}
		if snap, err = t.readCheckpoint(ctx, lc.Version); errors.Is(err, storage.ErrNotFound) {
			// _last_checkpoint may point at a checkpoint that log cleanup removed (another
			// writer wrote an older one last): use the newest one there is.
			snap, err = t.newestCheckpoint(ctx)
		}
		if err != nil {
			return nil, err
		}
	case !errors.Is(err, storage.ErrNotFound):
		return nil, err
	}
	snap, _, err = t.Update(ctx, snap)
	return snap, err
}

// newestCheckpoint loads the newest single-file checkpoint found by listing the log, or the empty
// snapshot when there is none.
func (t *Table) newestCheckpoint(ctx context.Context) (*Snapshot, error) {
	objs, err := t.Store.List(ctx, LogDir, "")
	if err != nil {
		return nil, err
	}
	newest := int64(-1)
	for _, o := range objs {
		if v, cp, ok := LogFileVersion(o.Name); ok && cp && v > newest {
			newest = v
		}
	}
	if newest < 0 {
		return Empty(), nil
	}
	return t.readCheckpoint(ctx, newest)
}

// Commit is one commit read from the log.
type Commit struct {
	Version int64
	Actions []Action
}

// Update advances snap (in place) past every commit newer than it, and returns it and those
// commits.
func (t *Table) Update(ctx context.Context, snap *Snapshot) (*Snapshot, []Commit, error) {
	objs, err := t.Store.List(ctx, LogDir, CommitName(snap.Version))
	if err != nil {
		return nil, nil, err
	}
	var commits []Commit
	for _, o := range objs {
		v, ok := commitVersion(o.Name)
		if !ok || v <= snap.Version {
			continue
		}
		if v != snap.Version+1 {
			if snap.Version == -1 && len(commits) == 0 {
				return nil, nil, fmt.Errorf("%s: the log starts at version %d without a checkpoint: the table's early commits were removed", t.Store.Location(), v)
			}
			return nil, nil, fmt.Errorf("%s: version %d follows version %d: the log has a gap", t.Store.Location(), v, snap.Version)
		}
		data, err := t.Store.Read(ctx, o.Name)
		if err != nil {
			return nil, nil, err
		}
		actions, err := DecodeCommit(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", t.Store.Location(), o.Name, err)
		}
		if err = snap.apply(v, actions); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", t.Store.Location(), err)
		}
		commits = append(commits, Commit{Version: v, Actions: actions})
	}
	return snap, commits, nil
}

// LogFileVersion parses the version of a file in _delta_log: a commit (N.json), a checkpoint
// (N.checkpoint.parquet, or a part or V2 form of one), a checksum (N.crc). checkpoint reports a
// single-file classic checkpoint, the kind this package reads and writes.
func LogFileVersion(name string) (v int64, checkpoint, ok bool) {
	base, found := strings.CutPrefix(name, LogDir)
	if !found || len(base) < 22 || base[20] != '.' {
		return 0, false, false
	}
	v, err := strconv.ParseInt(base[:20], 10, 64)
	if err != nil {
		return 0, false, false
	}
	return v, base[21:] == "checkpoint.parquet", true
}

// commitVersion parses _delta_log/<20 digits>.json.
func commitVersion(name string) (int64, bool) {
	base, ok := strings.CutPrefix(name, LogDir)
	if !ok || len(base) != 25 || !strings.HasSuffix(base, ".json") {
		return 0, false
	}
	v, err := strconv.ParseInt(base[:20], 10, 64)
	return v, err == nil
}

// Check inspects a commit that won the race for a version, and returns an error wrapping
// ErrConflict if the losing commit may not simply move to the next version.
type Check func(winner Commit) error

// Commit writes actions as the next version after read, retrying at later versions while other
// writers win the race and their commits pass the conflict checks: the built-in ones (a protocol
// or metadata change, a file this commit removes removed again, a txn app id this commit sets set
// again) and check. A commitInfo action is added. It returns the snapshot after the commit: read
// itself, advanced in place (see Snapshot.apply); after an error read may have advanced to a
// later version and is to be reloaded.
//
// Each commit carries a unique id (commitInfo.txnId). When a put-if-absent is refused or fails,
// the commit found at that version may be this one: S3 can apply a PUT whose response is then
// lost, and the SDK's retry of it is refused with 412. A commit that finds its own id there takes
// the version as its own. Commit never deletes data files: after a conflict the caller's files
// stay (vacuum removes those no version references), because a write whose outcome was unknown
// may have landed.
func (t *Table) Commit(ctx context.Context, read *Snapshot, actions []Action, info map[string]any, check Check) (*Snapshot, error) {
	info = maps.Clone(info)
	if info == nil {
		info = map[string]any{}
	}
	id := NewID()
	info["timestamp"] = t.Now().UnixMilli()
	info["engineInfo"] = "ddb2delta-sink"
	info["txnId"] = id
	full := append(actions[:len(actions):len(actions)], Action{CommitInfo: info})
	removes, apps := map[string]bool{}, map[string]bool{}
	changesMeta := false
	for _, a := range actions {
		switch {
		case a.Remove != nil:
			removes[a.Remove.Path] = true
		case a.Txn != nil:
			apps[a.Txn.AppID] = true
		case a.MetaData != nil, a.Protocol != nil:
			changesMeta = true
		}
	}
	for {
		v := read.Version + 1
		delete(info, "readVersion")
		if read.Version >= 0 { // readers parse it as unsigned (delta-rs fails its history on -1)
			info["readVersion"] = read.Version
		}
		data, err := EncodeCommit(full)
		if err != nil {
			return nil, err
		}
		err = t.Store.WriteIfAbsent(ctx, CommitName(v), data)
		if err != nil {
			// Refused or unknown (a timeout, a reset connection): the commit there may be this one.
			if mine, cerr := t.isMine(ctx, v, id); cerr == nil && mine {
				t.log().Info("a commit whose response was lost had succeeded", "table", t.Store.Location(), "version", v, "error", err)
				err = nil
			} else if !errors.Is(err, storage.ErrExists) {
				return nil, fmt.Errorf("committing version %d of %s: %w", v, t.Store.Location(), err)
			}
		}
		if err == nil {
			return t.committed(ctx, read, v, full)
		}
		next, winners, err := t.Update(ctx, read)
		if err != nil {
			return nil, err
		}
		for _, w := range winners {
			for _, a := range w.Actions {
				switch {
				case a.Protocol != nil, a.MetaData != nil:
					return nil, fmt.Errorf("version %d changed the table's protocol or schema: %w", w.Version, ErrConflict)
				case a.Remove != nil && removes[a.Remove.Path]:
					return nil, fmt.Errorf("version %d removed %s too: %w", w.Version, a.Remove.Path, ErrConflict)
				case a.Txn != nil && apps[a.Txn.AppID]:
					return nil, fmt.Errorf("version %d wrote for %s too: %w", w.Version, a.Txn.AppID, ErrConflict)
				}
			}
			if changesMeta && w.Version >= 0 && read.Version < 0 {
				return nil, fmt.Errorf("version %d created the table first: %w", w.Version, ErrConflict)
			}
			if check != nil {
				if err := check(w); err != nil {
					return nil, err
				}
			}
		}
		read = next
	}
}

// committed advances read by this writer's commit of version v. When v is due a checkpoint, it
// drops tombstones past the retention and starts writing the checkpoint in the background (one at
// a time; a checkpoint still being written when the next is due makes that one wait for the one
// after): commits do not wait for checkpoints.
func (t *Table) committed(ctx context.Context, read *Snapshot, v int64, full []Action) (*Snapshot, error) {
	if err := read.apply(v, full); err != nil {
		return nil, err
	}
	if t.CheckpointInterval > 0 && v > 0 && v%t.CheckpointInterval == 0 {
		if r := t.tombstoneRetention(read); r > 0 {
			read.pruneTombstones(t.Now().Add(-r).UnixMilli())
		}
		t.startCheckpoint(ctx, read)
	}
	return read, nil
}

// tombstoneRetention is how long checkpoints keep a removal: the table's
// delta.deletedFileRetentionDuration when it sets one (other engines' vacuums rely on it: a file
// whose tombstone is gone looks like an orphan to them), else TombstoneRetention.
func (t *Table) tombstoneRetention(snap *Snapshot) time.Duration {
	if d, err := IntervalProperty(snap.Metadata, ConfDeletedFileRetention, 0); err == nil && d > 0 {
		return d
	}
	return t.TombstoneRetention
}

// startCheckpoint writes a checkpoint of a copy of snap in the background. While one is being
// written, a newer due one waits for it (the newest replaces an older waiting one). A failure is
// logged and leaves the table as it was: readers replay more commits.
func (t *Table) startCheckpoint(ctx context.Context, snap *Snapshot) {
	t.ckptMu.Lock()
	defer t.ckptMu.Unlock()
	if t.ckptBusy {
		t.ckptNext = snap.Clone()
		return
	}
	t.ckptBusy = true
	first := snap.Clone() // the caller goes on changing snap
	t.ckptWG.Add(1)
	go func() {
		defer t.ckptWG.Done()
		for c := first; c != nil; {
			err := t.WriteCheckpoint(context.WithoutCancel(ctx), c)
			t.ckptMu.Lock()
			if err != nil {
				t.ckptErr = fmt.Errorf("checkpoint of version %d: %w", c.Version, err)
				t.log().Warn("checkpoint failed; readers replay the commits since the previous one", "table", t.Store.Location(), "error", err)
			} else {
				t.ckptVersion, t.ckptErr = c.Version, nil
			}
			c, t.ckptNext = t.ckptNext, nil
			t.ckptBusy = c != nil
			t.ckptMu.Unlock()
		}
	}()
}

// WaitCheckpoint waits for the checkpoint being written, if any, and returns the version of the
// last checkpoint this Table wrote (-1: none) and the error of the last attempt.
func (t *Table) WaitCheckpoint() (int64, error) {
	t.ckptWG.Wait()
	t.ckptMu.Lock()
	defer t.ckptMu.Unlock()
	return t.ckptVersion, t.ckptErr
}

// isMine reports whether version v exists and is the commit with id.
func (t *Table) isMine(ctx context.Context, v int64, id string) (bool, error) {
	data, err := t.Store.Read(ctx, CommitName(v))
	if err != nil {
		return false, err
	}
	actions, err := DecodeCommit(data)
	if err != nil {
		return false, err
	}
	return commitID(Commit{Version: v, Actions: actions}) == id, nil
}

// commitID is a commit's commitInfo.txnId ("" when it has none: another engine's, or an old one).
func commitID(c Commit) string {
	for _, a := range c.Actions {
		if a.CommitInfo != nil {
			s, _ := a.CommitInfo["txnId"].(string)
			return s
		}
	}
	return ""
}
