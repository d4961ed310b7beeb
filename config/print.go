package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Invalid wraps err, a value the command rejected after Load, with the key
// and where its value came from, e.g.
//
//	port = 70000 (from env CLONEKV_PORT): out of range 0..65533
func (e *Effective) Invalid(name string, err error) error {
	f := e.FS.Lookup(name)
	val := "?"
	if f != nil {
		val = tomlValue(f)
	}
	return fmt.Errorf("%s = %s (from %s): %w", name, val, e.Origins[name], err)
}

// Print writes the effective settings as TOML, one key a line in the flag
// set's order, with where each came from; Load reads the output back.
func (e *Effective) Print(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# effective configuration (precedence: flag > environment > file > default)\n")
	if e.File != "" {
		fmt.Fprintf(&b, "# config file: %s\n", e.File)
	}
	e.FS.VisitAll(func(f *flag.Flag) {
		if e.meta[f.Name] || f.Name == e.fileFlag {
			return
		}
		fmt.Fprintf(&b, "%-28s # %s\n", f.Name+" = "+tomlValue(f), e.Origins[f.Name])
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// tomlValue renders a flag's value as a TOML value: numbers and booleans
// bare, everything else (durations included) as a string.
func tomlValue(f *flag.Flag) string {
	if g, ok := f.Value.(flag.Getter); ok {
		switch v := g.Get().(type) {
		case bool:
			return strconv.FormatBool(v)
		case int, int64, uint, uint64:
			return fmt.Sprint(v)
		case time.Duration:
			return strconv.Quote(v.String())
		}
	}
	return tomlString(f.Value.String())
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
