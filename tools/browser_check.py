"""Open every page of the built book in headless Chromium and fail on what a reader would see.

For each HTML page of `_build/html` (served by a local http.server on 127.0.0.1, and one page
again from file://) it waits for MathJax to finish and fails the page when it shows
  - raw TeX: `\\(`, `\\[`, `$$`, `\\sum`... in text outside MathJax's rendered containers,
    or a formula MathJax could not render (an error box, or an undefined macro shown in red);
  - a broken image;
  - an error traceback in a cell output (cells tagged `raises-exception` may show one);
  - a broken internal link (missing page, or a missing #anchor on the target page);
  - a failed load of one of its own files, a request that needs the network, a JS error;
  - for a notebook page: no Colab button pointing at this chapter in the configured repository;
  - a figure (`img` in the page's article) without a real alt text: none, empty, or a file name
    (Jupyter Book writes the image's path as its alt when a notebook gives none);
and, at two window widths, a desktop's 1280 and a phone's 390 pixels (WIDTHS),
  - anything that makes the page scroll sideways (the elements that reach past the window);
  - an equation, a table or a figure wider than the column it sits in. Code blocks and cell
    outputs may scroll inside themselves; a table may scroll inside the wrapper the theme puts
    around every table (`.pst-scrollable-table-container`, `overflow-x: auto`), so a table fails
    only where nothing between it and the article scrolls. An equation never may: MathJax 3
    cannot break lines, so a display that does not fit is split into aligned lines in the source,
    and a wide inline formula becomes a display.
It saves screenshots under `_build/screenshots/`: the top of each page and its first formula,
and at both widths each element that SHOTS names (chapter 10's equations, chapter 9's headings).

Chromium is driven over the DevTools protocol through `--remote-debugging-pipe` (file
descriptors 3 and 4, NUL-separated JSON), so it needs nothing beyond the standard library.
"""

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
]
VIEWPORT = (1280, 900)
#: (name, width, height): the layouts every page is checked in. The window is a desktop one at
#: both widths: the theme's CSS lays the page out for a phone's width, and a page wider than the
#: window scrolls sideways instead of being zoomed out as a phone's browser would.
WIDTHS = (("w1280", 1280, 900), ("w390", 390, 844))
#: page -> (name, CSS selector): elements saved one by one at every width, for a reader's eye.
SHOTS = {
    "book/10_beyond_mmoe.html": ("equations", "div.math"),
    "book/09_census.html": ("headings", "article h1, article h2, article h3"),
}
MAX_SHOTS = 40
# Upstream noise a reader never sees: under Jupyter Book 1, sphinx-thebe writes its one-line
# config script twice, and the second `const` fails (thebe, the live-code button, is off here).
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
# Requests the browser makes by itself, not the page.
BROWSER_OWN_PATHS = ("/favicon.ico",)


# ----------------------------------------------------------------------------- the browser

class CDPError(RuntimeError):
    pass


class Browser:
    """A headless Chromium and a DevTools-protocol client over its debugging pipe."""

    def __init__(self, executable, log_path=os.devnull):
        self.user_data_dir = tempfile.mkdtemp(prefix="chromium-profile-")  # fresh every run
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def child_fds():
            # Chromium reads commands on fd 3 and writes replies on fd 4. Duplicate high first,
            # so that placing one pipe end on 3 cannot clobber the other.
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=child_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self._in = os.fdopen(from_chrome_r, "rb", buffering=0)
        self._lock = threading.Lock()
        self._next_id = 0
        self._replies = {}  # id -> [Event, message]
        self._events = {}   # sessionId -> list of event messages
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion", timeout=30)["product"]
        except CDPError:
            self.close()
            raise

    def _read_loop(self):
        buf = b""
        while True:
            try:
                chunk = self._in.read(1 << 16)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg and msg["id"] in self._replies:
                        self._replies[msg["id"]][1] = msg
                    elif "method" in msg:
                        self._events.setdefault(msg.get("sessionId"), []).append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method, session=None, timeout=60, **params):
        with self._lock:
            self._next_id += 1
            mid = self._next_id
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        with self._cond:
            self._replies[mid] = [None, None]
        with self._lock:
            try:
                self._out.write(json.dumps(msg).encode() + b"\0")
            except OSError as e:  # Chromium exited
                raise CDPError(f"{method}: Chromium is gone ({e}; exit code {self.proc.poll()})")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._replies[mid][1] is None:
                left = deadline - time.monotonic()
                if getattr(self, "_closed", False):
                    raise CDPError(f"{method}: Chromium closed its pipe (exit code {self.proc.poll()})")
                if left <= 0:
                    raise CDPError(f"{method}: no reply from Chromium within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)[1]
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def events(self, session):
        """Every event seen so far for a session (the list keeps growing)."""
        with self._cond:
            return list(self._events.get(session, []))

    def wait_event(self, session, method, after=0, timeout=30):
        """The first `method` event of `session` at index >= after; returns (index, event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                evs = self._events.get(session, [])
                for i in range(after, len(evs)):
                    if evs[i]["method"] == method:
                        return i, evs[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"no {method} within {timeout} s")
                self._cond.wait(left)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except CDPError:
            pass
        try:
            self._out.close()  # Chromium exits when its command pipe closes
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        shutil.rmtree(self.user_data_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- page checks

# Runs in the page after its load event: waits for MathJax and images, then reports.
PAGE_JS = r"""
(async () => {
  const out = {mathjax: null, math: 0, rawTex: [], mathErrors: [], brokenImages: [],
               tracebacks: [], links: [], images: 0, title: document.title};
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    out.mathjax = MathJax.version || null;
  }
  if (document.fonts) await document.fonts.ready;
  for (const img of Array.from(document.images)) {
    if (!img.complete) await new Promise(r => {
      img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000); });
    out.images += 1;
    if (!img.naturalWidth) out.brokenImages.push(img.getAttribute('src'));
  }
  out.math = document.querySelectorAll('mjx-container').length;
  for (const e of document.querySelectorAll('mjx-merror'))
    out.mathErrors.push(e.getAttribute('data-mjx-error') || e.textContent);
  // An undefined macro is not an error box: the noundefined package prints its name in red.
  if (window.MathJax && MathJax.startup && MathJax.startup.document && MathJax.startup.toMML) {
    for (const item of MathJax.startup.document.math) {
      if (!item.root) continue;
      const mml = MathJax.startup.toMML(item.root);
      if (/<merror|mathcolor="red"/.test(mml)) out.mathErrors.push(String(item.math).slice(0, 80));
    }
  }
  // Raw TeX: text a reader sees outside rendered math and outside code.
  const skip = 'mjx-container, script, style, pre, code, kbd, samp, textarea, noscript, .highlight';
  const tex = /\\[()\[\]]|\$\$|\\(?:[A-Za-z]{2,}|[,;!{}])|\$[^\s$][^$\n]*[_^{}][^$\n]*\$/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip)) continue;
    const m = n.textContent.match(tex);
    if (m) {
      const s = n.textContent, i = Math.max(0, m.index - 30);
      out.rawTex.push(s.slice(i, m.index + 50).replace(/\s+/g, ' ').trim());
    }
  }
  for (const c of document.querySelectorAll('.cell_output')) {
    if (c.closest('.tag_raises-exception')) continue;
    if (c.querySelector('.traceback') || /Traceback \(most recent call last\)/.test(c.textContent))
      out.tracebacks.push(c.textContent.replace(/\s+/g, ' ').trim().slice(0, 200));
  }
  for (const a of document.querySelectorAll('a[href]')) out.links.push(a.href);
  return out;
})()
"""

# Runs after a layout change (the window's width): what is wider than it may be.
LAYOUT_JS = r"""
(() => {
  const out = {sideways: [], wide: [], width: window.innerWidth,
               pageWidth: document.scrollingElement.scrollWidth};
  const article = document.querySelector('article.bd-article') || document.querySelector('main')
                  || document.body;
  const visible = e => { const s = getComputedStyle(e), r = e.getBoundingClientRect();
    return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0; };
  const name = e => { let n = e.tagName.toLowerCase();
    if (e.id) n += '#' + e.id;
    const c = Array.from(e.classList).slice(0, 2).join('.'); if (c) n += '.' + c;
    const t = (e.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 50);
    return t ? `${n} "${t}"` : n; };
  const scrolls = e => /(auto|scroll)/.test(getComputedStyle(e).overflowX);
  const clips = e => getComputedStyle(e).overflowX !== 'visible';
  // 1. The page scrolls sideways: report the outermost elements that reach past the window.
  if (out.pageWidth > out.width + 1) {
    const reported = [];
    const fixed = e => { for (let a = e; a && a !== document.body; a = a.parentElement)
      if (getComputedStyle(a).position === 'fixed') return true; return false; };
    for (const e of document.body.querySelectorAll('*')) {
      if (reported.some(r => r.contains(e)) || !visible(e) || fixed(e)) continue;
      const r = e.getBoundingClientRect();
      if (r.right <= out.width + 1) continue;
      let clipped = false;
      for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
        if (clips(a) && a.getBoundingClientRect().right <= out.width + 1) { clipped = true; break; }
      if (clipped) continue;
      reported.push(e);
      out.sideways.push(`${name(e)} reaches ${Math.round(r.right)} px`);
      if (out.sideways.length >= 8) break;
    }
  }
  // 2. Equations, tables and figures wider than their column.
  const column = e => {  // the block the element sits in, and its content width
    let c = e.parentElement;
    while (c && c !== document.body) {
      const s = getComputedStyle(c);
      if (!/^inline/.test(s.display) && s.display !== 'contents'
          && !c.matches('div.math, span.math, mjx-container, mjx-container *')) break;
      c = c.parentElement;
    }
    const s = getComputedStyle(c);
    return [c, c.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight)];
  };
  const check = (kind, e, inner) => {
    if (!visible(e)) return;
    const [c, avail] = column(e);
    const w = (inner || e).getBoundingClientRect().width;
    if (w <= avail + 1) return;
    if (kind === 'table') {  // may scroll inside a wrapper below the article
      for (let a = e.parentElement; a && a !== article; a = a.parentElement)
        if (scrolls(a)) return;
    }
    out.wide.push(`${kind} ${Math.round(w)} px wide in a ${Math.round(avail)} px column: ${
      kind === 'equation' ? (e.closest('div.math, span.math') || e).textContent.replace(/\s+/g, ' ').trim().slice(0, 70) || name(e) : name(e)}`);
  };
  for (const m of article.querySelectorAll('mjx-container')) check('equation', m, m.querySelector('mjx-math'));
  for (const t of article.querySelectorAll('table')) check('table', t);
  for (const i of article.querySelectorAll('img, svg:not(mjx-container svg)')) {
    if (i.closest('.cell_output') && i.tagName === 'svg') continue;
    check('figure', i);
  }
  return out;
})()
"""

ALT_JS = r"""
(() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main')
                  || document.body;
  const bad = [];
  for (const img of article.querySelectorAll('img')) {
    const alt = img.getAttribute('alt');
    const src = (img.getAttribute('src') || '').split('/').pop();
    if (alt === null || !alt.trim()) bad.push(`${src} (no alt text)`);
    else if (/\.(png|jpe?g|gif|svg|webp)$/i.test(alt.trim()) || /_images\//.test(alt))
      bad.push(`${src} (alt is a file name)`);
  }
  return bad;
})()
"""

# The n-th element a selector matches, scrolled to the middle of the window: its box in page
# coordinates (what Page.captureScreenshot's clip takes), or null.
SHOT_RECT_JS = r"""
((selector, n) => {
  const e = document.querySelectorAll(selector)[n];
  if (!e) return null;
  e.scrollIntoView({block: 'center'});
  const r = e.getBoundingClientRect();
  if (!r.width || !r.height) return {skip: true};
  const left = Math.max(0, r.left - 8), top = Math.max(0, r.top - 8);
  return {x: left + window.scrollX, y: top + window.scrollY,
          width: Math.min(r.right + 8, window.innerWidth) - left,
          height: Math.min(r.height + 16, window.innerHeight)};
})
"""

FIRST_MATH_JS = r"""
(() => { const m = document.querySelector('div.math mjx-container, mjx-container[display="true"], mjx-container');
  if (!m) return false; m.scrollIntoView({block: 'center'}); return true; })()
"""

REFRESH = re.compile(r'<meta\s+http-equiv="refresh"', re.I)


def book_settings(root):
    """(repository url, branch, path_to_book, colab_url) from the book's _config.yml."""
    import yaml
    cfg = yaml.safe_load((Path(root) / "_config.yml").read_text())
    repo = cfg.get("repository", {})
    url = str(repo.get("url", "")).rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    colab = cfg.get("launch_buttons", {}).get("colab_url", "")
    return url, str(repo.get("branch", "main")), str(repo.get("path_to_book", "") or ""), colab


def colab_link(settings, source_rel):
    """The Colab launch URL sphinx-book-theme writes for a notebook at `source_rel`."""
    url, branch, path_to_book, colab = settings
    owner_repo = urlsplit(url).path.strip("/")
    path = "/".join(p for p in (path_to_book.strip("./"), source_rel) if p)
    return f"{colab.rstrip('/')}/github/{owner_repo}/blob/{branch}/{path}"


class Site:
    """The built HTML tree: which pages exist, and which ids each page holds."""

    def __init__(self, html_dir):
        self.root = Path(html_dir).resolve()

    def pages(self):
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.html")
                      if not any(part.startswith("_") for part in p.relative_to(self.root).parts))

    @functools.lru_cache(maxsize=None)
    def ids(self, rel):
        text = (self.root / rel).read_text(errors="replace")
        return set(re.findall(r'\s(?:id|name)="([^"]*)"', text))

    def local_path(self, url, base):
        """Path under the site for a link, or None when the link leaves the site."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "file"):
            return None
        if parts.scheme == "file":
            path = Path(unquote(parts.path))
            try:
                rel = path.relative_to(self.root).as_posix()
            except ValueError:
                return None
        else:
            if parts.netloc != base:
                return None
            rel = unquote(parts.path).lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        return rel

    def broken_link(self, url, base):
        """A reason string when an internal link is broken, else None."""
        rel = self.local_path(url, base)
        if rel is None:
            return None
        target = self.root / rel
        if not target.is_file():
            return f"{url} (no such file {rel})"
        frag = unquote(urlsplit(url).fragment)
        if frag and target.suffix == ".html" and frag not in self.ids(rel):
            return f"{url} (no #{frag} on {rel})"
        return None


def serve(directory):
    """A quiet http.server on 127.0.0.1 (any free port) in a daemon thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


NEXT_FRAME_JS = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def evaluate(browser, session, expression, awaitPromise=False):
    res = browser.send("Runtime.evaluate", session=session, expression=expression,
                       awaitPromise=awaitPromise, returnByValue=True, timeout=60)
    if "exceptionDetails" in res:
        raise CDPError(f"page script failed: {res['exceptionDetails'].get('text')} "
                       f"{res['exceptionDetails'].get('exception', {}).get('description', '')[:200]}")
    return res["result"].get("value")


def screenshot(browser, session, path):
    browser.send("Runtime.evaluate", session=session, expression=NEXT_FRAME_JS, awaitPromise=True,
                 timeout=20)
    png = browser.send("Page.captureScreenshot", session=session, format="png")["data"]
    path.write_bytes(base64.b64decode(png))


def check_page(browser, site, rel, url, base, shot_dir, shot_name, colab_expected):
    """Open one page and return (problems, facts)."""
    problems = []
    redirects = bool(REFRESH.search((site.root / rel).read_text(errors="replace")[:2000]))
    # A window of its own per page, so every page is visible and paints (a background tab
    # runs no animation frames and may be captured half-drawn).
    target = browser.send("Target.createTarget", url="about:blank", newWindow=True)["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Network", "Runtime"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", session=session, width=VIEWPORT[0],
                     height=VIEWPORT[1], deviceScaleFactor=1, mobile=False)
        start = len(browser.events(session))
        nav = browser.send("Page.navigate", session=session, url=url)
        if nav.get("errorText"):
            return [f"could not open: {nav['errorText']}"], {}
        i, _ = browser.wait_event(session, "Page.loadEventFired", after=start, timeout=60)
        if redirects:  # the book's index.html: check the page it sends the reader to
            browser.wait_event(session, "Page.loadEventFired", after=i + 1, timeout=60)
        res = browser.send("Runtime.evaluate", session=session, expression=PAGE_JS,
                           awaitPromise=True, returnByValue=True, timeout=90)
        if "exceptionDetails" in res:
            return [f"page check script failed: {res['exceptionDetails'].get('text')}"], {}
        facts = res["result"]["value"]
        screenshot(browser, session, shot_dir / f"{shot_name}.png")
        if facts["math"] and browser.send("Runtime.evaluate", session=session,
                                          expression=FIRST_MATH_JS,
                                          returnByValue=True)["result"]["value"]:
            screenshot(browser, session, shot_dir / f"{shot_name}--math.png")
        if not redirects:
            facts["badAlt"] = evaluate(browser, session, ALT_JS)
            facts["layout"] = {}
            for width_name, width, height in WIDTHS:
                browser.send("Emulation.setDeviceMetricsOverride", session=session, width=width,
                             height=height, deviceScaleFactor=1, mobile=False)
                evaluate(browser, session, NEXT_FRAME_JS, awaitPromise=True)
                evaluate(browser, session, NEXT_FRAME_JS, awaitPromise=True)
                facts["layout"][width_name] = evaluate(browser, session, LAYOUT_JS)
                if rel in SHOTS:
                    what, selector = SHOTS[rel]
                    for n in range(MAX_SHOTS):
                        clip = evaluate(browser, session, f"{SHOT_RECT_JS}({json.dumps(selector)}, {n})")
                        if clip is None:
                            break
                        if clip.get("skip"):
                            continue
                        evaluate(browser, session, NEXT_FRAME_JS, awaitPromise=True)
                        png = browser.send("Page.captureScreenshot", session=session, format="png",
                                           clip={**clip, "scale": 1}, timeout=30)["data"]
                        (shot_dir / f"{shot_name}--{width_name}--{what}-{n + 1:02d}.png").write_bytes(
                            base64.b64decode(png))
    finally:
        browser.send("Target.closeTarget", targetId=target)

    problems += [f"raw TeX: ...{t}..." for t in facts["rawTex"][:5]]
    problems += [f"MathJax error (or undefined macro) in: {t}" for t in facts["mathErrors"][:5]]
    problems += [f"broken image: {s}" for s in facts["brokenImages"]]
    problems += [f"traceback in a cell output: {t}" for t in facts["tracebacks"][:3]]
    problems += sorted({r for r in (site.broken_link(u, base) for u in facts["links"]) if r})
    problems += [f"figure without alt text: {b}" for b in facts.get("badAlt", [])]
    for width_name, layout in facts.get("layout", {}).items():
        px = width_name[1:]
        if layout["sideways"] or layout["pageWidth"] > layout["width"] + 1:
            problems.append(f"at {px} px the page scrolls sideways ({layout['pageWidth']} px wide): "
                            + "; ".join(layout["sideways"][:5]))
        problems += [f"at {px} px: {w}" for w in layout["wide"][:10]]
        if len(layout["wide"]) > 10:
            problems.append(f"at {px} px: ... and {len(layout['wide']) - 10} more wider than their column")
    if colab_expected and colab_expected not in facts["links"]:
        problems.append(f"no Colab button (expected a link to {colab_expected})")

    urls = {}
    for ev in browser.events(session):
        m, p = ev["method"], ev.get("params", {})
        if m == "Network.requestWillBeSent":
            urls[p["requestId"]] = u = p["request"]["url"]
            parts = urlsplit(u)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != base:
                problems.append(f"needs the network: {u}")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400 \
                and urlsplit(p["response"]["url"]).path not in BROWSER_OWN_PATHS:
            problems.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"failed to load {urls.get(p['requestId'], '?')}: {p.get('errorText')}")
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            desc = d.get("exception", {}).get("description") or d.get("text")
            desc = str(desc).splitlines()[0]
            if not any(k in desc for k in KNOWN_JS_ERRORS):
                problems.append(f"JavaScript error: {desc}")
    return problems, facts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", default="_build/html", help="the built book")
    ap.add_argument("--root", default=".", help="book root (holds _config.yml and the sources)")
    ap.add_argument("--screenshots", default="_build/screenshots")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--jobs", type=int, default=3, help="pages open at once")
    args = ap.parse_args(argv)

    site = Site(args.html)
    if not (site.root / "index.html").is_file():
        sys.exit(f"browser_check: no {site.root}/index.html; build the book first (make book)")
    if not shutil.which(args.chromium):
        sys.exit(f"browser_check: no Chromium at {args.chromium}; `make chromium` installs it")
    root = Path(args.root)
    settings = book_settings(root)
    shot_dir = Path(args.screenshots)
    shutil.rmtree(shot_dir, ignore_errors=True)
    shot_dir.mkdir(parents=True)

    def colab_for(rel):
        src = Path(rel).with_suffix(".ipynb").as_posix()
        return colab_link(settings, src) if (root / src).is_file() else None

    pages = site.pages()
    server = serve(site.root)
    base = f"127.0.0.1:{server.server_address[1]}"
    try:
        browser = Browser(args.chromium, log_path=shot_dir / "chromium.log")
    except CDPError as e:
        server.shutdown()
        log = (shot_dir / "chromium.log").read_text(errors="replace").strip().splitlines()
        sys.exit(f"browser_check: Chromium did not start ({e}); its log ends:\n"
                 + "\n".join(log[-15:]))
    t0 = time.monotonic()
    results = {}
    try:
        print(f"browser_check: {browser.version}, {len(pages)} pages from http://{base}/")

        def one(rel, url, name):
            t = time.monotonic()
            try:
                probs, facts = check_page(browser, site, rel, url, base, shot_dir, name, colab_for(rel))
            except CDPError as e:
                probs, facts = [f"browser: {e}"], {}
            except OSError as e:  # e.g. the page vanished: a rebuild is writing _build/html
                probs, facts = [f"could not check: {e}"], {}
            expected = colab_for(rel)
            if expected:  # the button must open a notebook this repository holds (make colab)
                opened = expected.split(f"/blob/{settings[1]}/", 1)[1]
                if not (root / opened).is_file():
                    probs = probs + [f"the Colab button opens {opened}, which is not in the "
                                     "repository (run `make colab`)"]
            return probs, facts, time.monotonic() - t

        with ThreadPoolExecutor(args.jobs) as pool:
            futs = {rel: pool.submit(one, rel, f"http://{base}/{rel}", rel[:-5].replace("/", "__"))
                    for rel in pages}
            for rel, fut in futs.items():
                results[rel] = fut.result()
        # The same book from file://, as a reader who opens the HTML directly sees it:
        # the first page with math (all pages share the same MathJax and theme files).
        with_math = [r for r in pages if results[r][1].get("math")]
        rel = with_math[0] if with_math else "index.html"
        key = f"file://{rel}"
        results[key] = one(rel, (site.root / rel).as_uri(), "file--" + rel[:-5].replace("/", "__"))
    finally:
        browser.close()
        server.shutdown()

    failed = 0
    for key, (probs, facts, secs) in results.items():
        status = "FAIL" if probs else "ok  "
        print(f"{status} {key:45s} math={facts.get('math', '?'):<4} images={facts.get('images', '?'):<3}"
              f" links={len(facts.get('links', [])):<4} {secs:4.1f} s")
        for p in probs:
            print(f"       - {p}")
        failed += bool(probs)
    n_math = sum(1 for r in pages if results[r][1].get("math"))
    print(f"browser_check: {len(pages)} pages over HTTP + 1 from file:// in "
          f"{time.monotonic() - t0:.1f} s; {n_math} pages with rendered math; "
          f"screenshots in {shot_dir}/")
    print(f"browser_check: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
