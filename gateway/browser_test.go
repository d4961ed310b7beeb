package gateway_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clonekv/clonekv/internal/testkit"
)

// chromiumPath is Debian's chromium, which make browser-deps installs.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium for the test and returns a tab's
// context. On failure a screenshot of the page is written to the test's
// artifact directory (kept with go test -artifacts).
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("headless browser test skipped: %s is missing (make browser-deps installs Debian's chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root in a container
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		if t.Failed() {
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err == nil {
				path := filepath.Join(t.ArtifactDir(), "inspector.png")
				if err := os.WriteFile(path, png, 0o644); err == nil {
					t.Logf("screenshot of the page: %s", path)
				}
			}
			cancel()
		}
		cancelTab()
		cancelAlloc()
	})
	// The first action starts the browser, whose life is tied to the
	// context of that action: it must be ctx itself, not one with a
	// deadline. The wait is bounded here instead (generous: the machine is
	// shared); cancelling the tab at cleanup ends a start that hangs.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v", chromiumPath, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start within 60s", chromiumPath)
	}
	return ctx
}

// waitJS evaluates the JavaScript condition cond in the page until it is
// true, failing the test after d.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, cond string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](cond))
		cancel()
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > d {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			state, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body.dataset.state||""`))
			rows, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#rows tr")].map(r=>r.dataset.key+"="+r.cells[1].textContent).join(" ")`))
			cancel()
			t.Fatalf("timed out after %v waiting for %s (%s); page state %q, rows %q, err %v", d, what, cond, state, rows, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rowJS is a condition on the row of key (null when absent).
func rowJS(key, cond string) string {
	return fmt.Sprintf(`(() => { const r = [...document.querySelectorAll("#rows tr")].find(r => r.dataset.key === %q); return %s; })()`, key, cond)
}

func buildClonecli(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "clonecli")
	if err := testkit.GoBuild(bin, "github.com/clonekv/clonekv/cmd/clonecli"); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestInspectorInBrowser: the inspector page in headless Chromium shows
// the keys of a prefix, shows a key set by clonecli within a second,
// removes a deleted key, and a set made from its form reaches a clonekv
// client.
func TestInspectorInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	cli := buildClonecli(t)
	r := newRig(t, rigOptions{})
	r.put(t, "/app/a", "alpha")
	r.put(t, "/app/b", "beta")
	r.put(t, "/other/x", "not shown")
	other := r.dial(t, "/app/")

	nctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(r.base+"/ui/?prefix=/app/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 30*time.Second, "the page to sync", `document.body.dataset.state === "synced"`)
	waitJS(t, ctx, 30*time.Second, "the prefix's keys",
		`[...document.querySelectorAll("#rows tr")].map(r => r.dataset.key + "=" + r.cells[1].textContent).join(",") === "/app/a=alpha,/app/b=beta"`)

	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"--server", r.ep, "--timeout", "20s"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("clonecli %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// clonecli set returns once the server published the update; the page
	// shows it within a second of that.
	run("set", "/app/c", "from clonecli")
	took := waitJS(t, ctx, 10*time.Second, "the key set by clonecli", rowJS("/app/c", `!!r && r.cells[1].textContent === "from clonecli"`))
	t.Logf("a key set by clonecli was on the page %v after clonecli returned", took)
	if took > time.Second {
		t.Errorf("the key set by clonecli took %v to show, want at most 1s", took)
	}
	run("set", "/app/a", "changed")
	waitJS(t, ctx, 10*time.Second, "the changed value", rowJS("/app/a", `!!r && r.cells[1].textContent === "changed"`))
	run("del", "/app/b")
	waitJS(t, ctx, 10*time.Second, "the deleted key to vanish", rowJS("/app/b", `!r`))

	// A set from the page's form reaches another clonekv client.
	fctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	if err := chromedp.Do(fctx,
		chromedp.SetValue(chromedp.ID("form-key"), "/app/from-page"),
		chromedp.SetValue(chromedp.ID("form-value"), "typed in the browser"),
		chromedp.Click(chromedp.ID("set")),
	); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, 10*time.Millisecond, "the page's set at a clonekv client", func() bool {
		v, ok := other.Get("/app/from-page")
		return ok && string(v) == "typed in the browser"
	})
	waitJS(t, ctx, 10*time.Second, "the confirmation", `document.getElementById("msg").textContent.startsWith("set /app/from-page at seq ")`)
	waitJS(t, ctx, 10*time.Second, "the page's own key in the table", rowJS("/app/from-page", `!!r`))

	// And a delete from a row's button.
	if _, err := chromedp.Run(fctx, chromedp.Evaluate[bool](rowJS("/app/c", `(r.querySelector("button.row-delete").click(), true)`))); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, 10*time.Millisecond, "the page's delete at a clonekv client", func() bool {
		_, ok := other.Get("/app/c")
		return !ok
	})
	waitJS(t, ctx, 10*time.Second, "the row to vanish", rowJS("/app/c", `!r`))
	// The header: the last sequence (the delete's, the last write of all) and the watchers.
	waitJS(t, ctx, 10*time.Second, "the last sequence", fmt.Sprintf(`document.getElementById("seq").textContent === "%d"`, other.Seq()))
	waitJS(t, ctx, 10*time.Second, "the watcher count", `document.getElementById("watchers").textContent === "1"`)
}
