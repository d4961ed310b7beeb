package bench

import (
	"fmt"
	"strconv"
	"time"
)

// Dur is a duration that JSON-encodes as seconds (a float).
type Dur time.Duration

// MarshalJSON encodes d in seconds.
func (d Dur) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'g', 6, 64), nil
}

// String prints d with about three significant digits.
func (d Dur) String() string { return fmtDur(time.Duration(d)) }

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// si prints a rate or count with a k/M suffix and three significant digits.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// sizeName prints a body size: "16 B", "1 KiB".
func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// bytesName prints a memory size in MiB.
func bytesName(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
