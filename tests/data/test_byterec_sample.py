"""The real 200-row ByteRec sample ships inside the package and loads from an installed wheel."""
import hashlib
import subprocess
import sys
from pathlib import Path

import mmoe_annotated as mm

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "mmoe_annotated" / "data" / "sample"
#: SHA-256 of DeepCTR-Torch's examples/byterec_sample.txt, which the package ships unchanged.
DEEPCTR_SAMPLE_SHA256 = "9920dca54adb001029b8e0eaf2cdb733ba255eea9d6598f743dc8d93a7d95e66"


def test_sample_loads_through_the_strict_loader():
    df = mm.load_byterec_sample()
    assert df.shape == (200, len(mm.COLUMNS))
    assert list(df.columns) == list(mm.COLUMNS)
    assert df.attrs["bad_lines"] == []
    assert set(df["finish"].unique()) <= {0, 1} and set(df["like"].unique()) <= {0, 1}
    first = (HERE / "byterec_sample.txt").read_text().splitlines()[0].split("\t")
    assert [str(df[c].iloc[0]) for c in mm.COLUMNS[:11]] == first[:11]


def test_sample_is_the_deepctr_file_with_its_notice():
    notice = (HERE / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "DeepCTR-Torch" in notice
    assert "Apache License" in (HERE / "LICENSE-Apache-2.0.txt").read_text()
    assert hashlib.sha256((HERE / "byterec_sample.txt").read_bytes()).hexdigest() == DEEPCTR_SAMPLE_SHA256


def test_sample_loads_from_an_installed_wheel_in_an_empty_directory(tmp_path):
    wheels, site, empty = tmp_path / "whl", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, cwd=tmp_path)
    wheel = next(wheels.glob("mmoe_annotated-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, cwd=tmp_path)
    code = ("import mmoe_annotated as mm; df = mm.load_byterec_sample(); "
            "print(mm.__file__); print(df.shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True).stdout.split("\n")
    assert out[0].startswith(str(site)), out  # the installed copy, not the repository's
    assert out[1] == "(200, 12)"
    for name in ("NOTICE", "LICENSE-Apache-2.0.txt"):
        assert (site / "mmoe_annotated" / "data" / "sample" / name).exists()
