"""Point the book at another GitHub repository (a fork) or branch or tag: buttons and installs.

`make fork REPO=https://github.com/you/your-fork [BRANCH=...]` and `make pin REF=v0.1.0` run
this. `_config.yml`'s `repository.url` and `repository.branch` are the one place that sets the
repository and the branch or tag; this tool rewrites
  - `repository.url` (and with `--branch`, `repository.branch`) in `_config.yml`, keeping the
    file's comments;
  - the Colab install cell of every notebook under `book/`
    (`%pip install ... "mmoe-annotated @ git+<url>@<branch>"`), whatever it held before, and
    the install lines shown in README.md and CONTRIBUTING.md;
  - any other mention of the old URL, and direct Colab links to the old repository and branch,
    in the notebooks, `book/*.md`, README.md, CONTRIBUTING.md;
  - the Colab notebooks (`make colab`), and a student edition in `student/` if there is one
    (written again for the same student repository).
It then re-reads everything and fails unless every install cell equals `<url>@<branch>`.
"""

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import yaml

GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")
INSTALL = re.compile(r"(mmoe-annotated\s*@\s*git\+)([^\"'\s#@]+)(?:@([^\"'\s#]+))?")
REF = re.compile(r"^(?!.*\.\.)(?!/)[A-Za-z0-9._/-]+(?<![/.])$")
TEXT_FILES = ("README.md", "CONTRIBUTING.md")


class RepointError(ValueError):
    pass


def normalise(url):
    """The canonical https://github.com/OWNER/NAME form, or RepointError."""
    m = GITHUB.match(url.strip())
    if not m:
        raise RepointError(f"REPO must look like https://github.com/OWNER/NAME (Colab opens "
                           f"notebooks from GitHub only); got {url!r}")
    return f"https://github.com/{m.group(1)}/{m.group(2)}"


def set_repository_key(text, key, value):
    """Rewrite `key:` inside the top-level `repository:` block of _config.yml text."""
    lines = text.splitlines(keepends=True)
    inside = False
    for i, line in enumerate(lines):
        if re.match(r"^repository:\s*(#.*)?$", line):
            inside = True
            continue
        if inside and line.strip() and not line[0].isspace():
            break
        m = re.match(rf"^(\s+{key}:[ \t]*)(\S+?)([ \t]*(#.*)?)$", line.rstrip("\n"))
        if inside and m:
            lines[i] = m.group(1) + value + m.group(3) + "\n"
            return "".join(lines)
    raise RepointError(f"_config.yml has no repository.{key} to rewrite")


def replace_url(text, old, new, old_branch=None, new_branch=None):
    """Every mention of `old` (not as a prefix of a longer name) becomes `new`, and so does
    every direct Colab link to it (colab.research.google.com/github/OWNER/NAME/blob/BRANCH/)."""
    if not old:
        return text
    text = re.sub(re.escape(old) + r"(?![\w.-])", new, text)
    old_path, new_path = urlsplit(old).path.strip("/"), urlsplit(new).path.strip("/")
    def colab(m):
        branch = new_branch if new_branch and m.group(2) == old_branch else m.group(2)
        return f"{m.group(1)}{new_path}/blob/{branch}/"
    return re.sub(r"(colab\.research\.google\.com/github/)" + re.escape(old_path)
                  + r"/blob/([^/\s]+)/", colab, text)


def install_urls(nb):
    """Every install target of the notebook's code cells, as "<url>@<ref>" (or "<url>")."""
    return [m.group(2) + (f"@{m.group(3)}" if m.group(3) else "")
            for c in nb.cells if c.cell_type == "code" for m in INSTALL.finditer(c.source)]


def repoint(root, repo=None, branch=None):
    """Rewrite the book at `root` to `repo` (None: keep the URL) and `branch` (None: keep);
    returns (old url, new url, files changed)."""
    root = Path(root)
    config_path = root / "_config.yml"
    config_text = config_path.read_text()
    repo_cfg = yaml.safe_load(config_text).get("repository", {})
    old = str(repo_cfg.get("url", "")).rstrip("/")
    old_branch = str(repo_cfg.get("branch", "main"))
    new = normalise(repo if repo else old)
    if branch is not None and not REF.match(branch):
        raise RepointError(f"BRANCH must be a git branch or tag name such as main or v0.1.0; "
                           f"got {branch!r}")
    ref = branch or old_branch
    target = f"{new}@{ref}"
    changed = []

    text = set_repository_key(config_text, "url", new)
    if branch:
        text = set_repository_key(text, "branch", branch)
    if text != config_text:
        config_path.write_text(text)
        changed.append(config_path)

    notebooks = sorted((root / "book").rglob("*.ipynb"))
    for path in notebooks:
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = nbformat.read(path, as_version=4)
        before = [c.source for c in nb.cells]
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = INSTALL.sub(lambda m: m.group(1) + target, cell.source)
            cell.source = replace_url(cell.source, old, new, old_branch, branch)
        if [c.source for c in nb.cells] != before:
            nbformat.write(nb, path)
            changed.append(path)

    for path in [root / f for f in TEXT_FILES] + sorted((root / "book").rglob("*.md")):
        if path.is_file():
            before = path.read_text()
            after = replace_url(before, old, new, old_branch, branch)
            after = INSTALL.sub(lambda m: m.group(1) + target, after)
            if after != before:
                path.write_text(after)
                changed.append(path)

    # Verify from scratch: the config and every install cell now agree.
    got = str(yaml.safe_load(config_path.read_text())["repository"]["url"])
    if got != new:
        raise RepointError(f"_config.yml repository.url is {got!r} after rewriting, not {new!r}")
    for path in notebooks:
        bad = [u for u in install_urls(nbformat.read(path, as_version=4)) if u != target]
        if bad:
            raise RepointError(f"{path}: install cell still points at {bad[0]}, not {target}")
    return old, new, changed


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def refresh_generated(root, student="student"):
    """Write colab/ again, and student/ if `make student` wrote it; returns lines to print."""
    root = Path(root)
    colab = _tool("colab_notebooks")
    written = colab.write(root)
    lines = [f"{len(written)} Colab notebooks written again ({colab.load_settings(root).out}/)"]
    dest = root / student
    if dest.is_dir():
        make_student = _tool("make_student")
        stamp = dest / make_student.STAMP
        if stamp.is_file():
            prev = json.loads(stamp.read_text())
            make_student.write_edition(root, dest, prev.get("student_repo"),
                                       prev.get("student_ref") or "main")
            lines.append(f"{student}/ written again (install cells: "
                         f"{prev.get('student_repo') or 'this repository'})")
        else:
            lines.append(f"WARNING: {student}/ was not written by `make student`; "
                         "it may point at the old repository: run `make student` again")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", nargs="?", help="https://github.com/OWNER/NAME of the fork "
                    "(default: keep repository.url)")
    ap.add_argument("--branch", help="also set repository.branch: the branch or tag the Colab "
                    "buttons open and the install cells install")
    ap.add_argument("--root", default=".", help="the book's root (holds _config.yml)")
    ap.add_argument("--no-refresh", action="store_true", help="do not rewrite colab/ and student/")
    args = ap.parse_args(argv)
    try:
        old, new, changed = repoint(args.root, args.repo, args.branch)
        ref = yaml.safe_load((Path(args.root) / "_config.yml").read_text())["repository"]["branch"]
        print(f"repoint: {old} -> {new} at {ref}; {len(changed)} files changed:")
        for path in changed:
            print(f"  {path}")
        if not args.no_refresh:
            for line in refresh_generated(args.root):
                print(f"repoint: {line}")
    except RepointError as e:
        sys.exit(f"repoint: {e}")
    except Exception as e:  # a generator's own error names the file and cell
        if type(e).__name__ in ("ConversionError", "StudentEditionError"):
            sys.exit(f"repoint: {e}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
