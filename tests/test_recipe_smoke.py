"""The synthetic recipe end to end (prepare -> VQ-VAE -> prior -> evaluate), smoke setting."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vqaudio

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthetic_recipe_smoke(tmp_path):
    env = {**os.environ, "DATA": str(tmp_path / "data"), "RUN": str(tmp_path / "run"),
           "VQAUDIO": f"{sys.executable} -m vqaudio", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "recipes/synthetic/run.sh"), "smoke"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    model = vqaudio.load_model(tmp_path / "run" / "vqvae" / "model")
    assert model.prior is not None and len(model.speakers) >= 2
    assert (tmp_path / "run" / "eval" / "metrics.json").exists()
