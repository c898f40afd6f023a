"""Generate the Python gRPC code for every .proto under proto/ (``make proto``).

Generated modules land in ``services/protos/`` and are committed; nobody edits
them by hand. protoc writes imports as ``from contentops.content.v1 import ...``,
which only resolve with ``services/protos`` on ``sys.path``; this script rewrites
them to ``services.protos.contentops...`` so the package imports cleanly.

``python proto/generate.py --check`` regenerates into a temporary folder and exits
non-zero when the committed code differs from what the .proto files produce.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "services" / "protos"
PACKAGE = "services.protos"

_IMPORT = re.compile(r"^(from|import) contentops(\.| )", re.MULTILINE)


def _protos() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in _protos()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        fixed = _IMPORT.sub(lambda m: f"{m.group(1)} {PACKAGE}.contentops{m.group(2)}", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text("")


def _differences(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])

    def walk(c: filecmp.dircmp, prefix: str) -> None:
        diffs.extend(f"only in committed: {prefix}{n}" for n in c.left_only)
        diffs.extend(f"missing: {prefix}{n}" for n in c.right_only)
        for name in c.common_files:
            if (Path(c.left) / name).read_bytes() != (Path(c.right) / name).read_bytes():
                diffs.append(f"differs: {prefix}{name}")
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp, "")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diffs = _differences(OUT, Path(tmp))
        for line in diffs:
            print(line, file=sys.stderr)
        return 1 if diffs else 0
    if OUT.exists():
        shutil.rmtree(OUT)
    generate(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
