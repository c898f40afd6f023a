"""The committed generated code matches the .proto files, and buf's lint passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run([sys.executable, "proto/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"run `make proto`:\n{result.stderr}"


def test_protos_pass_buf_lint() -> None:
    buf = ROOT / "node_modules" / ".bin" / "buf"
    assert buf.exists(), "buf is installed by `make test` (npm install); run it through make"
    result = subprocess.run([str(buf), "lint"], cwd=ROOT / "proto", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_notices_a_stale_generated_file(tmp_path: Path) -> None:
    # The check itself must be able to fail: compare against a tampered copy.
    sys.path.insert(0, str(ROOT / "proto"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    generate.generate(tmp_path)
    target = tmp_path / "contentops" / "content" / "v1" / "content_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    assert generate._differences(tmp_path, generate.OUT) == ["differs: contentops/content/v1/content_pb2.py"]


def test_every_service_package_is_versioned() -> None:
    packages = {p.parent.relative_to(ROOT / "proto").as_posix() for p in (ROOT / "proto").rglob("*.proto")}
    assert packages == {f"contentops/{s}/v1" for s in ("content", "distribution", "identity", "tracking")}
