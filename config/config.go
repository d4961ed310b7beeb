// Package config gives a command's flags three more sources: environment
// variables, a TOML file, and their defaults, with the precedence
//
//	flag > environment (PREFIX + NAME, e.g. CLONEKV_PUB_HWM) > file > default
//
// The flags stay the one list of settings: a flag "pub-hwm" is the
// variable CLONEKV_PUB_HWM and the file key "pub-hwm". Unknown keys and
// variables, and values a flag does not accept, are errors naming the key
// and where it came from, so a typo stops the start instead of being
// ignored. Effective.Print writes the result as a file Load accepts.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ErrFlags marks errors of the command line itself, which the flag package
// has already reported with the usage.
var ErrFlags = errors.New("bad command line")

// Loader describes how a command reads its settings.
type Loader struct {
	// EnvPrefix starts every variable: "CLONEKV_".
	EnvPrefix string
	// FileFlag names the flag holding the config file path ("config"); it
	// may come from the environment too, not from the file itself.
	FileFlag string
	// Meta are flags that are actions, not settings (print-config,
	// version): only the command line may set them.
	Meta []string
	// IgnoreEnv are variables with the prefix that belong to other
	// commands sharing it (clonecli's CLONEKV_SERVER) and are not errors.
	IgnoreEnv []string
	// ReadFile reads the config file; default os.ReadFile.
	ReadFile func(string) ([]byte, error)
}

// Origin says where a setting's value came from.
type Origin struct {
	Kind string // "default", "file", "env" or "flag"
	Name string // the variable, the file path, or the flag as typed
}

func (o Origin) String() string {
	switch o.Kind {
	case "env":
		return "env " + o.Name
	case "file":
		return "file " + o.Name
	case "flag":
		return "flag --" + o.Name
	}
	return o.Kind
}

// Effective is the configuration after Load: the flag set holds the
// values, Origins where each came from.
type Effective struct {
	FS      *flag.FlagSet
	Origins map[string]Origin
	File    string // the config file read, "" when none
	meta    map[string]bool
	// fileFlag is not printed: a printed config is itself a file.
	fileFlag string
}

// Load parses args into fs and fills every flag not given on the command
// line from environ (os.Environ format), then from the config file.
// Errors from fs.Parse wrap ErrFlags (and flag.ErrHelp for -h); the
// others name the offending key.
func (l Loader) Load(fs *flag.FlagSet, args, environ []string) (*Effective, error) {
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFlags, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	e := &Effective{FS: fs, Origins: map[string]Origin{}, meta: map[string]bool{}, fileFlag: l.FileFlag}
	for _, m := range l.Meta {
		e.meta[m] = true
	}
	fs.VisitAll(func(f *flag.Flag) { e.Origins[f.Name] = Origin{Kind: "default"} })
	fs.Visit(func(f *flag.Flag) { e.Origins[f.Name] = Origin{Kind: "flag", Name: f.Name} })

	env, err := l.environment(fs, environ, e.meta)
	if err != nil {
		return nil, err
	}
	var file map[string]string
	if l.FileFlag != "" {
		path := fs.Lookup(l.FileFlag).Value.String()
		if e.Origins[l.FileFlag].Kind != "flag" {
			if v, ok := env[l.FileFlag]; ok {
				path = v.value
			}
		}
		if path != "" {
			if file, err = l.readFile(fs, path, e.meta); err != nil {
				return nil, err
			}
			e.File = path
		}
	}

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if e.Origins[f.Name].Kind == "flag" {
			return
		}
		if v, ok := env[f.Name]; ok {
			if err := f.Value.Set(v.value); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w%s", v.name, v.value, err, hint(f)))
				return
			}
			e.Origins[f.Name] = Origin{Kind: "env", Name: v.name}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: key %q = %s: %w%s", e.File, f.Name, v, err, hint(f)))
				return
			}
			e.Origins[f.Name] = Origin{Kind: "file", Name: e.File}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return e, nil
}

// hint says what a flag accepts (the flag package's errors only say
// "parse error").
func hint(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return ` (want a duration such as "1s" or "250ms")`
	case int, int64, uint, uint64:
		return " (want an integer)"
	case bool:
		return " (want true or false)"
	}
	return ""
}

type envValue struct{ name, value string }

// environment maps flag names to the variables with the prefix. A variable
// with the prefix that names no setting is an error (a typo would
// otherwise be silently ignored).
func (l Loader) environment(fs *flag.FlagSet, environ []string, meta map[string]bool) (map[string]envValue, error) {
	out := map[string]envValue{}
	if l.EnvPrefix == "" {
		return out, nil
	}
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, l.EnvPrefix) || slices.Contains(l.IgnoreEnv, name) {
			continue
		}
		key := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, l.EnvPrefix)), "_", "-")
		switch {
		case fs.Lookup(key) == nil:
			errs = append(errs, fmt.Errorf("environment variable %s: unknown setting %q", name, key))
		case meta[key]:
			errs = append(errs, fmt.Errorf("environment variable %s: --%s is only a command-line flag", name, key))
		default:
			out[key] = envValue{name, value}
		}
	}
	return out, errors.Join(errs...)
}

// EnvName is the variable for flag name.
func (l Loader) EnvName(name string) string {
	return l.EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// readFile decodes a TOML file of top-level keys into flag-value strings.
func (l Loader) readFile(fs *flag.FlagSet, path string, meta map[string]bool) (map[string]string, error) {
	read := l.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	data, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]string{}
	var errs []error
	for _, k := range keys {
		switch {
		case fs.Lookup(k) == nil:
			errs = append(errs, fmt.Errorf("config file %s: unknown key %q", path, k))
			continue
		case meta[k] || k == l.FileFlag:
			errs = append(errs, fmt.Errorf("config file %s: key %q is only a command-line flag", path, k))
			continue
		}
		s, err := scalar(raw[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("config file %s: key %q: %w", path, k, err))
			continue
		}
		out[k] = s
	}
	return out, errors.Join(errs...)
}

// scalar turns a TOML value into the string a flag.Value parses.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return "", fmt.Errorf("%v: want an integer, a string or a boolean", v)
	default:
		return "", fmt.Errorf("a %T: want an integer, a string or a boolean", v)
	}
}
