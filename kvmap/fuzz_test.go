package kvmap

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

func slicesSort(s []string) { slices.Sort(s) }

// FuzzMap drives a Map and a plain Go map with the same operations (sets
// of varied sizes, deletes, views, compactions, Clear, range scans) and
// checks after each step that they agree, and that every view taken still
// equals the model as it was when the view was taken.
func FuzzMap(f *testing.F) {
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07"))
	f.Add([]byte("\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xe0\xf0\xff"))
	f.Add(make([]byte, 300))
	f.Fuzz(func(t *testing.T, ops []byte) {
		m := New()
		model := map[string]string{}
		type snap struct {
			v     *View
			model map[string]string
		}
		var views []snap
		key := func(b byte) string { return fmt.Sprintf("/%d/%d", b%4, b%29) }
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			k := key(arg)
			switch op % 8 {
			case 0, 1, 2: // set, sometimes a big value that gets a slab of its own
				n := int(op) * 3
				if op%16 == 1 {
					n = ownSlab + int(arg)
				}
				v := fmt.Sprintf("%d:%d:%s", i, n, make([]byte, n))
				m.Apply(msg(k, v, int64(i)))
				model[k] = v
			case 3, 4: // delete, by Delete or by an empty body
				if op%2 == 0 {
					m.Delete([]byte(k))
				} else {
					m.Apply(msg(k, "", int64(i)))
				}
				delete(model, k)
			case 5:
				views = append(views, snap{m.View(), maps.Clone(model)})
				if len(views) > 4 {
					views = views[1:]
				}
			case 6:
				m.Compact()
			case 7:
				switch {
				case arg%8 == 1, arg%8 == 2: // a bulk set or delete of 300 keys: splits and merges nodes
					for j := range 300 {
						bk := fmt.Sprintf("%s/%03d", k, j)
						if arg%8 == 1 {
							v := fmt.Sprintf("bulk %d %d", i, j)
							m.Apply(msg(bk, v, int64(i)))
							model[bk] = v
						} else {
							m.Delete([]byte(bk))
							delete(model, bk)
						}
					}
				case arg == 0:
					m.Clear()
					clear(model)
				default:
					checkView(t, m.View(), model, fmt.Sprintf("/%d/", arg%4))
				}
			}
			if e, ok := m.Get([]byte(k)); ok != (model[k] != "") || string(e.Body()) != model[k] {
				t.Fatalf("op %d: Get %q = %q %v, model %q", i, k, e.Body(), ok, model[k])
			}
		}
		checkMap(t, m, model)
		for _, s := range views {
			checkView(t, s.v, s.model, "")
		}
		st := m.Stats()
		live := 0
		for k, v := range model {
			live += recordSize(msg(k, v, 0), 0)
		}
		if st.Keys != len(model) || st.LiveBytes < live || st.LiveBytes > live+len(model)*20 || st.SlabBytes < st.LiveBytes {
			t.Fatalf("stats %+v for %d keys of %d bytes", st, len(model), live)
		}
	})
}
