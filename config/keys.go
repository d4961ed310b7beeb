package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// CURVE key files. The format is czmq's certificate format (ZPL), so
// files written by czmq's zcert or by the Guide's examples work too:
//
//	curve
//	    public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//	    secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
//
// A secret file (NAME.key) holds both keys and must not be readable by
// group or others; a public file (NAME.pub) holds only the public key.

// KeyPair is a CURVE key pair in Z85.
type KeyPair struct {
	Public, Secret string
}

var keyLine = regexp.MustCompile(`^\s*(public-key|secret-key)\s*=\s*"([^"]{40})"\s*$`)

func parseKeys(data []byte) (KeyPair, error) {
	var kp KeyPair
	for _, line := range strings.Split(string(data), "\n") {
		m := keyLine.FindStringSubmatch(strings.TrimRight(line, "\r"))
		if m == nil {
			continue
		}
		if len(zmq.Z85decode(m[2])) != 32 {
			return kp, fmt.Errorf("%s is not a Z85 CURVE key", m[1])
		}
		if m[1] == "public-key" {
			kp.Public = m[2]
		} else {
			kp.Secret = m[2]
		}
	}
	return kp, nil
}

// ReadSecretKeyFile reads a key pair written by WriteKeyPair (or czmq). It
// refuses a file others can read, and one whose keys do not match.
func ReadSecretKeyFile(path string) (KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("secret key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return KeyPair{}, fmt.Errorf("secret key file %s: mode %#o lets others read it; chmod 600", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("secret key file: %w", err)
	}
	kp, err := parseKeys(data)
	if err != nil {
		return kp, fmt.Errorf("secret key file %s: %w", path, err)
	}
	if kp.Secret == "" {
		return kp, fmt.Errorf("secret key file %s: no secret-key line", path)
	}
	pub, err := zmq.AuthCurvePublic(kp.Secret)
	if err != nil {
		return kp, fmt.Errorf("secret key file %s: %w", path, err)
	}
	if kp.Public != "" && kp.Public != pub {
		return kp, fmt.Errorf("secret key file %s: public-key does not match secret-key", path)
	}
	kp.Public = pub
	return kp, nil
}

// ReadPublicKeyFile reads the public key of a key file.
func ReadPublicKeyFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("public key file: %w", err)
	}
	kp, err := parseKeys(data)
	if err != nil {
		return "", fmt.Errorf("public key file %s: %w", path, err)
	}
	if kp.Public == "" {
		return "", fmt.Errorf("public key file %s: no public-key line", path)
	}
	return kp.Public, nil
}

// ReadAllowDir reads the public keys of every file in dir (hidden files
// aside): the clients a server admits. A file with a secret key in it, or
// an empty directory (every client would be refused), is an error.
func ReadAllowDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("allowed client keys: %w", err)
	}
	var keys []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("allowed client keys: %w", err)
		}
		kp, err := parseKeys(data)
		switch {
		case err != nil:
			return nil, fmt.Errorf("allowed client key %s: %w", path, err)
		case kp.Secret != "":
			return nil, fmt.Errorf("allowed client key %s holds a secret key: copy only the client's .pub file", path)
		case kp.Public == "":
			return nil, fmt.Errorf("allowed client key %s: no public-key line", path)
		}
		keys = append(keys, kp.Public)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("allowed client keys: no key files in %s (every client would be refused)", dir)
	}
	sort.Strings(keys)
	return keys, nil
}

// WriteKeyPair creates a new key pair as dir/name.key (both keys, mode
// 0600) and dir/name.pub (the public key, mode 0644). It never overwrites.
func WriteKeyPair(dir, name string) (KeyPair, error) {
	pub, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		return KeyPair{}, fmt.Errorf("new curve key pair: %w", err)
	}
	kp := KeyPair{Public: pub, Secret: sec}
	stamp := time.Now().UTC().Format(time.RFC3339)
	header := "#   ****  Generated on " + stamp + " by clonecli keygen  ****\n"
	secPath, pubPath := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := writeNew(secPath, 0o600, header+"#   ZeroMQ CURVE **Secret** Certificate\n#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\nmetadata\ncurve\n"+
		"    public-key = \""+pub+"\"\n    secret-key = \""+sec+"\"\n"); err != nil {
		return kp, err
	}
	if err := writeNew(pubPath, 0o644, header+"#   ZeroMQ CURVE Public Certificate\n#   Exchange securely, or use a secure mechanism to verify the contents\n#   of this file after exchange. Store public certificates in your home\n#   directory, in the .curve subdirectory.\n\nmetadata\ncurve\n"+
		"    public-key = \""+pub+"\"\n"); err != nil {
		return kp, errors.Join(err, os.Remove(secPath))
	}
	return kp, nil
}

func writeNew(path string, mode os.FileMode, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}
