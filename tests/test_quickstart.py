"""The quickstart in its fast mode (same code path, fewer epochs) runs end to end."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_quickstart_fast(tmp_path):
    env = {**os.environ, "fast": "1", "result_path": str(tmp_path / "out"),
           "table_dir": str(tmp_path / "results"), "data_dir": str(tmp_path / "data" / "decoy_digits"),
           "num_high": "10", "num_low": "3", "noise_draws": "3", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = (tmp_path / "results" / "quickstart.md").read_text()
    for row in ("Original model", "Fine-tune control", "+Channel", "+Space", "+All",
                "+Kernels re-initialised (ours, not in the paper)"):
        assert f"| {row} |" in table
    assert "| random-decoy test top-1 | gradient on background |" in table
    assert "class 9" in table and table in proc.stdout
    exp = tmp_path / "out" / "smallcnn_decoy_digits"
    jsons = list((exp / "labelme").rglob("*.json"))
    masks = list((exp / "masks").rglob("*.png"))
    assert len(jsons) == len(masks) > 0
    assert (exp / "grads" / "heatmap_layer_0.png").stat().st_size > 1000
    assert (exp / "diagnosis" / "overlays_high_low.png").stat().st_size > 1000
    # Fig. 2b has its low-confidence row: sift/low existed when the diagnosis ran
    diagnosis_args = json.loads((exp / "diagnosis" / "runs" / "args.json").read_text())
    assert diagnosis_args["low_path"] == str(exp / "sift" / "low")
    with Image.open(exp / "diagnosis" / "overlays_high_low.png") as figure:
        assert figure.height > 1.5 * 2.6 * 120     # two rows of 2.6 in at 120 dpi, not one
    assert (exp / "diagnosis" / "diagnosis.csv").is_file()
    for variant in ("control", "channel", "space", "all", "kernels_reinit_deep"):
        assert (exp / variant / "models" / "test_final_clean.json").is_file()
    kernels = json.loads((exp / "runs" / "kernels_reinit_deep" / "args.json").read_text())
    assert kernels["kernel_reinit"] is True and kernels["kernel_layers"] == "-1,-2"
    assert kernels["gamma"] == 0.3 and kernels["alpha"] == kernels["beta"] == 0
