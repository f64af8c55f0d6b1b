"""Every shell command in the docs runs as written: README.md, FIGURES.md, docs/*.md (fenced bash blocks and inline
`snakemake ...` spans) and config.yaml's comments. Each command is classified by the first matching rule below:
Snakemake commands are dry-run (`-n`) as written in a scratch copy of the repository, other cheap commands run
there, and the rest name the test or CI step that runs them. A command no rule matches fails the test, so a new
documented command needs a decision here."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

DOCS = ["README.md", "FIGURES.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]

# (pattern on the command, action, why); first match wins.
RULES = [
    (r"^git clone ", "covered", "a clone of this repository: CI starts from one"),
    (r"pip install -e \.(\s|$).*snakemake", "covered", ".ci/run step 4: README install line + tiny workflow"),
    (r"pip install -e \"\.\[test\]\" && python -m pytest", "covered", ".ci/run step 3 runs it verbatim"),
    (r"^python3 -m venv \.venv && \. \.venv/bin/activate && pip install -e \.$", "covered", ".ci/run step 4"),
    (r"^python -m pytest", "covered", "CI runs the whole suite"),
    (r"^python -m benchmarks", "covered", "tests/test_benchmarks.py runs --quick; .ci/run step 4 one module"),
    (r"^snakemake --report ", "covered", "tests/test_report.py and .ci/run step 4 (needs a finished workflow)"),
    (r"^python tests/cluster/slurm_cluster\.py ", "covered", "tests/test_slurm.py brings the cluster up and down"),
    (r"^export SLURM_CONF=|^sinfo", "covered", "needs the SLURM cluster of tests/test_slurm.py"),
    (r"^snakemake .*--dag", "run", "prints the DAG, runs nothing"),
    (r"^snakemake ", "dry-run", "Snakemake's own dry run: parses, validates the config, plans the jobs"),
    (r"^cp -r profiles/slurm profiles/mycluster$", "run", "the cluster guide's copy of the profile"),
]

PLACEHOLDERS = {  # documented example paths -> files the test provides
    "/data/cifar-10-python.tar.gz": "archive",
    "/path/cifar-10-python.tar.gz": "archive",
    "/data/mobilenet_v2.pth": "weights",
    "/path/mobilenet_v2.pth": "weights",
}


def fenced_commands(text: str) -> list[tuple[int, str]]:
    out, in_block, pending, start = [], False, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block and line.strip() in ("```bash", "```sh", "```shell", "```console")
            continue
        if not in_block or not line.strip():
            continue
        start = start or n
        pending += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            out.append((start, strip_comment(pending.strip())))
            pending, start = "", 0
    return out


def strip_comment(command: str) -> str:
    """The command without a trailing `# comment` (a # outside quotes preceded by whitespace)."""
    quote, out = None, []
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for name in DOCS:
        text = (REPO / name).read_text()
        found += [(f"{name}:{n}", cmd) for n, cmd in fenced_commands(text)]
        for m in re.finditer(r"`(snakemake [^`]+)`", text):
            found.append((f"{name}:{text[: m.start()].count(chr(10)) + 1}", m.group(1)))
    config = (REPO / "config.yaml").read_text().splitlines()
    for n, line in enumerate(config, 1):
        if m := re.match(r"^#\s+(snakemake .*)$", line):
            found.append((f"config.yaml:{n}", strip_comment(m.group(1))))
        for m in re.finditer(r"\((snakemake [^)]+)\)", line if line.lstrip().startswith("#") else ""):
            found.append((f"config.yaml:{n}", m.group(1)))
    return found


def classify(command: str) -> tuple[str, str]:
    for pattern, action, why in RULES:
        if re.search(pattern, command):
            return action, why
    raise AssertionError(f"no rule in tests/test_docs.py for the documented command: {command}")


COMMANDS = documented_commands()


def test_the_docs_have_commands_and_each_is_classified():
    assert len(COMMANDS) >= 15
    for _where, command in COMMANDS:
        classify(command)  # raises for a command nobody decided about


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, synthetic_archive):
    """A copy of the repository's files (no results), plus the files the documented example paths point at."""
    root = tmp_path_factory.mktemp("docs") / "normscape"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, root / f)
    weights = root.parent / "mobilenet_v2.pth"
    weights.write_bytes(b"placeholder: a dry run never loads it")
    return root, {"archive": synthetic_archive, "weights": weights}


def concrete(command: str, files: dict) -> str:
    for path, kind in PLACEHOLDERS.items():
        command = command.replace(path, str(files[kind]))
    sha = hashlib.sha256(Path(files["archive"]).read_bytes()).hexdigest()
    wsha = hashlib.sha256(Path(files["weights"]).read_bytes()).hexdigest()
    command = command.replace("<sha256 of that file>", sha).replace("<sha256>", wsha)
    return command.replace("results/figures/<name>.pdf", "results/figures/fig4_convergence_accuracy.pdf")


@pytest.mark.parametrize(
    "where,command", [c for c in COMMANDS if classify(c[1])[0] in ("run", "dry-run")], ids=lambda v: v
)
def test_documented_command_runs(where, command, scratch):
    root, files = scratch
    action, _ = classify(command)
    cmd = concrete(command, files)
    if action == "dry-run":
        cmd += " -n"
    if "| dot " in cmd and shutil.which("dot") is None:
        pytest.skip("graphviz `dot` not installed (.ci/run installs it)")
    if action == "dry-run" and "profiles/mycluster" in cmd and not (root / "profiles/mycluster").exists():
        shutil.copytree(root / "profiles/slurm", root / "profiles/mycluster")  # the guide's earlier step
    # `snakemake` as the interpreter's module: the one this test suite runs with
    cmd = re.sub(r"(^|\|\s*|&&\s*)snakemake ", rf"\1{shlex.quote(sys.executable)} -m snakemake ", cmd)
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {cmd}"], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{where}: {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if action == "dry-run":
        assert "Traceback" not in proc.stderr
    if "> dag.pdf" in cmd:
        assert (root / "dag.pdf").read_bytes()[:4] == b"%PDF"
