"""Run every H200 capture of issue 13 and, optionally, pack the files for one transfer.

    python3 tests/data/h200_capture/run_all.py --out DIR [--device cuda] [--small]
        [--only runs,optim,...] [--pack PACKDIR]

Runs the captures in SCRIPTS order (each in its own try: one failure does not stop the others),
writes DIR/h200_capture_manifest.json (per script: seconds, error if any; per file: bytes and
SHA-256; versions and device). `--pack PACKDIR` also writes the whole of DIR as one tar split
into parts of at most 15 MB, PACKDIR/h200_capture.tar.partNN; reassemble with
`cat h200_capture.tar.part* | tar -x -C DEST`. `--small` with `--device cpu` is a dry run.
Exit status 1 if any capture failed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import os
import sys
import tarfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SCRIPTS = ["runs", "optim", "clip", "embedding", "gemm"]
PART_BYTES = 15 * 1024 * 1024


def pack(out_dir: str, pack_dir: str) -> list[str]:
    os.makedirs(pack_dir, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(os.listdir(out_dir)):
            tar.add(os.path.join(out_dir, name), arcname=name)
    data, parts = buf.getvalue(), []
    for i in range(0, len(data), PART_BYTES):
        path = os.path.join(pack_dir, f"h200_capture.tar.part{i // PART_BYTES:02d}")
        with open(path, "wb") as f:
            f.write(data[i:i + PART_BYTES])
        parts.append(path)
    print(f"packed {len(data) / 1e6:.1f} MB into {len(parts)} parts under {pack_dir}")
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="small sizes (CPU dry run)")
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset")
    parser.add_argument("--pack", default=None, help="folder for the split tar")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    report, failed, t_all = {}, False, time.time()
    for name in args.only.split(","):
        t0 = time.time()
        print(f"== capture_{name}", flush=True)
        try:
            importlib.import_module(f"capture_{name}").capture(args.out, args.device, args.small)
            report[name] = {"seconds": round(time.time() - t0, 2)}
        except Exception:
            failed = True
            report[name] = {"seconds": round(time.time() - t0, 2),
                            "error": traceback.format_exc()}
            print(report[name]["error"], file=sys.stderr, flush=True)
        print(f"   {report[name]['seconds']} s", flush=True)
    files = {}
    for fname in sorted(os.listdir(args.out)):
        path = os.path.join(args.out, fname)
        if fname.endswith(".npz"):
            with open(path, "rb") as f:
                files[fname] = {"bytes": os.path.getsize(path),
                                "sha256": hashlib.sha256(f.read()).hexdigest()}
    import torch
    from _common import setup_torch

    manifest = {"scripts": report, "files": files, "device": args.device, "small": args.small,
                "setup": setup_torch(args.device), "seconds": round(time.time() - t_all, 2)}
    with open(os.path.join(args.out, "h200_capture_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    total = sum(v["bytes"] for v in files.values())
    print(f"{len(files)} files, {total / 1e6:.1f} MB, {manifest['seconds']} s, torch "
          f"{torch.__version__}; failed: {[k for k, v in report.items() if 'error' in v]}")
    if args.pack:
        pack(args.out, args.pack)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
