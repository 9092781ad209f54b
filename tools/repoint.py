"""Point the book at another GitHub repository (a fork): Colab buttons and install cells.

`make fork REPO=https://github.com/you/your-fork` runs this. It rewrites
  - `repository.url` in `_config.yml` (the Colab launch buttons and the repository button
    read it; `--branch` also rewrites `repository.branch`), keeping the file's comments;
  - the Colab install cell of every notebook under `book/`
    (`%pip install ... "mmoe-annotated @ git+<url>"`), whatever URL it held before;
  - any other mention of the old URL, and direct Colab links to the old repository (and, with
    `--branch`, to its old branch), in the notebooks, `book/*.md`, README.md, CONTRIBUTING.md.
It then re-reads everything and fails unless every install cell equals the new `repository.url`.
"""

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import yaml

GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")
INSTALL = re.compile(r"(mmoe-annotated\s*@\s*git\+)([^\"'\s#]+)")
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
    return [m.group(2) for c in nb.cells if c.cell_type == "code"
            for m in INSTALL.finditer(c.source)]


def repoint(root, repo, branch=None):
    """Rewrite the book at `root` to `repo`; returns the list of files changed."""
    root = Path(root)
    new = normalise(repo)
    config_path = root / "_config.yml"
    config_text = config_path.read_text()
    repo_cfg = yaml.safe_load(config_text).get("repository", {})
    old = str(repo_cfg.get("url", "")).rstrip("/")
    old_branch = str(repo_cfg.get("branch", "main"))
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
                cell.source = INSTALL.sub(lambda m: m.group(1) + new, cell.source)
            cell.source = replace_url(cell.source, old, new, old_branch, branch)
        if [c.source for c in nb.cells] != before:
            nbformat.write(nb, path)
            changed.append(path)

    for path in [root / f for f in TEXT_FILES] + sorted((root / "book").rglob("*.md")):
        if path.is_file():
            before = path.read_text()
            after = replace_url(before, old, new, old_branch, branch)
            if after != before:
                path.write_text(after)
                changed.append(path)

    # Verify from scratch: the config and every install cell now agree.
    got = str(yaml.safe_load(config_path.read_text())["repository"]["url"])
    if got != new:
        raise RepointError(f"_config.yml repository.url is {got!r} after rewriting, not {new!r}")
    for path in notebooks:
        bad = [u for u in install_urls(nbformat.read(path, as_version=4)) if u != new]
        if bad:
            raise RepointError(f"{path}: install cell still points at {bad[0]}")
    return old, new, changed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", help="https://github.com/OWNER/NAME of the fork")
    ap.add_argument("--branch", help="also set repository.branch (the Colab buttons' branch)")
    ap.add_argument("--root", default=".", help="the book's root (holds _config.yml)")
    args = ap.parse_args(argv)
    try:
        old, new, changed = repoint(args.root, args.repo, args.branch)
    except RepointError as e:
        sys.exit(f"repoint: {e}")
    print(f"repoint: {old} -> {new}; {len(changed)} files changed:")
    for path in changed:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
