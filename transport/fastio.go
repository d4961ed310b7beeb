package transport

/*
#cgo pkg-config: libzmq
#include <zmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

// ckv_send_msgs sends nmsgs messages of per_msg frames each, laid out back
// to back in buf with their sizes in sizes, each preceded by the prefix
// frame when prefix_len >= 0 (a ROUTER's peer identity). It stops early,
// returning the number of whole messages sent, when the first frame of a
// message fails (EAGAIN: the peer's queue is full); *err is then the errno.
// A failure after the first frame of a message is reported the same way,
// but libzmq never fails there for the socket types we use (it checks the
// high-water mark on a message's first frame only).
static int ckv_send_msgs(void *sock, const char *buf, const size_t *sizes,
                         int nmsgs, int per_msg, const char *prefix,
                         long prefix_len, int flags, int *err) {
    size_t off = 0;
    int f = 0;
    *err = 0;
    for (int m = 0; m < nmsgs; m++) {
        size_t msg_off = off;
        int msg_f = f;
        // EINTR (a signal, e.g. Go's preemption SIGURG, interrupted
        // libzmq's command processing) is retried, as pebbe/zmq4 does:
        // reported, it would look like a failed peer.
        int rc;
        if (prefix_len >= 0) {
            do {
                rc = zmq_send(sock, prefix, (size_t)prefix_len, flags | ZMQ_SNDMORE);
            } while (rc < 0 && errno == EINTR);
            if (rc < 0) {
                *err = errno;
                return m;
            }
        }
        for (int i = 0; i < per_msg; i++, f++) {
            int fl = flags | (i < per_msg - 1 ? ZMQ_SNDMORE : 0);
            do {
                rc = zmq_send(sock, buf + off, sizes[f], fl);
            } while (rc < 0 && errno == EINTR);
            if (rc < 0) {
                *err = errno;
                (void)msg_off; (void)msg_f;
                return m;
            }
            off += sizes[f];
        }
    }
    return nmsgs;
}

// ckv_recv_msg receives one message. Frame i (i < maxf) is copied into buf
// at the running offset when it fits in cap, else into a malloc'd block
// stored in big[i] (the caller frees it); sizes[i] is its size. Frames past
// maxf are received and discarded. Returns the message's frame count, or -1
// with *err set when nothing could be received (EAGAIN with ZMQ_DONTWAIT).
static int ckv_recv_msg(void *sock, int flags, char *buf, size_t cap,
                        size_t *used, size_t *sizes, uintptr_t *big, int maxf,
                        int *err) {
    zmq_msg_t msg;
    int n = 0;
    size_t off = 0;
    *err = 0;
    for (;;) {
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, flags) < 0) {
            *err = errno;
            zmq_msg_close(&msg);
            if (*err == EINTR) {
                // Interrupted by a signal before a frame arrived: try
                // again rather than cut a message in two.
                continue;
            }
            if (n == 0) {
                return -1;
            }
            break;
        }
        size_t sz = zmq_msg_size(&msg);
        if (n < maxf) {
            sizes[n] = sz;
            big[n] = 0;
            if (sz <= cap - off) {
                memcpy(buf + off, zmq_msg_data(&msg), sz);
                off += sz;
            } else {
                void *p = malloc(sz ? sz : 1);
                if (p == NULL) {
                    *err = ENOMEM;
                    zmq_msg_close(&msg);
                    return -1;
                }
                memcpy(p, zmq_msg_data(&msg), sz);
                big[n] = (uintptr_t)p;
            }
        }
        n++;
        int more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        if (!more) {
            break;
        }
        flags &= ~ZMQ_DONTWAIT;
    }
    *used = off;
    return n;
}

// ckv_take copies a block ckv_recv_msg malloc'd into dst and frees it.
static void ckv_take(uintptr_t p, char *dst, size_t n) {
    if (n > 0) {
        memcpy(dst, (void *)p, n);
    }
    free((void *)p);
}
*/
import "C"

import (
	"reflect"
	"runtime"
	"syscall"
	"unsafe"

	zmq "github.com/pebbe/zmq4"
)

// The fast paths below send or receive a whole multi-part message (or many)
// in one cgo call instead of pebbe/zmq4's five or six calls per frame: with
// ~30 ns per crossing plus Go's pointer checks, that was most of the CPU of
// a snapshot or a publish. They need the libzmq socket handle that pebbe
// keeps in an unexported field; rawSocket finds it once by reflection and,
// if a future pebbe renames it, Available reports false and callers fall
// back to the portable SendMessage/RecvMessage.

var socField = func() int {
	t := reflect.TypeOf(zmq.Socket{})
	f, ok := t.FieldByName("soc")
	if !ok || f.Type.Kind() != reflect.UnsafePointer {
		return -1
	}
	return int(f.Offset)
}()

// FastIO reports whether the one-call fast paths are usable. Building with
// the tag clonekv_nofastio turns them off, so that the portable fallback is
// tested (make test runs the transport tests that way too).
func FastIO() bool { return socField >= 0 && !forcedFallback }

// rawSocket returns s's libzmq handle. The caller must keep s reachable
// (runtime.KeepAlive) until its cgo call returns: pebbe closes a socket
// it finds unreachable in a finalizer, and the handle alone does not keep
// the Go value alive.
func rawSocket(s *zmq.Socket) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(s), socField))
}

var _ [1]struct{} = [unsafe.Sizeof(C.size_t(0)) / 8]struct{}{} // size_t must be 8 bytes

// Flat is a run of messages laid out flat, which the fast path sends with
// one cgo call: every message has PerMsg frames, whose bytes stand back to
// back in Data and whose sizes are in Sizes. The zero value is empty; Add
// appends a message, and records where it starts so that finding message i
// (Message, SendFlat from i) is O(1). A Flat holds no Go pointers inside
// Data, which is what lets it cross into C whole.
type Flat struct {
	Data   []byte
	Sizes  []uint64
	PerMsg int
	starts []int // byte offset of each message added, in Data
}

// Len returns the number of messages.
func (f *Flat) Len() int {
	if f.PerMsg == 0 {
		return 0
	}
	return len(f.Sizes) / f.PerMsg
}

// Reset empties f, keeping its buffers.
func (f *Flat) Reset() { f.Data, f.Sizes, f.starts = f.Data[:0], f.Sizes[:0], f.starts[:0] }

// Add appends one message; len(frames) must equal PerMsg (set from the
// first message when zero).
func (f *Flat) Add(frames ...[]byte) {
	if f.PerMsg == 0 {
		f.PerMsg = len(frames)
	}
	f.offsetOf(f.Len()) // starts is complete up to here
	f.starts = append(f.starts, len(f.Data))
	for _, fr := range frames {
		f.Data = append(f.Data, fr...)
		f.Sizes = append(f.Sizes, uint64(len(fr)))
	}
}

// Message returns message i's frames (aliasing Data).
func (f *Flat) Message(i int) [][]byte {
	off := f.offsetOf(i)
	out := make([][]byte, f.PerMsg)
	for j := range out {
		s := int(f.Sizes[i*f.PerMsg+j])
		out[j] = f.Data[off : off+s : off+s]
		off += s
	}
	return out
}

// offsetOf returns the byte offset of message i (0 <= i <= Len) in Data:
// O(1) for messages added with Add. Messages whose Sizes were appended
// directly get their offsets computed once, here.
func (f *Flat) offsetOf(i int) int {
	if i < len(f.starts) {
		return f.starts[i]
	}
	n := f.Len()
	if len(f.starts) > n { // Sizes were cut by hand
		f.starts = f.starts[:0]
	}
	for k := len(f.starts); k < n; k++ {
		off := 0
		if k > 0 {
			off = f.starts[k-1]
			for _, s := range f.Sizes[(k-1)*f.PerMsg : k*f.PerMsg] {
				off += int(s)
			}
		}
		f.starts = append(f.starts, off)
	}
	if i < n {
		return f.starts[i]
	}
	return len(f.Data)
}

// SendFlat sends up to max messages of f starting at message from (all the
// rest when max <= 0), each preceded by prefix when prefix is not nil, and
// returns how many it sent. It stops at the first message that cannot be
// sent; err is then that error (EAGAIN when the peer's queue is full under
// zmq.DONTWAIT).
func SendFlat(sock *zmq.Socket, f *Flat, from, max int, prefix []byte, flags zmq.Flag) (int, error) {
	n := f.Len() - from
	if max > 0 && n > max {
		n = max
	}
	if n <= 0 {
		return 0, nil
	}
	if !FastIO() {
		for i := 0; i < n; i++ {
			msg := f.Message(from + i)
			if prefix != nil {
				msg = append([][]byte{prefix}, msg...)
			}
			if err := SendMessage(sock, msg, flags); err != nil {
				return i, err
			}
		}
		return n, nil
	}
	off := f.offsetOf(from)
	var data *C.char
	if off < len(f.Data) {
		data = (*C.char)(unsafe.Pointer(&f.Data[off]))
	} else {
		var zero C.char
		data = &zero
	}
	sizes := (*C.size_t)(unsafe.Pointer(&f.Sizes[from*f.PerMsg]))
	var pfx *C.char
	plen := C.long(-1)
	if prefix != nil {
		plen = C.long(len(prefix))
		if len(prefix) > 0 {
			pfx = (*C.char)(unsafe.Pointer(&prefix[0]))
		}
	}
	var cerr C.int
	sent := int(C.ckv_send_msgs(rawSocket(sock), data, sizes, C.int(n), C.int(f.PerMsg), pfx, plen, C.int(flags), &cerr))
	runtime.KeepAlive(sock)
	if sent < n {
		return sent, zmq.Errno(syscall.Errno(cerr))
	}
	return sent, nil
}

// Receiver receives whole messages with one cgo call each, into a buffer
// it reuses: the frames it returns are valid only until the next Recv.
// Use Clone to keep them.
type Receiver struct {
	sock   *zmq.Socket
	buf    []byte
	sizes  [MaxFrames]uint64
	big    [MaxFrames]uintptr
	frames [][]byte
}

// NewReceiver returns a receiver for sock whose buffer grows up to need.
func NewReceiver(sock *zmq.Socket) *Receiver {
	return &Receiver{sock: sock, buf: make([]byte, 8<<10), frames: make([][]byte, 0, MaxFrames)}
}

// Recv receives one message and returns its frames (at most MaxFrames
// kept) and its real frame count. With zmq.DONTWAIT and nothing waiting it
// returns an EAGAIN error.
func (r *Receiver) Recv(flags zmq.Flag) ([][]byte, int, error) {
	if !FastIO() {
		return RecvMessage(r.sock, flags, r.frames)
	}
	for {
		var used C.size_t
		var cerr C.int
		n := int(C.ckv_recv_msg(rawSocket(r.sock), C.int(flags),
			(*C.char)(unsafe.Pointer(&r.buf[0])), C.size_t(len(r.buf)), &used,
			(*C.size_t)(unsafe.Pointer(&r.sizes[0])), (*C.uintptr_t)(unsafe.Pointer(&r.big[0])),
			C.int(MaxFrames), &cerr))
		runtime.KeepAlive(r.sock)
		if n < 0 {
			err := zmq.Errno(syscall.Errno(cerr))
			if IsInterrupted(err) && flags&zmq.DONTWAIT == 0 {
				continue
			}
			return nil, 0, err
		}
		kept := min(n, MaxFrames)
		r.frames = r.frames[:0]
		off := 0
		grow := 0
		for i := 0; i < kept; i++ {
			s := int(r.sizes[i])
			if p := r.big[i]; p != 0 {
				// Did not fit: copy out of C memory and free it.
				b := make([]byte, s)
				var dst *C.char
				if s > 0 {
					dst = (*C.char)(unsafe.Pointer(&b[0]))
				}
				C.ckv_take(C.uintptr_t(p), dst, C.size_t(s))
				r.frames = append(r.frames, b)
				grow += s
				continue
			}
			r.frames = append(r.frames, r.buf[off:off+s:off+s])
			off += s
		}
		if grow > 0 && len(r.buf) < 16<<20 {
			// Next time, fit messages of this size in the buffer.
			r.buf = make([]byte, min(2*(len(r.buf)+grow), 16<<20))
		}
		return r.frames, n, nil
	}
}

// Clone copies frames into one fresh allocation, so they outlive the
// receiver's buffer.
func Clone(frames [][]byte) [][]byte {
	total := 0
	for _, f := range frames {
		total += len(f)
	}
	data := make([]byte, total)
	out := make([][]byte, len(frames))
	off := 0
	for i, f := range frames {
		n := copy(data[off:], f)
		out[i] = data[off : off+n : off+n]
		off += n
	}
	return out
}
