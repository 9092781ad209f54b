"""Fetch MathJax 3 from the npm registry so the book renders math with no network.

The book's pages load MathJax from `_build/html/_static/_mathjax/tex-mml-chtml.js` by a
relative URL (`sphinx.config.mathjax_path` in `_config.yml`), so math renders from file:// and
from any web server; Sphinx copies `_build/mathjax/` into `_build/html` through
`html_extra_path`. Nothing here is committed: the files come from the
registry package `mathjax` at build time (`make mathjax`, run by `make book`).

We keep only what the combined `tex-mml-chtml` component loads at run time (about 2 MB of
the package's 22 MB):
  - es5/tex-mml-chtml.js                 the TeX + MathML input, CommonHTML output bundle
  - es5/output/chtml/fonts/woff-v2/*     its fonts (looked up next to the script)
  - es5/input/tex/extensions/*           autoloaded TeX packages; without them one
                                         \\boldsymbol leaves every formula on the page raw
"""

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
KEEP_FILES = ("es5/tex-mml-chtml.js", "LICENSE")
KEEP_DIRS = ("es5/output/chtml/fonts/woff-v2/", "es5/input/tex/extensions/")
ENTRY = "tex-mml-chtml.js"


def kept_name(member):
    """Path under the output folder for a tarball member, or None to drop it.

    npm tarballs put everything under `package/`; `es5/` is dropped so that MathJax's
    `[mathjax]` root (the script's folder) holds `output/` and `input/` as it expects.
    """
    name = member.name
    if not member.isfile() or not name.startswith("package/") or ".." in name.split("/"):
        return None
    rel = name[len("package/"):]
    if rel in KEEP_FILES or any(rel.startswith(d) for d in KEEP_DIRS):
        return rel[len("es5/"):] if rel.startswith("es5/") else rel
    return None


def extract(tgz_bytes, dest):
    """Unpack the kept files of an npm tarball into `dest`; returns the number of files."""
    dest = Path(dest)
    count = 0
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tar:
        for member in tar.getmembers():
            rel = kept_name(member)
            if rel is None:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            count += 1
    if not (dest / ENTRY).is_file():
        raise SystemExit(f"fetch_mathjax: the tarball has no es5/{ENTRY}; is it the mathjax package?")
    return count


def ensure_npm():
    """Path to npm; installs Debian's npm when it is missing and we may (root with apt-get)."""
    npm = shutil.which("npm")
    if npm:
        return npm
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("fetch_mathjax: npm not found; installing Debian's npm (apt-get install -y npm)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "npm"], check=True, env=env)
        npm = shutil.which("npm")
    if not npm:
        raise SystemExit("fetch_mathjax: needs npm (Node.js) to fetch mathjax from the npm registry; "
                         "install it, e.g. `apt-get install -y npm`")
    return npm


def npm_pack(version):
    """The bytes of `npm pack mathjax@VERSION` (npm caches it after the first time)."""
    npm = ensure_npm()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", f"mathjax@{version}", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tgz = list(Path(tmp).glob("mathjax-*.tgz"))
        if len(tgz) != 1:
            raise SystemExit(f"fetch_mathjax: npm pack left {len(tgz)} tarballs in {tmp}")
        return tgz[0].read_bytes()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", help="folder to fill, e.g. _build/mathjax/_static/_mathjax")
    p.add_argument("--version", default=VERSION)
    p.add_argument("--force", action="store_true", help="fetch even when dest is complete")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    stamp = dest / ".version"
    if not args.force and stamp.is_file() and stamp.read_text().strip() == args.version \
            and (dest / ENTRY).is_file():
        print(f"fetch_mathjax: MathJax {args.version} already in {dest}")
        return 0
    tgz = npm_pack(args.version)
    # Unpack next to dest, then swap, so an interrupted fetch never leaves half a MathJax.
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    n = extract(tgz, tmp)
    (tmp / ".version").write_text(args.version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"fetch_mathjax: MathJax {args.version}: {n} files, {size / 1e6:.1f} MB in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
