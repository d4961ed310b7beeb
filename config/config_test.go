package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type settings struct {
	bind   string
	port   int
	hugz   time.Duration
	pprof  bool
	file   string
	print  bool
	config string
}

func newFlags(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&s.bind, "bind", "*", "")
	fs.IntVar(&s.port, "port", 5556, "")
	fs.DurationVar(&s.hugz, "hugz", time.Second, "")
	fs.BoolVar(&s.pprof, "pprof", false, "")
	fs.StringVar(&s.file, "key-file", "", "")
	fs.BoolVar(&s.print, "print-config", false, "")
	fs.StringVar(&s.config, "config", "", "")
	return fs
}

func testLoader(files map[string]string) Loader {
	return Loader{EnvPrefix: "CLONEKV_", FileFlag: "config", Meta: []string{"print-config"}, IgnoreEnv: []string{"CLONEKV_SERVER"},
		ReadFile: func(p string) ([]byte, error) {
			if s, ok := files[p]; ok {
				return []byte(s), nil
			}
			return nil, os.ErrNotExist
		}}
}

// TestPrecedence: flag > env > file > default, key by key, and each
// value's origin.
func TestPrecedence(t *testing.T) {
	files := map[string]string{
		"a.toml": "bind = \"10.0.0.1\"\nport = 7000\nhugz = \"5s\"\npprof = true\n",
		"b.toml": "port = 8000\n",
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		want    settings
		origins map[string]string
	}{
		{"defaults", nil, nil,
			settings{bind: "*", port: 5556, hugz: time.Second},
			map[string]string{"bind": "default", "port": "default"}},
		{"file over default", []string{"--config", "a.toml"}, nil,
			settings{bind: "10.0.0.1", port: 7000, hugz: 5 * time.Second, pprof: true, config: "a.toml"},
			map[string]string{"bind": "file a.toml", "hugz": "file a.toml", "pprof": "file a.toml"}},
		{"env over file", []string{"--config", "a.toml"}, []string{"CLONEKV_PORT=7100", "CLONEKV_HUGZ=250ms", "OTHER_PORT=1"},
			settings{bind: "10.0.0.1", port: 7100, hugz: 250 * time.Millisecond, pprof: true, config: "a.toml"},
			map[string]string{"port": "env CLONEKV_PORT", "hugz": "env CLONEKV_HUGZ", "bind": "file a.toml"}},
		{"flag over env over file", []string{"--config", "a.toml", "--port", "7200", "--pprof=false"}, []string{"CLONEKV_PORT=7100", "CLONEKV_BIND=127.0.0.1"},
			settings{bind: "127.0.0.1", port: 7200, hugz: 5 * time.Second, config: "a.toml"},
			map[string]string{"port": "flag --port", "bind": "env CLONEKV_BIND", "pprof": "flag --pprof"}},
		{"config file from env", nil, []string{"CLONEKV_CONFIG=b.toml"},
			settings{bind: "*", port: 8000, hugz: time.Second, config: "b.toml"},
			map[string]string{"port": "file b.toml", "config": "env CLONEKV_CONFIG"}},
		{"config flag over config env", []string{"--config", "b.toml"}, []string{"CLONEKV_CONFIG=a.toml"},
			settings{bind: "*", port: 8000, hugz: time.Second, config: "b.toml"},
			map[string]string{"port": "file b.toml", "bind": "default"}},
		{"another command's variable is ignored", nil, []string{"CLONEKV_SERVER=tcp://x:1"},
			settings{bind: "*", port: 5556, hugz: time.Second},
			map[string]string{"bind": "default"}},
		{"dashes are underscores in env", nil, []string{"CLONEKV_KEY_FILE=/k"},
			settings{bind: "*", port: 5556, hugz: time.Second, file: "/k"},
			map[string]string{"key-file": "env CLONEKV_KEY_FILE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s settings
			eff, err := testLoader(files).Load(newFlags(&s), tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if s != tc.want {
				t.Errorf("got %+v, want %+v", s, tc.want)
			}
			for k, want := range tc.origins {
				if got := eff.Origins[k].String(); got != want {
					t.Errorf("origin of %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestLoadErrors: every error names the key (and the file or variable).
func TestLoadErrors(t *testing.T) {
	files := map[string]string{
		"unknown.toml":  "bind = \"x\"\nprot = 1\n",
		"table.toml":    "[server]\nport = 1\n",
		"badint.toml":   "port = \"many\"\n",
		"float.toml":    "port = 1.5\n",
		"array.toml":    "bind = [\"a\"]\n",
		"dur.toml":      "hugz = 5\n",
		"meta.toml":     "print-config = true\n",
		"nested.toml":   "config = \"other.toml\"\n",
		"syntax.toml":   "port = \n",
		"twoerrs.toml":  "prot = 1\nbnid = 2\n",
		"goodport.toml": "port = 1\n",
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"unknown file key", []string{"--config", "unknown.toml"}, nil, []string{`config file unknown.toml: unknown key "prot"`}},
		{"table is unknown", []string{"--config", "table.toml"}, nil, []string{`unknown key "server"`}},
		{"bad int in file", []string{"--config", "badint.toml"}, nil, []string{`badint.toml: key "port" = many: parse error`}},
		{"float in file", []string{"--config", "float.toml"}, nil, []string{`key "port": 1.5: want an integer, a string or a boolean`}},
		{"array in file", []string{"--config", "array.toml"}, nil, []string{`key "bind": a []interface {}`}},
		{"duration without unit", []string{"--config", "dur.toml"}, nil, []string{`key "hugz" = 5: parse error (want a duration such as "1s" or "250ms")`}},
		{"meta flag in file", []string{"--config", "meta.toml"}, nil, []string{`key "print-config" is only a command-line flag`}},
		{"config in file", []string{"--config", "nested.toml"}, nil, []string{`key "config" is only a command-line flag`}},
		{"toml syntax", []string{"--config", "syntax.toml"}, nil, []string{"config file syntax.toml:", "line 1"}},
		{"all unknown keys", []string{"--config", "twoerrs.toml"}, nil, []string{`"prot"`, `"bnid"`}},
		{"missing file", []string{"--config", "nope.toml"}, nil, []string{"config file: file does not exist"}},
		{"unknown env", nil, []string{"CLONEKV_PROT=1"}, []string{`environment variable CLONEKV_PROT: unknown setting "prot"`}},
		{"meta env", nil, []string{"CLONEKV_PRINT_CONFIG=1"}, []string{"CLONEKV_PRINT_CONFIG: --print-config is only a command-line flag"}},
		{"bad env int", nil, []string{"CLONEKV_PORT=abc"}, []string{`CLONEKV_PORT="abc": parse error (want an integer)`}},
		{"bad env duration", nil, []string{"CLONEKV_HUGZ=soon"}, []string{`CLONEKV_HUGZ="soon": parse error`}},
		{"bad env bool", nil, []string{"CLONEKV_PPROF=maybe"}, []string{`CLONEKV_PPROF="maybe": parse error (want true or false)`}},
		{"env error wins over a good file", []string{"--config", "goodport.toml"}, []string{"CLONEKV_PORT=x"}, []string{"CLONEKV_PORT"}},
		{"stray argument", []string{"extra"}, nil, []string{`unexpected arguments ["extra"]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s settings
			_, err := testLoader(files).Load(newFlags(&s), tc.args, tc.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	var s settings
	_, err := testLoader(nil).Load(newFlags(&s), []string{"--port", "x"}, nil)
	if !errors.Is(err, ErrFlags) {
		t.Errorf("bad flag: %v, want ErrFlags", err)
	}
}

// TestPrintRoundTrip: the printed configuration, loaded as a file, gives
// the same settings; it says where each value came from.
func TestPrintRoundTrip(t *testing.T) {
	var s settings
	eff, err := testLoader(nil).Load(newFlags(&s), []string{"--bind", `we"ird\`, "--pprof"}, []string{"CLONEKV_HUGZ=1m30s", "CLONEKV_PORT=6000"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := eff.Print(&out); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"port = 6000", "# env CLONEKV_PORT", `hugz = "1m30s"`, `bind = "we\"ird\\"`, "pprof = true", "# flag --pprof", "# default"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("printed config lacks %q:\n%s", w, out.String())
		}
	}
	if strings.Contains(out.String(), "print-config") || strings.Contains(out.String(), "config =") {
		t.Errorf("printed config has command-line-only flags:\n%s", out.String())
	}
	var back settings
	if _, err := testLoader(map[string]string{"p.toml": out.String()}).Load(newFlags(&back), []string{"--config", "p.toml"}, nil); err != nil {
		t.Fatalf("loading the printed config: %v\n%s", err, out.String())
	}
	back.config = ""
	if back != s {
		t.Errorf("round trip: %+v, want %+v", back, s)
	}
}

func TestInvalidNamesKeyAndOrigin(t *testing.T) {
	var s settings
	eff, err := testLoader(nil).Load(newFlags(&s), nil, []string{"CLONEKV_PORT=70000"})
	if err != nil {
		t.Fatal(err)
	}
	got := eff.Invalid("port", errors.New("out of range")).Error()
	if want := "port = 70000 (from env CLONEKV_PORT): out of range"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	server, err := WriteKeyPair(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteKeyPair(dir, "server"); err == nil {
		t.Error("WriteKeyPair overwrote an existing key")
	}
	kp, err := ReadSecretKeyFile(filepath.Join(dir, "server.key"))
	if err != nil || kp != server {
		t.Fatalf("ReadSecretKeyFile: %+v %v, want %+v", kp, err, server)
	}
	if pub, err := ReadPublicKeyFile(filepath.Join(dir, "server.pub")); err != nil || pub != server.Public {
		t.Fatalf("ReadPublicKeyFile: %q %v", pub, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "server.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v", fi.Mode().Perm())
	}

	allow := t.TempDir()
	var want []string
	for _, n := range []string{"a", "b"} {
		kp, err := WriteKeyPair(dir, n)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, kp.Public)
		data, _ := os.ReadFile(filepath.Join(dir, n+".pub"))
		os.WriteFile(filepath.Join(allow, n+".pub"), data, 0o644)
	}
	os.WriteFile(filepath.Join(allow, ".hidden"), []byte("junk"), 0o644)
	keys, err := ReadAllowDir(allow)
	if err != nil || len(keys) != 2 || !((keys[0] == want[0] && keys[1] == want[1]) || (keys[0] == want[1] && keys[1] == want[0])) {
		t.Fatalf("ReadAllowDir: %v %v, want %v", keys, err, want)
	}

	// Errors.
	open := filepath.Join(dir, "open.key")
	data, _ := os.ReadFile(filepath.Join(dir, "server.key"))
	os.WriteFile(open, data, 0o644)
	mismatch := filepath.Join(dir, "mismatch.key")
	os.WriteFile(mismatch, []byte(strings.Replace(string(data), server.Public, want[0], 1)), 0o600)
	pubOnly := filepath.Join(dir, "pubonly.key")
	os.WriteFile(pubOnly, []byte("curve\n    public-key = \""+server.Public+"\"\n"), 0o600)
	withSecret := t.TempDir()
	os.WriteFile(filepath.Join(withSecret, "x.key"), data, 0o600)
	junk := t.TempDir()
	os.WriteFile(filepath.Join(junk, "x.pub"), []byte("hello\n"), 0o644)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"missing", func() error { _, err := ReadSecretKeyFile(filepath.Join(dir, "none")); return err }(), "no such file"},
		{"readable by others", func() error { _, err := ReadSecretKeyFile(open); return err }(), "mode 0644 lets others read it; chmod 600"},
		{"keys do not match", func() error { _, err := ReadSecretKeyFile(mismatch); return err }(), "public-key does not match secret-key"},
		{"no secret", func() error { _, err := ReadSecretKeyFile(pubOnly); return err }(), "no secret-key line"},
		{"secret in allow dir", func() error { _, err := ReadAllowDir(withSecret); return err }(), "holds a secret key"},
		{"junk in allow dir", func() error { _, err := ReadAllowDir(junk); return err }(), "no public-key line"},
		{"empty allow dir", func() error { _, err := ReadAllowDir(t.TempDir()); return err }(), "every client would be refused"},
		{"no allow dir", func() error { _, err := ReadAllowDir(filepath.Join(dir, "none")); return err }(), "no such file"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, tc.err, tc.want)
		}
	}
}
